import os
import tempfile

from .base import *  # noqa: F401,F403
from .base import env_bool, env_str

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast users in tests
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

# Nothing in the suite may publish to a shared broker by accident: tests that run a
# real worker start their own redis-server and point the app at it.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "memory://")

# A file, not memory, for the SQLite test database: the Celery worker processes the
# integration tests start must see the same database as the test process.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # One file per test run, so two runs at once (two terminals, xdist) never share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}  # noqa: F405
# Short lease and immediate sweep so crash recovery is seen within seconds.
CHANGEGATE_LEASE_SECONDS = 3
# Shorter than the lease, and long enough for the default 2 s check timeout. A worker
# test raises it past the lease, to show the heartbeat alone keeps the lease.
CHANGEGATE_CHECK_ROUND_SECONDS = float(env_str("CHANGEGATE_CHECK_ROUND_SECONDS", "2.5"))
CHANGEGATE_UNCLAIMED_AFTER_SECONDS = 0
CHANGEGATE_RETRY_DELAY_SECONDS = int(env_str("CHANGEGATE_RETRY_DELAY_SECONDS", "0"))  # a worker test may slow it
# Tests that need a rollback to keep retrying while named is down raise it.
CHANGEGATE_ROLLBACK_RETRY_SECONDS = int(env_str("CHANGEGATE_ROLLBACK_RETRY_SECONDS", "0"))

# Key files: every throwaway named (the DNS adapter's local_named helper) and every pytest
# tmp_path lives under the system temp directory, so the suite's keys are inside it;
# the key-directory tests (tests/changes/test_key_files.py) set a directory of their own.
CHANGEGATE_KEY_DIR = env_str("CHANGEGATE_KEY_DIR", tempfile.gettempdir())

# Notifications are delivered in the test process on commit (most tests run no
# worker); tests/changes/test_notify.py turns this off to go through a real worker.
CHANGEGATE_NOTIFY_EAGER = env_bool("CHANGEGATE_NOTIFY_EAGER", True)
