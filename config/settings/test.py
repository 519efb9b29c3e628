from .base import *  # noqa: F401,F403
from .base import env_str

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast users in tests
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

# Nothing in the suite may publish to a shared broker by accident: tests that run a
# real worker start their own redis-server and point the app at it.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "memory://")
