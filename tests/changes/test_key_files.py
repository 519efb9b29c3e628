"""Key files come only from CHANGEGATE_KEY_DIR: registration through the API, the
admin form and `manage.py target_add_dns` refuses any other path with one fixed
message (whether that path exists or not), and inside the directory only a regular
file of bounded size is read. Against a real named."""

from __future__ import annotations

import os
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from changes.models import Target
from changes.services import target_register
from tests.conftest import grant

pytestmark = [pytest.mark.django_db, pytest.mark.named]

# Contents of /etc/passwd that an error must never show.
PASSWD_MARKERS = ("root:", "/bin/", "nologin")


@pytest.fixture
def key_dir(settings, tmp_path, named_server) -> Path:
    """A key directory of its own for this test, holding a copy of the real key."""
    directory = tmp_path / "keys"
    directory.mkdir()
    shutil.copy(named_server.key_file, directory / "zone.key")
    settings.CHANGEGATE_KEY_DIR = str(directory)
    return directory


def outside_message(key_dir: Path) -> str:
    return f"tsig_key_file must be a file inside the key directory {key_dir}"


def register(user, named_server, zone: str, key_file: str):
    client = APIClient()
    client.force_authenticate(user)
    body = {"name": zone, "config": {"zone": zone, "primary": named_server.primary, "tsig_key_file": key_file,
                                     "timeout": 3}}
    return client.post("/api/v1/targets/", body, format="json")


def key_file_error(response) -> str:
    assert response.status_code == 400, response.content
    errors = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert set(errors) == {"config.tsig_key_file"}, errors
    return errors["config.tsig_key_file"]


def test_a_key_file_inside_the_key_directory_registers(operator, named_server, fresh_zone, key_dir):
    response = register(operator, named_server, fresh_zone, str(key_dir / "zone.key"))
    assert response.status_code == 201, response.json()


def test_a_file_outside_the_key_directory_is_refused_without_saying_whether_it_exists(
        operator, named_server, fresh_zone, key_dir):
    existing = key_file_error(register(operator, named_server, fresh_zone, "/etc/passwd"))
    missing = key_file_error(register(operator, named_server, fresh_zone, "/etc/no-such-file-here"))
    # The real key, but not in the key directory: refused all the same.
    elsewhere = key_file_error(register(operator, named_server, fresh_zone, str(named_server.key_file)))
    escaping = key_file_error(register(operator, named_server, fresh_zone, f"{key_dir}/../../../../etc/passwd"))
    assert existing == missing == elsewhere == escaping == outside_message(key_dir)
    assert not any(marker in existing for marker in PASSWD_MARKERS)
    assert not Target.objects.exists()


def test_dev_zero_is_refused_not_read(operator, named_server, fresh_zone, key_dir):
    assert key_file_error(register(operator, named_server, fresh_zone, "/dev/zero")) == outside_message(key_dir)


def test_a_symlink_in_the_key_directory_cannot_point_out_of_it(operator, named_server, fresh_zone, key_dir):
    (key_dir / "passwd.key").symlink_to("/etc/passwd")
    (key_dir / "zero.key").symlink_to("/dev/zero")
    (key_dir / "dangling.key").symlink_to("/etc/no-such-file-here")
    for link in ("passwd.key", "zero.key", "dangling.key"):
        message = key_file_error(register(operator, named_server, fresh_zone, str(key_dir / link)))
        assert message == outside_message(key_dir)
    assert not Target.objects.exists()


def test_a_fifo_in_the_key_directory_is_not_opened_for_reading(operator, named_server, fresh_zone, key_dir):
    fifo = key_dir / "fifo.key"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes
    message = key_file_error(register(operator, named_server, fresh_zone, str(fifo)))
    assert message == f"TSIG key file {fifo}: not a regular file"
    directory = key_file_error(register(operator, named_server, fresh_zone, str(key_dir)))
    assert directory == outside_message(key_dir)  # the directory itself is not a file inside it


