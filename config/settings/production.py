from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F401,F403
from .base import ALLOWED_HOSTS, DATABASES, SECRET_KEY, env_bool, env_int, env_list, env_str

DEBUG = False
if SECRET_KEY.startswith("insecure-"):
    raise ImproperlyConfigured("set DJANGO_SECRET_KEY or DJANGO_SECRET_KEY_FILE in production")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    raise ImproperlyConfigured("production needs PostgreSQL: set DATABASE_URL=postgres://...")
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True

# Behind a TLS-terminating proxy. The proxy must SET (not pass through) this header
# on every request, or a client could claim https itself.
_proxy_header = env_str("DJANGO_SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto")
SECURE_PROXY_SSL_HEADER = (f"HTTP_{_proxy_header.upper().replace('-', '_')}", "https") if _proxy_header else None
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
# One proxy in front by default: its X-Forwarded-For names the client (accounts.client_ip).
CHANGEGATE_TRUSTED_PROXIES = env_int("CHANGEGATE_TRUSTED_PROXIES", 1)
# Probes from the load balancer talk plain HTTP to the backend; they carry no secret.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", True)
# Origins whose POSTs the CSRF check accepts: by default https:// + each allowed host.
CSRF_TRUSTED_ORIGINS = env_list(
    "DJANGO_CSRF_TRUSTED_ORIGINS", [f"https://{host.lstrip('.')}" for host in ALLOWED_HOSTS if host != "*"]
)
SESSION_COOKIE_HTTPONLY = True
