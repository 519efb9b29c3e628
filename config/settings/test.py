import os
import tempfile

from .base import *  # noqa: F401,F403
from .base import env_str

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
CHANGEGATE_UNCLAIMED_AFTER_SECONDS = 0
CHANGEGATE_RETRY_DELAY_SECONDS = 0

# Key files: every throwaway named (dns_adapters.local_named) and every pytest
# tmp_path lives under the system temp directory, so the suite's keys are inside it;
# the key-directory tests (tests/changes/test_key_files.py) set a directory of their own.
CHANGEGATE_KEY_DIR = env_str("CHANGEGATE_KEY_DIR", tempfile.gettempdir())
