from .base import *  # noqa: F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast users in tests
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
