from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F401,F403
from .base import DATABASES, SECRET_KEY, env_bool

DEBUG = False
if SECRET_KEY.startswith("insecure-"):
    raise ImproperlyConfigured("set DJANGO_SECRET_KEY or DJANGO_SECRET_KEY_FILE in production")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    raise ImproperlyConfigured("production needs PostgreSQL: set DATABASE_URL=postgres://...")
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