def test_a_too_large_file_is_refused_before_it_is_read(operator, named_server, fresh_zone, key_dir):
    big = key_dir / "big.key"
    # A valid key block followed by a megabyte of padding: only the size may refuse it.
    big.write_text((key_dir / "zone.key").read_text() + "#" * (1 << 20))
    message = key_file_error(register(operator, named_server, fresh_zone, str(big)))
    assert message == f"TSIG key file {big}: too large (a key file is at most 64 KiB)"


def test_missing_and_malformed_files_inside_the_directory_get_fixed_messages(
        operator, named_server, fresh_zone, key_dir):
    missing = key_dir / "nope.key"
    assert key_file_error(register(operator, named_server, fresh_zone, str(missing))) == \
        f"TSIG key file {missing}: not found"
    secretish = key_dir / "notes.key"
    secretish.write_text("algorithm hmac-sha256; the password is hunter2\n")
    message = key_file_error(register(operator, named_server, fresh_zone, str(secretish)))
    assert message == f"TSIG key file {secretish}: not a BIND key file"
    bad_algorithm = key_dir / "odd.key"
    bad_algorithm.write_text('key "k" { algorithm hmac-hunter2; secret "c2VjcmV0"; };\n')
    message = key_file_error(register(operator, named_server, fresh_zone, str(bad_algorithm)))
    assert message.startswith(f"TSIG key file {bad_algorithm}: not a BIND key file") and "hunter2" not in message
    binary = key_dir / "binary.key"
    binary.write_bytes(b"\xff\xfe\x00hunter2")
    assert key_file_error(register(operator, named_server, fresh_zone, str(binary))) == \
        f"TSIG key file {binary}: not a BIND key file"


def test_target_add_dns_refuses_a_file_outside_the_key_directory(named_server, fresh_zone, key_dir):
    for path in ("/etc/passwd", "/dev/zero", "/etc/no-such-file-here"):
        with pytest.raises(CommandError) as info:
            call_command("target_add_dns", fresh_zone, "--primary", named_server.primary, "--tsig-key-file", path,
                         stdout=StringIO(), stderr=StringIO())
        assert f"config.tsig_key_file: {outside_message(key_dir)}" in str(info.value)
        assert not any(marker in str(info.value) for marker in PASSWD_MARKERS)
    call_command("target_add_dns", fresh_zone, "--primary", named_server.primary,
                 "--tsig-key-file", str(key_dir / "zone.key"), stdout=StringIO(), stderr=StringIO())
    assert Target.objects.filter(name=fresh_zone).exists()


def test_the_admin_form_refuses_a_file_outside_the_key_directory(make_user, named_server, fresh_zone, key_dir):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    url = reverse("admin:changes_target_add")
    page = client.get(url)
    data = {"csrfmiddlewaretoken": page.cookies["csrftoken"].value, "name": fresh_zone,
            "primary": named_server.primary, "tsig_key_file": "/etc/passwd", "timeout": "2",
            "required_approvals": "1", "approval_lifetime_seconds": "3600", "bake_seconds": "10",
            "bake_max_seconds": "3600"}
    response = client.post(url, data)
    assert response.status_code == 200
    assert response.context["form"].errors["tsig_key_file"] == [outside_message(key_dir)]
    assert not Target.objects.exists()


def test_a_target_whose_key_left_the_key_directory_is_misconfigured_not_read(
        settings, operator, author, named_server, fresh_zone, key_dir, tmp_path):
    """A target registered before the key directory moved: the worker and the API
    refuse to read the old path (502), and say nothing about the file."""
    target = target_register(actor=operator, name=fresh_zone, config={
        "zone": fresh_zone, "primary": named_server.primary, "tsig_key_file": str(key_dir / "zone.key"),
        "timeout": 3})
    grant(author, "engineer", target)
    other = tmp_path / "other-keys"
    other.mkdir()
    settings.CHANGEGATE_KEY_DIR = str(other)
    client = APIClient()
    client.force_authenticate(author)
    response = client.post("/api/v1/changes/", {"target": target.pk, "title": "t", "reason": "r", "items": [
        {"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": ["192.0.2.99"]}]}, format="json")
    assert response.status_code == 502, response.json()
    assert response.json()["code"] == "target_misconfigured"
    assert outside_message(other) in response.json()["detail"]
