"""House-keeping: demo users, settings helpers (/healthz is in tests/changes/test_ops.py)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError

from config import env
from config.settings.base import _database

DEMO_USERNAMES = {"admin", "alice", "bob", "carol", "dave"}


@pytest.mark.django_db
def test_demo_setup_is_idempotent():
    out = StringIO()
    call_command("demo_setup", force=True, stdout=out)
    call_command("demo_setup", force=True, stdout=out)

    User = get_user_model()
    demo_users = User.objects.filter(username__in=DEMO_USERNAMES)
    assert sorted(demo_users.values_list("username", flat=True)) == sorted(DEMO_USERNAMES)  # each once
    demo_groups = Group.objects.filter(name__in=["auditors", "engineers", "reviewers"])
    assert sorted(demo_groups.values_list("name", flat=True)) == ["auditors", "engineers", "reviewers"]

    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    assert [g.name for g in User.objects.get(username="alice").groups.all()] == ["engineers"]
    assert [g.name for g in User.objects.get(username="bob").groups.all()] == ["reviewers"]
    assert [g.name for g in User.objects.get(username="carol").groups.all()] == ["reviewers"]
    assert [g.name for g in User.objects.get(username="dave").groups.all()] == ["auditors"]
    for user in demo_users.exclude(username="admin"):
        assert not user.is_superuser
        assert user.is_staff
        assert user.groups.count() == 1
    assert all(u.check_password("changegate-demo") for u in demo_users)
    assert "alice" in out.getvalue()


@pytest.mark.django_db
def test_demo_setup_takes_a_password():
    call_command("demo_setup", force=True, password="other-secret", stdout=StringIO())
    assert get_user_model().objects.get(username="bob").check_password("other-secret")


@pytest.mark.django_db
def test_demo_setup_refuses_without_debug(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG"):
        call_command("demo_setup", stdout=StringIO())
    assert not get_user_model().objects.filter(username__in=DEMO_USERNAMES).exists()


@pytest.mark.django_db
def test_demo_setup_runs_with_debug(settings):
    settings.DEBUG = True
    call_command("demo_setup", stdout=StringIO())
    assert get_user_model().objects.filter(username="admin", is_superuser=True).exists()


@pytest.mark.parametrize("raw", ["maybe", "2", "tru"])
def test_env_bool_rejects_a_bad_value(monkeypatch, raw):
    monkeypatch.setenv("CHANGEGATE_TEST_FLAG", raw)
    with pytest.raises(ImproperlyConfigured, match="CHANGEGATE_TEST_FLAG"):
        env.env_bool("CHANGEGATE_TEST_FLAG")


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("YES", True), ("1", True), ("off", False), ("0", False)])
def test_env_bool_reads_good_values(monkeypatch, raw, expected):
    monkeypatch.setenv("CHANGEGATE_TEST_FLAG", raw)
    assert env.env_bool("CHANGEGATE_TEST_FLAG", default=not expected) is expected


def test_env_bool_default_when_unset(monkeypatch):
    monkeypatch.delenv("CHANGEGATE_TEST_FLAG", raising=False)
    assert env.env_bool("CHANGEGATE_TEST_FLAG", True) is True


def test_env_int_rejects_a_bad_value(monkeypatch):
    monkeypatch.setenv("CHANGEGATE_TEST_INT", "ten")
    with pytest.raises(ImproperlyConfigured, match="CHANGEGATE_TEST_INT"):
        env.env_int("CHANGEGATE_TEST_INT", 1)


def test_env_str_required(monkeypatch):
    monkeypatch.delenv("CHANGEGATE_TEST_STR", raising=False)
    with pytest.raises(ImproperlyConfigured, match="CHANGEGATE_TEST_STR"):
        env.env_str("CHANGEGATE_TEST_STR")


def test_env_secret_prefers_the_file(monkeypatch, tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-the-file\n")
    monkeypatch.setenv("CHANGEGATE_TEST_SECRET", "from-the-env")
    monkeypatch.setenv("CHANGEGATE_TEST_SECRET_FILE", str(secret_file))
    assert env.env_secret("CHANGEGATE_TEST_SECRET") == "from-the-file"


def test_env_secret_unreadable_file_fails_loudly(monkeypatch, tmp_path):
    monkeypatch.setenv("CHANGEGATE_TEST_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="CHANGEGATE_TEST_SECRET_FILE"):
        env.env_secret("CHANGEGATE_TEST_SECRET")


def test_database_url_postgres(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://cg:s3cret@db.internal:5433/changegate")
    monkeypatch.delenv("DATABASE_CONN_MAX_AGE", raising=False)
    config = _database()
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert config["NAME"] == "changegate"
    assert config["USER"] == "cg"
    assert config["PASSWORD"] == "s3cret"
    assert config["HOST"] == "db.internal"
    assert config["PORT"] == 5433
    assert config["CONN_MAX_AGE"] == 60
    assert "transaction_mode" not in config.get("OPTIONS", {})


def test_database_url_conn_max_age(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://cg@db.internal/changegate")
    monkeypatch.setenv("DATABASE_CONN_MAX_AGE", "0")
    assert _database()["CONN_MAX_AGE"] == 0


def test_database_url_sqlite_default_options(monkeypatch, tmp_path):
    path = tmp_path / "sub" / "db.sqlite3"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{path}")
    config = _database()
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert config["NAME"] == str(path)
    assert config["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    assert config["CONN_MAX_AGE"] == 0
    assert path.parent.is_dir()


def test_database_url_bad_scheme_fails_loudly(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "nosuchdb://x/y")
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        _database()


@pytest.mark.django_db
@pytest.mark.named
def test_demo_setup_registers_the_demo_target_and_grants_roles(named_server, fresh_zone, settings):
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from approvals.policy import has_target_permission
    from changes.models import Target

    settings.DEBUG = True
    args = ["--zone", fresh_zone, "--primary", named_server.primary, "--tsig-key-file", str(named_server.key_file)]
    call_command("demo_setup", *args)
    call_command("demo_setup", *args)  # idempotent
    target = Target.objects.get(name=fresh_zone)
    users = {u.username: u for u in get_user_model().objects.all()}
    assert has_target_permission(users["alice"], "submit_change", target)
    assert not has_target_permission(users["alice"], "approve_change", target)
    assert has_target_permission(users["bob"], "approve_change", target)
    assert has_target_permission(users["dave"], "export_audit", target)
    assert users["alice"].has_perm("changes.add_changerequest")
