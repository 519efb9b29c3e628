"""Settings shared by every environment; everything that varies comes from the environment."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from accounts.conf import oidc_settings
from config.env import env_bool, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("CHANGEGATE_VAR_DIR", str(BASE_DIR / "var")))

SECRET_KEY = env_secret("DJANGO_SECRET_KEY", "insecure-dev-key-change-me")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "accounts",  # before the admin: its admin/login.html adds the single sign-on link
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI / ReDoc assets served locally, no CDN
    "guardian",
    "axes",
    "changes",
    "approvals",
    # Rooms without models of their own (their tables are in changes.models):
    "audit",
    "pipeline",
    "drift",
    "ops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Names the actor of user/group/permission audit events (audit.identity).
    "audit.identity.RequestActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a login refused by AxesStandaloneBackend into the lockout page.
    "axes.middleware.AxesMiddleware",
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
        # WAL: a commit is one fsync of the log instead of the rollback journal's
        # several (journal, database, directory): 2 ms instead of 8-17 ms on this
        # disk, most of a proposal's database time (issue 14); readers no longer wait
        # for a committing writer. synchronous stays FULL, so a commit is as durable.
        # The mode is stored in the file; setting it again per connection is a no-op.
        config.setdefault("OPTIONS", {}).update({"transaction_mode": "IMMEDIATE", "timeout": 20,
                                                 "init_command": "PRAGMA journal_mode=WAL"})
        config["CONN_MAX_AGE"] = 0
    return config


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    # First: refuses any sign-in while (username, address) is locked out.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user; nothing here is public

# --- Sign-in -------------------------------------------------------------
# OpenID Connect single sign-on (accounts.oidc): on when CHANGEGATE_OIDC_ISSUER,
# CHANGEGATE_OIDC_CLIENT_ID and CHANGEGATE_OIDC_CLIENT_SECRET(_FILE) are set.
# Local accounts keep working beside it (the demo users).
globals().update(oidc_settings())
if CHANGEGATE_OIDC_ENABLED:  # noqa: F821 - set by the line above
    AUTHENTICATION_BACKENDS.append("accounts.oidc.OIDCBackend")
LOGIN_REDIRECT_URL = "/admin/"
LOGIN_REDIRECT_URL_FAILURE = "/admin/login/"
# Approve, break-glass and its review only from a session whose IdP sign-in
# reported multi-factor authentication (ID token amr/acr); never with an API token.
CHANGEGATE_APPROVAL_REQUIRES_MFA = env_bool("CHANGEGATE_APPROVAL_REQUIRES_MFA", False)
if CHANGEGATE_APPROVAL_REQUIRES_MFA and not CHANGEGATE_OIDC_ENABLED:  # noqa: F821
    raise ImproperlyConfigured("CHANGEGATE_APPROVAL_REQUIRES_MFA needs OpenID Connect (CHANGEGATE_OIDC_ISSUER, ...)")

# Reverse proxies in front of the web processes whose X-Forwarded-For is trusted for
# the client address (lockout, token throttling, audit): 0 = use REMOTE_ADDR.
CHANGEGATE_TRUSTED_PROXIES = env_int("CHANGEGATE_TRUSTED_PROXIES", 0)

# Failed password logins (django-axes): locked per (username, client address) after
# N failures in a row, for the cool-off time; a success resets the count.
AXES_FAILURE_LIMIT = env_int("CHANGEGATE_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("CHANGEGATE_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "accounts/lockout.html"
AXES_CLIENT_IP_CALLABLE = "accounts.client_ip.client_address"
if AXES_FAILURE_LIMIT < 1 or AXES_COOLOFF_TIME <= timedelta(0):
    raise ImproperlyConfigured("CHANGEGATE_LOGIN_FAILURE_LIMIT and CHANGEGATE_LOGIN_COOLOFF_MINUTES must be positive")

# Failed API tokens (accounts.authentication): per client address, in Django's cache.
CHANGEGATE_TOKEN_FAILURE_LIMIT = env_int("CHANGEGATE_TOKEN_FAILURE_LIMIT", 10)
CHANGEGATE_TOKEN_FAILURE_WINDOW_SECONDS = env_int("CHANGEGATE_TOKEN_FAILURE_WINDOW_SECONDS", 900)
if CHANGEGATE_TOKEN_FAILURE_LIMIT < 1 or CHANGEGATE_TOKEN_FAILURE_WINDOW_SECONDS < 1:
    raise ImproperlyConfigured("CHANGEGATE_TOKEN_FAILURE_LIMIT and CHANGEGATE_TOKEN_FAILURE_WINDOW_SECONDS must be positive")
# The cache holds those counts: per process unless CHANGEGATE_CACHE_URL names a shared
# redis, which several web processes need for the limit to hold across them.
CHANGEGATE_CACHE_URL = env_str("CHANGEGATE_CACHE_URL", "")
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CHANGEGATE_CACHE_URL}
          if CHANGEGATE_CACHE_URL else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    # 12 characters: PCI DSS 4.0 requirement 8.3.6.
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Sessions of a working day, not Django's two weeks; gone when the browser closes.
SESSION_COOKIE_AGE = env_int("CHANGEGATE_SESSION_HOURS", 8) * 3600
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
if SESSION_COOKIE_AGE < 1:
    raise ImproperlyConfigured("CHANGEGATE_SESSION_HOURS must be a positive number of hours")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ThrottledTokenAuthentication",
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
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Two `state` enums: a change's (the one clients know as StateEnum) and an execution attempt's.
    "ENUM_NAME_OVERRIDES": {"StateEnum": "changes.models.ChangeRequest.State",
                            "ExecutionStateEnum": "changes.models.Execution.State"},
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
# Apply pipeline timing (seconds). A worker renews its lease in the background (pipeline.lease)
# while it works; a dead worker's change resumes once the lease has run out.
CHANGEGATE_LEASE_SECONDS = env_int("CHANGEGATE_LEASE_SECONDS", 60)
# A round of health checks (pipeline.checks.run_round) ends at this deadline whatever its
# checks do, and declared check timeouts may not exceed it (pipeline.check_specs). Shorter than
# the lease, so the renewal after each round comes in time even if the heartbeat
# (pipeline.lease) stalled. Default: half the lease.
CHANGEGATE_CHECK_ROUND_SECONDS = env_int("CHANGEGATE_CHECK_ROUND_SECONDS", max(1, CHANGEGATE_LEASE_SECONDS // 2))
if not 0 < CHANGEGATE_CHECK_ROUND_SECONDS < CHANGEGATE_LEASE_SECONDS:
    raise ImproperlyConfigured("CHANGEGATE_CHECK_ROUND_SECONDS must be positive and shorter than CHANGEGATE_LEASE_SECONDS")
CHANGEGATE_UNCLAIMED_AFTER_SECONDS = env_int("CHANGEGATE_UNCLAIMED_AFTER_SECONDS", 15)
CHANGEGATE_RETRY_DELAY_SECONDS = env_int("CHANGEGATE_RETRY_DELAY_SECONDS", 2)
# A rollback whose server does not answer (TransientError) is retried with backoff
# (CHANGEGATE_RETRY_DELAY_SECONDS doubling, at most 60 s apart) for this long before it is final
# (rollback_failed); a server that answers and refuses makes it final at once.
CHANGEGATE_ROLLBACK_RETRY_SECONDS = env_int("CHANGEGATE_ROLLBACK_RETRY_SECONDS", 300)
if CHANGEGATE_ROLLBACK_RETRY_SECONDS < 0 or CHANGEGATE_RETRY_DELAY_SECONDS < 0:
    raise ImproperlyConfigured("CHANGEGATE_ROLLBACK_RETRY_SECONDS and CHANGEGATE_RETRY_DELAY_SECONDS must not be negative")
# Out-of-band change detection: how often the beat looks for targets whose own
# interval (Target.oob_interval_seconds) is up.
CHANGEGATE_OOB_SWEEP_SECONDS = env_int("CHANGEGATE_OOB_SWEEP_SECONDS", 60)
if CHANGEGATE_OOB_SWEEP_SECONDS < 1:
    raise ImproperlyConfigured("CHANGEGATE_OOB_SWEEP_SECONDS must be a positive number of seconds")
# Change windows (pipeline.windows): a test/ops knob, 0 in production. Shifts the clock
# that decides whether a target's change window is open (pipeline.windows.window_now),
# and nothing else (leases, retries and audit times keep real time), so a test gives a
# real worker a clock a window opens on within seconds instead of sleeping for real minutes,
# and ops can rehearse a window ("what would run at 09:00?") on a staging worker.
CHANGEGATE_CLOCK_OFFSET_SECONDS = env_int("CHANGEGATE_CLOCK_OFFSET_SECONDS", 0)
# The sweep re-publishes executions nobody claimed and resumes those whose worker died.
CELERY_BEAT_SCHEDULE = {
    "sweep-executions": {"task": "changes.sweep_executions", "schedule": env_int("CHANGEGATE_SWEEP_SECONDS", 10)},
    # A sweep nobody ran in time is dropped (expires), not piled up behind a stopped worker.
    "check-out-of-band": {"task": "changes.check_out_of_band", "schedule": CHANGEGATE_OOB_SWEEP_SECONDS,
                          "options": {"expires": CHANGEGATE_OOB_SWEEP_SECONDS}},
}
# The watch window after `applied` (pipeline.watch): how often the beat looks for a
# due round (each target sets its own interval; this only bounds how late one runs).
CHANGEGATE_WATCH_SWEEP_SECONDS = env_int("CHANGEGATE_WATCH_SWEEP_SECONDS", 5)
if CHANGEGATE_WATCH_SWEEP_SECONDS < 1:
    raise ImproperlyConfigured("CHANGEGATE_WATCH_SWEEP_SECONDS must be a positive number of seconds")
CELERY_BEAT_SCHEDULE["watch-applied"] = {
    "task": "changes.watch_applied", "schedule": CHANGEGATE_WATCH_SWEEP_SECONDS,
    "options": {"expires": CHANGEGATE_WATCH_SWEEP_SECONDS},
}

# Notifications (pipeline.outbox): an outbox row per alert, delivered by a Celery task.
# A failed attempt is retried after BACKOFF * 2^(n-1) seconds (at most BACKOFF_MAX),
# up to MAX_ATTEMPTS attempts, then dead-lettered (admin, /metrics, audit event).
# The address people open changegate at (https://changegate.example.com/): alerts link
# to the change's page under it. Empty: alerts carry no link.
CHANGEGATE_PUBLIC_URL = env_str("CHANGEGATE_PUBLIC_URL", "")
CHANGEGATE_NOTIFY_MAX_ATTEMPTS = env_int("CHANGEGATE_NOTIFY_MAX_ATTEMPTS", 6)
CHANGEGATE_NOTIFY_BACKOFF_SECONDS = env_int("CHANGEGATE_NOTIFY_BACKOFF_SECONDS", 30)
CHANGEGATE_NOTIFY_BACKOFF_MAX_SECONDS = env_int("CHANGEGATE_NOTIFY_BACKOFF_MAX_SECONDS", 1800)
# Per attempt: the webhook's HTTP timeout, and the SMTP timeout when EMAIL_TIMEOUT is unset.
CHANGEGATE_NOTIFY_TIMEOUT_SECONDS = env_int("CHANGEGATE_NOTIFY_TIMEOUT_SECONDS", 10)
# The sweep re-publishes a due notification nobody picked up after this long (a broker
# restarted empty loses the wake-up, never the alert), and one whose attempt started
# longer ago than CLAIM_SECONDS (its worker died).
CHANGEGATE_NOTIFY_UNCLAIMED_AFTER_SECONDS = env_int("CHANGEGATE_NOTIFY_UNCLAIMED_AFTER_SECONDS", 30)
CHANGEGATE_NOTIFY_CLAIM_SECONDS = env_int("CHANGEGATE_NOTIFY_CLAIM_SECONDS", 120)
CHANGEGATE_NOTIFY_SWEEP_SECONDS = env_int("CHANGEGATE_NOTIFY_SWEEP_SECONDS", 30)
# Deliver in the committing process instead of through the broker (Celery's
# task_always_eager, for notifications only): the test settings, where no worker runs.
CHANGEGATE_NOTIFY_EAGER = env_bool("CHANGEGATE_NOTIFY_EAGER", False)
if min(CHANGEGATE_NOTIFY_MAX_ATTEMPTS, CHANGEGATE_NOTIFY_TIMEOUT_SECONDS, CHANGEGATE_NOTIFY_SWEEP_SECONDS) < 1 or \
        min(CHANGEGATE_NOTIFY_BACKOFF_SECONDS, CHANGEGATE_NOTIFY_UNCLAIMED_AFTER_SECONDS) < 0 or \
        CHANGEGATE_NOTIFY_CLAIM_SECONDS <= CHANGEGATE_NOTIFY_TIMEOUT_SECONDS:
    raise ImproperlyConfigured("CHANGEGATE_NOTIFY_*: attempts, timeout and sweep must be positive, backoff and "
                               "unclaimed-after not negative, and CLAIM_SECONDS longer than TIMEOUT_SECONDS")
# The same sweep raises the alert for break-glass changes whose review is overdue.
CELERY_BEAT_SCHEDULE["sweep-notifications"] = {
    "task": "changes.sweep_notifications", "schedule": CHANGEGATE_NOTIFY_SWEEP_SECONDS,
    "options": {"expires": CHANGEGATE_NOTIFY_SWEEP_SECONDS},
}

# Audit checkpoints: an Ed25519 private key (PEM or raw 32 bytes) in this file signs
# (seq, head hash, time) every N events; unset = no checkpoints. N = 0 turns the
# automatic ones off (audit.chain.audit_checkpoint_create still works on demand).
CHANGEGATE_AUDIT_SIGNING_KEY_FILE = env_str("CHANGEGATE_AUDIT_SIGNING_KEY_FILE", "")

# TSIG key files: a target's tsig_key_file must be a regular file (at most 64 KiB)
# inside this directory (the DNS adapter's key_files module). Whoever registers a target picks
# the path, so without this fence registration would read any file on the gateway.
CHANGEGATE_KEY_DIR = env_str("CHANGEGATE_KEY_DIR", str(VAR_DIR / "keys"))
CHANGEGATE_AUDIT_CHECKPOINT_EVERY = env_int("CHANGEGATE_AUDIT_CHECKPOINT_EVERY", 1000)
if CHANGEGATE_AUDIT_CHECKPOINT_EVERY < 0:
    raise ImproperlyConfigured("CHANGEGATE_AUDIT_CHECKPOINT_EVERY must be 0 (off) or a positive number of events")
# Also on a timer (Celery beat), when the head moved since the last checkpoint, so a
# quiet chain is signed too; the same task publishes checkpoints out of the database
# (append-only JSON Lines file and/or a webhook POST), retrying until each sink took them.
CHANGEGATE_AUDIT_CHECKPOINT_SECONDS = env_int("CHANGEGATE_AUDIT_CHECKPOINT_SECONDS", 300)
if CHANGEGATE_AUDIT_CHECKPOINT_SECONDS < 1:
    raise ImproperlyConfigured("CHANGEGATE_AUDIT_CHECKPOINT_SECONDS must be a positive number of seconds")
CHANGEGATE_AUDIT_CHECKPOINT_FILE = env_str("CHANGEGATE_AUDIT_CHECKPOINT_FILE", "")
CHANGEGATE_AUDIT_CHECKPOINT_WEBHOOK = env_str("CHANGEGATE_AUDIT_CHECKPOINT_WEBHOOK", "")
CELERY_BEAT_SCHEDULE["audit-checkpoint"] = {
    "task": "changes.audit_checkpoint", "schedule": CHANGEGATE_AUDIT_CHECKPOINT_SECONDS,
    "options": {"expires": CHANGEGATE_AUDIT_CHECKPOINT_SECONDS},
}

# One line per record with the change id (ops.logs.log_context); LOG_JSON=true
# writes one JSON object per line instead. Both redact URL passwords.
LOG_JSON = env_bool("LOG_JSON", False)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"change": {"()": "ops.logs.ChangeContextFilter"}},
    "formatters": {
        "plain": {"()": "ops.logs.PlainFormatter"},
        "json": {"()": "ops.logs.JSONFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json" if LOG_JSON else "plain",
                    "filters": ["change"]},
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
