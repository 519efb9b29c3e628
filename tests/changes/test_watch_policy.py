"""A target's watch window and change windows as policy (issue 16): registered through
the API, the admin and the command, shown back, edited through the one policy
service (audited), and refused with the field named."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from changes.models import AuditEvent, Target
from changes.services import target_update_policy

pytestmark = [pytest.mark.django_db, pytest.mark.named]

WINDOWS = {"timezone": "Europe/Berlin", "weekly": [{"days": ["mon", "tue", "wed", "thu", "fri"],
                                                    "start": "09:00", "end": "17:00"}]}


def test_the_api_registers_and_shows_the_watch_policy(client, staff, named_server, fresh_zone):
    client.force_login(staff)
    body = {"name": fresh_zone, "config": {"zone": fresh_zone, "primary": named_server.primary,
                                           "tsig_key_file": str(named_server.key_file)},
            "watch_seconds": 900, "watch_interval_seconds": 15, "watch_auto_revert": False, "change_windows": WINDOWS}
    response = client.post("/api/v1/targets/", body, content_type="application/json")
    assert response.status_code == 201, response.json()
    shown = response.json()
    assert (shown["watch_seconds"], shown["watch_interval_seconds"], shown["watch_auto_revert"]) == (900, 15, False)
    assert shown["change_windows"]["timezone"] == "Europe/Berlin"
    target = Target.objects.get(pk=shown["id"])
    assert target.change_windows["weekly"][0]["start"] == "09:00"


def test_the_defaults_watch_as_long_as_the_bake_and_revert(dns_target):
    target = Target.objects.get(pk=dns_target.pk)
    assert (target.watch_seconds, target.watch_interval_seconds, target.watch_auto_revert) == (None, 30, True)
    assert target.change_windows == {}


def test_policy_edits_are_audited_with_before_and_after(operator, dns_target):
    target_update_policy(actor=operator, target=dns_target, watch_seconds=0, change_windows=WINDOWS)
    event = AuditEvent.objects.filter(target=dns_target, action="target_policy_changed").latest("seq")
    assert event.payload["before"] == {"watch_seconds": None, "change_windows": {}}
    assert event.payload["after"]["watch_seconds"] == 0
    assert event.payload["after"]["change_windows"]["timezone"] == "Europe/Berlin"


def test_the_admin_refuses_bad_windows_as_a_form_error_and_saves_good_ones(client, operator, dns_target):
    client.force_login(operator)
    url = reverse("admin:changes_target_change", args=[dns_target.pk])
    base = {"required_approvals": "1", "approval_lifetime_seconds": "3600", "bake_seconds": "0",
            "bake_max_seconds": "0", "watch_interval_seconds": "30", "watch_auto_revert": "on",
            "emergency_review_hours": "24", "oob_interval_seconds": "300"}
    bad = client.post(url, {**base, "change_windows": json.dumps({"weekly": [{"days": ["funday"]}]})})
    assert bad.status_code == 200
    errors = bad.context["adminform"].form.errors["change_windows"]
    assert any("change_windows.weekly[0].days" in e for e in errors), errors
    assert Target.objects.get(pk=dns_target.pk).change_windows == {}

    good = client.post(url, {**base, "change_windows": json.dumps(WINDOWS), "watch_seconds": "120"})
    assert good.status_code == 302
    target = Target.objects.get(pk=dns_target.pk)
    assert target.change_windows["timezone"] == "Europe/Berlin" and target.watch_seconds == 120
    assert AuditEvent.objects.filter(target=target, action="target_policy_changed", actor=operator).exists()


def test_the_command_takes_the_watch_flags_and_names_a_bad_one(named_server, fresh_zone):
    common = [fresh_zone, "--primary", named_server.primary, "--tsig-key-file", str(named_server.key_file)]
    with pytest.raises(CommandError, match=r"watch_interval_seconds: must be an integer 1\.\.3600"):
        call_command("target_add_dns", *common, "--watch-interval", "0", stdout=StringIO(), stderr=StringIO())
    assert not Target.objects.filter(name=fresh_zone).exists()
    out = StringIO()
    call_command("target_add_dns", *common, "--watch-seconds", "600", "--no-watch-revert",
                 "--change-windows", json.dumps(WINDOWS), stdout=out, stderr=StringIO())
    target = Target.objects.get(name=fresh_zone)
    assert (target.watch_seconds, target.watch_auto_revert) == (600, False)
    assert "watch window:       600 s, every 30 s, alerts only" in out.getvalue()
    assert "Europe/Berlin" in out.getvalue()


def test_resolvers_are_registered_by_api_admin_and_command_and_shown_back(client, staff, operator, named_server,
                                                                          fresh_zone):
    client.force_login(staff)
    body = {"name": fresh_zone, "config": {"zone": fresh_zone, "primary": named_server.primary,
                                           "tsig_key_file": str(named_server.key_file),
                                           "resolvers": ["127.0.0.1:5399"]}}
    response = client.post("/api/v1/targets/", body, content_type="application/json")
    assert response.status_code == 201, response.json()
    assert response.json()["resolvers"] == ["127.0.0.1:5399"]
    Target.objects.filter(pk=response.json()["id"]).update(name="moved-aside")  # the zone's name is free again

    client.force_login(operator)
    form = {"kind": "dns", "name": fresh_zone, "zone": fresh_zone, "primary": named_server.primary,
            "tsig_key_file": str(named_server.key_file), "resolvers": "127.0.0.1:5399, 127.0.0.1:5400",
            "required_approvals": "1", "approval_lifetime_seconds": "3600", "bake_seconds": "5",
            "bake_max_seconds": "3600", "watch_interval_seconds": "30"}
    bad = client.post(reverse("admin:changes_target_add"), {**form, "resolvers": "not-a-resolver"})
    assert bad.status_code == 200 and "resolvers" in bad.content.decode()
    assert not Target.objects.filter(name=fresh_zone).exists()
    assert client.post(reverse("admin:changes_target_add"), form).status_code == 302
    assert Target.objects.get(name=fresh_zone).config["resolvers"] == ["127.0.0.1:5399", "127.0.0.1:5400"]
    Target.objects.filter(name=fresh_zone).update(name="moved-aside-2")

    out = StringIO()
    call_command("target_add_dns", fresh_zone, "--primary", named_server.primary, "--tsig-key-file",
                 str(named_server.key_file), "--resolver", "127.0.0.1:5399", stdout=out, stderr=StringIO())
    assert Target.objects.get(name=fresh_zone).config["resolvers"] == ["127.0.0.1:5399"]
