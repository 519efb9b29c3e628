"""Production settings behind a TLS proxy: `manage.py check --deploy` is clean,
and plain HTTP is redirected to HTTPS with HSTS (a real process, production settings)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Only what production needs; nothing inherited from the test run's settings."""
    key_file = tmp_path / "secret_key"
    key_file.write_text(secrets.token_urlsafe(60))
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings.production", DJANGO_SECRET_KEY_FILE=str(key_file),
               # check --deploy never connects: any PostgreSQL URL will do.
               DATABASE_URL="postgres://changegate@127.0.0.1:5432/changegate",
               DJANGO_ALLOWED_HOSTS="changegate.example.net", CHANGEGATE_VAR_DIR=str(tmp_path / "var"), **extra)
    return env


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "DEBUG"], cwd=ROOT,
                            env=production_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


PROBE = """
from django.test import Client
client = Client(HTTP_HOST="changegate.example.net")
plain = client.get("/admin/login/")
print("plain", plain.status_code, plain.headers.get("Location"))
secure = client.get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
print("proxied", secure.status_code, secure.headers.get("Strict-Transport-Security"))
print("cookie", secure.cookies["csrftoken"]["secure"])
print("health", client.get("/healthz").status_code != 301)
"""


def test_production_redirects_plain_http_and_sends_hsts_behind_the_proxy(tmp_path):
    code = "import django; django.setup()\n" + PROBE
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=production_env(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "plain 301 https://changegate.example.net/admin/login/" in lines
    assert "proxied 200 max-age=31536000; includeSubDomains; preload" in lines
    assert "cookie True" in lines
    assert "health True" in lines  # load-balancer probes speak plain HTTP to the backend
