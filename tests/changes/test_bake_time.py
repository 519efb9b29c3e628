"""TTL-aware bake (issue 16): the rule (pipeline/bake_time.py), the worker baking by
it against a real named, and the override's reason required by the API."""

from __future__ import annotations

from types import SimpleNamespace

import dns.query
import dns.tsigkeyring
import dns.update
import pytest

from adapters.plan import Plan, RRKey, RRValue, Step
from changes.models import AuditEvent, ChangeRequest, CheckResult
from changes.services import target_update_policy
from pipeline.bake_time import bake_for, duration_text
from pipeline.checks import BakePolicy
from tests.factories import api_client, approved, run, upsert


def target(kind: str = "dns", *, minimum: int = 60, cap: int = 3600) -> SimpleNamespace:
    return SimpleNamespace(kind=kind, bake_seconds=minimum, bake_max_seconds=cap)


def plan(*befores: tuple[str, int | None]) -> Plan:
    """One step per (owner, TTL of its `before`, None = created)."""
    return Plan(zone="demo.test.", steps=tuple(
        Step(key=RRKey(name, "A"), before=None if ttl is None else RRValue(ttl, ("192.0.2.1",)),
             after=RRValue(60, ("192.0.2.2",)))
        for name, ttl in befores))


# ---------------------------------------------------------------------------
# The rule


def test_the_largest_old_ttl_sets_the_bake():
    seconds, why = bake_for(plan(("api.demo.test.", 300), ("www.demo.test.", 1200), ("new.demo.test.", None)),
                            target())
    assert seconds == 1200
    assert why == "watching for 20 min: www.demo.test. A had TTL 1200"


def test_the_target_caps_the_ttl_derived_bake():
    seconds, why = bake_for(plan(("www.demo.test.", 86400)), target(cap=3600))
    assert seconds == 3600
    assert why == "watching for 60 min: www.demo.test. A had TTL 86400 (capped at the target's 60 min)"


def test_the_target_minimum_holds_below_a_short_ttl_and_above_the_cap():
    assert bake_for(plan(("www.demo.test.", 30)), target(minimum=60)) == (
        60, "watching for 1 min: the target's minimum bake (www.demo.test. A had TTL 30)")
    # A cap below the minimum never shortens the minimum.
    seconds, why = bake_for(plan(("www.demo.test.", 300)), target(minimum=60, cap=0))
    assert seconds == 60 and "capped at the target's 0 s" in why
    # Only new RRsets: nothing cached to wait for.
    assert bake_for(plan(("new.demo.test.", None)), target(minimum=10)) == (
        10, "watching for 10 s: the target's minimum bake")


def test_an_override_replaces_the_rule_and_says_why():
    change = SimpleNamespace(plan=plan(("www.demo.test.", 1200)).to_json(), bake_override_seconds=300,
                             bake_override_reason="the old address keeps serving for a day")
    assert bake_for(change, target()) == (
        300, "watching for 5 min: set by the change (the old address keeps serving for a day)")
    # Without an override the stored plan is read.
    change.bake_override_seconds = None
    assert bake_for(change, target()).seconds == 1200


def test_a_firewall_change_bakes_the_target_minimum():
    fw_plan = Plan(zone="nft", steps=(Step(key=RRKey("inet changegate", "chain"), before=RRValue(0, ("x",)),
                                           after=RRValue(0, ("y",))),))
    assert bake_for(fw_plan, target("nft", minimum=45)) == (45, "watching for 45 s: the target's minimum bake")


def test_durations_read_as_people_say_them():
    assert [duration_text(s) for s in (0, 59, 60, 90, 120, 1260, 3630)] == [
        "0 s", "59 s", "1 min", "90 s", "2 min", "21 min", "60 min 30 s"]


# ---------------------------------------------------------------------------
# The worker bakes by the rule (real named)


