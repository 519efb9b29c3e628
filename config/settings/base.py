"""Settings shared by every environment; everything that varies comes from the environment."""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("CHANGEGATE_VAR_DIR", str(BASE_DIR / "var")))

SECRET_KEY = env_secret("DJANGO_SECRET_KEY", "insecure-dev-key-change-me")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "guardian",
    "changes",
    "approvals",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database() -> dict:
    url = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'changegate.sqlite3'}")
    try:
        config = dj_database_url.parse(url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60))
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {exc}") from None
    if config["ENGINE"] == "django.db.backends.sqlite3":
        Path(config["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        # Row locks do not exist on SQLite; IMMEDIATE transactions take the write lock
        # up front so two writers serialize instead of failing with "database is locked".
        config.setdefault("OPTIONS", {}).update({"transaction_mode": "IMMEDIATE", "timeout": 20})
        config["CONN_MAX_AGE"] = 0
    return config


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user; nothing here is public

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "changes.api.exceptions.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "changegate API",
    "DESCRIPTION": "Four-eyes gate for DNS and firewall changes.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
}

# Celery: Redis is only the wake-up signal; the database is the source of truth.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 600)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 660)
# Must exceed the longest apply + bake, or Redis redelivers a task still running.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
CELERY_TASK_IGNORE_RESULT = True
# Apply pipeline timing (seconds). The lease must outlast the longest step between two
# renewals (one bake round, one UPDATE); a dead worker's change resumes after it.
CHANGEGATE_LEASE_SECONDS = env_int("CHANGEGATE_LEASE_SECONDS", 60)
CHANGEGATE_UNCLAIMED_AFTER_SECONDS = env_int("CHANGEGATE_UNCLAIMED_AFTER_SECONDS", 15)
CHANGEGATE_RETRY_DELAY_SECONDS = env_int("CHANGEGATE_RETRY_DELAY_SECONDS", 2)
# Out-of-band change detection: how often the beat looks for targets whose own
# interval (Target.oob_interval_seconds) is up.
CHANGEGATE_OOB_SWEEP_SECONDS = env_int("CHANGEGATE_OOB_SWEEP_SECONDS", 60)
if CHANGEGATE_OOB_SWEEP_SECONDS < 1:
    raise ImproperlyConfigured("CHANGEGATE_OOB_SWEEP_SECONDS must be a positive number of seconds")
# The sweep re-publishes executions nobody claimed and resumes those whose worker died.
CELERY_BEAT_SCHEDULE = {
    "sweep-executions": {"task": "changes.sweep_executions", "schedule": env_int("CHANGEGATE_SWEEP_SECONDS", 10)},
    # A sweep nobody ran in time is dropped (expires), not piled up behind a stopped worker.
    "check-out-of-band": {"task": "changes.check_out_of_band", "schedule": CHANGEGATE_OOB_SWEEP_SECONDS,
                          "options": {"expires": CHANGEGATE_OOB_SWEEP_SECONDS}},
}

# Audit checkpoints: an Ed25519 private key (PEM or raw 32 bytes) in this file signs
# (seq, head hash, time) every N events; unset = no checkpoints. N = 0 turns the
# automatic ones off (changes.audit.audit_checkpoint_create still works on demand).
CHANGEGATE_AUDIT_SIGNING_KEY_FILE = env_str("CHANGEGATE_AUDIT_SIGNING_KEY_FILE", "")
CHANGEGATE_AUDIT_CHECKPOINT_EVERY = env_int("CHANGEGATE_AUDIT_CHECKPOINT_EVERY", 1000)
if CHANGEGATE_AUDIT_CHECKPOINT_EVERY < 0:
    raise ImproperlyConfigured("CHANGEGATE_AUDIT_CHECKPOINT_EVERY must be 0 (off) or a positive number of events")

# One line per record with the change id (changes.logs.log_context); LOG_JSON=true
# writes one JSON object per line instead. Both redact URL passwords.
LOG_JSON = env_bool("LOG_JSON", False)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"change": {"()": "changes.logs.ChangeContextFilter"}},
    "formatters": {
        "plain": {"()": "changes.logs.PlainFormatter"},
        "json": {"()": "changes.logs.JSONFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json" if LOG_JSON else "plain",
                    "filters": ["change"]},
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
