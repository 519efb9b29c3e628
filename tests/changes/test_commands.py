"""`manage.py target_add_dns` against a real named."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from changes.models import AuditEvent, Origin, Target
from dns_adapters.local_named import free_port

pytestmark = [pytest.mark.django_db, pytest.mark.named]


def add_dns(*args: str) -> str:
    out = StringIO()
    call_command("target_add_dns", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_target_add_dns_registers_a_live_zone_and_prints_it(named_server, fresh_zone):
    out = add_dns(fresh_zone, "--primary", named_server.primary, "--tsig-key-file", str(named_server.key_file),
                  "--required-approvals", "2", "--bake-seconds", "5", "--bake-max-seconds", "600", "--timeout", "3")
    target = Target.objects.get(name=fresh_zone)
    assert target.bake_max_seconds == 600 and "bake cap:           600 s" in out
    assert target.config["zone"] == fresh_zone
    assert target.config["nameservers"] == [named_server.primary]
    assert (target.required_approvals, target.bake_seconds, target.config["timeout"]) == (2, 5, 3.0)
    assert target.item_count and target.item_count > 5
    assert f"Registered target {fresh_zone} (id {target.pk})" in out
    assert f"rrset_count:        {target.item_count}" in out
    assert "SOA serial:         " in out and "not checked" not in out
    assert named_server.secret not in out
    event = AuditEvent.objects.get(target=target, action="target_registered")
    assert event.origin == Origin.CLI and event.actor is None
    assert named_server.secret not in str(event.payload)


def test_target_add_dns_takes_zone_and_nameservers_and_can_skip_the_check(named_server):
    add_dns("demo-internal", "--zone", "demo.test", "--primary", named_server.primary,
            "--tsig-key-file", str(named_server.key_file), "--nameserver", named_server.primary,
            "--nameserver", "127.0.0.1:5399", "--no-check")
    target = Target.objects.get(name="demo-internal")
    assert target.config["zone"] == "demo.test"
    assert target.config["nameservers"] == [named_server.primary, "127.0.0.1:5399"]
    assert target.item_count is None


def test_target_add_dns_refuses_an_unreachable_port_clearly(named_server):
    with pytest.raises(CommandError) as info:
        add_dns("demo.test", "--primary", f"127.0.0.1:{free_port()}", "--tsig-key-file",
                str(named_server.key_file), "--timeout", "1")
    assert "cannot reach zone demo.test" in str(info.value)
    assert not Target.objects.exists()


def test_target_add_dns_names_a_missing_key_file_and_a_bad_primary(named_server, tmp_path):
    missing = tmp_path / "nope.key"
    with pytest.raises(CommandError) as info:
        add_dns("demo.test", "--primary", "not-a-hostport", "--tsig-key-file", str(missing))
    message = str(info.value)
    assert "config.tsig_key_file: " in message and str(missing) in message
    assert "config.primary: " in message
    assert not Target.objects.exists()


def test_target_add_dns_refuses_a_zone_the_server_does_not_serve(named_server):
    with pytest.raises(CommandError) as info:
        add_dns("notserved.test", "--primary", named_server.primary, "--tsig-key-file", str(named_server.key_file),
                "--timeout", "2")
    assert "cannot reach zone notserved.test" in str(info.value)
    assert named_server.secret not in str(info.value)
    assert not Target.objects.exists()


def test_target_add_dns_refuses_a_duplicate_name_and_a_bad_policy(named_server):
    add_dns("demo.test", "--primary", named_server.primary, "--tsig-key-file", str(named_server.key_file),
            "--no-check")
    with pytest.raises(CommandError, match="name: target demo.test already exists"):
        add_dns("demo.test", "--primary", named_server.primary, "--tsig-key-file", str(named_server.key_file),
                "--no-check")
    with pytest.raises(CommandError, match="required_approvals: must be an integer 1..10"):
        add_dns("other", "--zone", "demo.test", "--primary", named_server.primary,
                "--tsig-key-file", str(named_server.key_file), "--required-approvals", "0", "--no-check")
    assert Target.objects.count() == 1