@pytest.mark.django_db
@pytest.mark.named
def test_a_record_with_ttl_2_is_baked_at_least_2_seconds(author, reviewer, operator, dns_target, named_server):
    target = target_update_policy(actor=operator, target=dns_target, bake_seconds=0, bake_max_seconds=60)
    update = dns.update.UpdateMessage(target.name, keyring=dns.tsigkeyring.from_file(named_server.key_file))
    update.replace("short", 2, "A", "192.0.2.40")
    dns.query.tcp(update, "127.0.0.1", port=named_server.port, timeout=3)

    change = approved(author, reviewer, target, upsert("short", "192.0.2.41"))
    assert bake_for(change, target) == (2, f"watching for 2 s: short.{target.name}. A had TTL 2")
    assert run(change) == ChangeRequest.State.APPLIED

    rounds = list(CheckResult.objects.filter(execution__change=change, phase="apply", kind="verify")
                  .order_by("round").values_list("round", "created_at"))
    interval = BakePolicy(bake_seconds=2).interval
    # Rounds come every `interval` and the bake ends when the next one would fall past
    # its end, so the rounds stored cover [first, last + interval] >= the 2 s asked for.
    assert len(rounds) >= 2 / interval
    span = (rounds[-1][1] - rounds[0][1]).total_seconds() + interval
    assert span >= 2 - 0.05, rounds
    assert AuditEvent.objects.filter(change=change, action="change_verified").exists()


# ---------------------------------------------------------------------------
# The API: the bake is shown, an override needs its reason


@pytest.mark.django_db
@pytest.mark.named
def test_the_api_shows_the_bake_and_refuses_an_override_without_a_reason(author, dns_target):
    client = api_client(author)
    body = {"target": dns_target.pk, "title": "Move www", "reason": "new load balancer",
            "items": upsert("www", "192.0.2.99")}
    refused = client.post("/api/v1/changes/", {**body, "bake_override_seconds": 600}, format="json")
    assert refused.status_code == 400
    assert "bake_override_reason" in {e["field"] for e in refused.json()["errors"]}
    assert not ChangeRequest.objects.filter(target=dns_target).exists()

    created = client.post("/api/v1/changes/", body, format="json")
    assert created.status_code == 201, created.json()
    # dns_target's cap is 0 (tests/conftest.py): the minimum, with the TTL it waived.
    assert created.json()["bake"] == {
        "seconds": 60, "override_reason": None,
        "why": f"watching for 1 min: the target's minimum bake (www.{dns_target.name}. A had TTL 300, "
               "capped at the target's 0 s)"}
    url = f"/api/v1/changes/{created.json()['id']}/"

    refused = client.patch(url, {"bake_override_seconds": 600}, format="json")
    assert refused.status_code == 400
    assert "bake_override_reason" in {e["field"] for e in refused.json()["errors"]}

    edited = client.patch(url, {"bake_override_seconds": 600, "bake_override_reason": "slow caches"}, format="json")
    assert edited.status_code == 200, edited.json()
    assert edited.json()["bake"] == {"seconds": 600, "why": "watching for 10 min: set by the change (slow caches)",
                                     "override_reason": "slow caches"}
    # null goes back to the target's rule.
    back = client.patch(url, {"bake_override_seconds": None}, format="json")
    assert back.status_code == 200 and back.json()["bake"]["override_reason"] is None


@pytest.mark.django_db
@pytest.mark.named
def test_the_change_page_and_the_cli_show_why(client, author, dns_target, capsys):
    from django.contrib.auth.models import Permission
    from django.urls import reverse

    from changegate_cli.render import print_change
    from changes.services import change_create

    change = change_create(actor=author, target=dns_target, title="t", reason="r", items=upsert("www", "192.0.2.99"),
                           bake_override_seconds=1260, bake_override_reason="resolvers pin for 21 min")
    why = "watching for 21 min: set by the change (resolvers pin for 21 min)"
    author.is_staff = True
    author.save()
    author.user_permissions.add(*Permission.objects.filter(content_type__app_label="changes",
                                                           codename__in=["view_changerequest"]))
    client.force_login(author)
    page = client.get(reverse("admin:changes_changerequest_change", args=[change.pk]))
    assert page.status_code == 200
    assert f'<p class="cg-bake">Bake: {why}.</p>' in page.content.decode()

    print_change(api_client(author).get(f"/api/v1/changes/{change.pk}/").json(), full=True)
    assert f"  bake         {why}\n" in capsys.readouterr().out
