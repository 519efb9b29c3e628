"""Reviewer warnings (issue 12) through the services: stored beside the plan on
create, edit and re-plan, recorded in the audit events, and never part of the
fingerprint or of what an approval binds to. Against the session's real named."""

from __future__ import annotations

import dataclasses

import dns.query
import dns.tsigkeyring
import dns.update
import pytest
from drf_spectacular.generators import SchemaGenerator

from adapters import Plan
from approvals.policy import approvals_valid, change_approve
from changes.adapters import adapter_open
from changes.models import AuditEvent, ChangeRequest
from changes.services import change_create, change_plan, change_submit, change_update
from tests.changes.test_schema import check
from tests.factories import WWW, api_client, upsert

pytestmark = [pytest.mark.django_db, pytest.mark.named]

# An MX at a name of the zone that has no address: legal DNS, probably a mistake.
SHOP_MX = upsert("shop", "10 nohost", rdtype="MX")


def nohost_warning(target) -> str:
    zone = f"{target.name}."
    return f"shop.{zone} MX 10 nohost.{zone}: nohost.{zone} is in zone {zone} and has no address (A/AAAA)"


def create(author, target, items):
    return change_create(actor=author, target=target, title="Mail for the shop", reason="new shop", items=items)


def payload(change, action: str) -> dict:
    return AuditEvent.objects.filter(change=change, action=action).latest("seq").payload


def give_nohost_an_address(named_server, target) -> None:
    """Somebody adds the missing address behind changegate's back."""
    update = dns.update.UpdateMessage(target.name, keyring=dns.tsigkeyring.from_file(named_server.key_file))
    update.replace("nohost", 300, "A", "192.0.2.77")
    dns.query.tcp(update, "127.0.0.1", port=named_server.port, timeout=3)


def test_create_stores_the_warnings_beside_the_plan_and_in_the_audit_event(author, dns_target):
    change = create(author, dns_target, SHOP_MX)
    assert ChangeRequest.objects.get(pk=change.pk).plan_warnings == [nohost_warning(dns_target)]
    assert "warnings" not in change.plan  # beside the plan, not in it
    assert payload(change, "change_created")["warnings"] == [nohost_warning(dns_target)]

    clean = create(author, dns_target, WWW)
    assert ChangeRequest.objects.get(pk=clean.pk).plan_warnings == []
    assert payload(clean, "change_created")["warnings"] == []


def test_the_fingerprint_of_a_change_with_warnings_is_that_of_its_plan_without_them(author, dns_target):
    change = create(author, dns_target, SHOP_MX)
    adapter = adapter_open(dns_target)
    try:
        plan = adapter.plan(adapter.validate_items(change.items, options={}), options={})
    finally:
        adapter.close()
    assert plan.warnings and change.plan_warnings == list(plan.warnings)
    bare = dataclasses.replace(plan, warnings=())
    assert change.fingerprint == bare.fingerprint == Plan.from_json(change.plan).fingerprint


def test_an_edit_replaces_the_warnings(author, dns_target):
    change = create(author, dns_target, WWW)
    edited = change_update(actor=author, change=change, items=SHOP_MX)
    assert ChangeRequest.objects.get(pk=change.pk).plan_warnings == [nohost_warning(dns_target)]
    assert payload(edited, "change_edited")["warnings"] == [nohost_warning(dns_target)]

    change_update(actor=author, change=edited, items=WWW)
    assert ChangeRequest.objects.get(pk=change.pk).plan_warnings == []


def test_replan_recomputes_the_warnings_without_touching_fingerprint_or_approvals(
        author, reviewer, dns_target, named_server):
    change = change_submit(actor=author, change=create(author, dns_target, SHOP_MX))
    change = change_approve(actor=reviewer, change=change, fingerprint=change.fingerprint)
    # Two approvals are needed on a mail change, so it still waits: it may be re-planned.
    assert change.state == ChangeRequest.State.PENDING_APPROVAL and approvals_valid(change).count() == 1
    assert change.plan_warnings == [nohost_warning(dns_target)]
    fingerprint, revision = change.fingerprint, change.revision

    give_nohost_an_address(named_server, dns_target)
    replanned = change_plan(actor=author, change=change)

    stored = ChangeRequest.objects.get(pk=change.pk)
    assert stored.plan_warnings == []
    # The plan does the same thing, so the approval given to it still counts.
    assert (stored.fingerprint, stored.revision) == (fingerprint, revision)
    assert approvals_valid(stored).count() == 1
    assert payload(replanned, "change_planned")["warnings"] == []
    assert payload(replanned, "change_planned")["changed"] is False


def test_the_schema_describes_the_warnings_and_a_response_with_some_validates(author, dns_target):
    schema = SchemaGenerator().get_schema(request=None, public=True)
    detail = schema["components"]["schemas"]["ChangeDetail"]
    assert detail["properties"]["warnings"]["type"] == "array"
    assert detail["properties"]["warnings"]["items"] == {"type": "string"}
    assert detail["properties"]["warnings"]["readOnly"] is True and "warnings" in detail["required"]
    response = api_client(author).post("/api/v1/changes/", {
        "target": dns_target.pk, "title": "t", "reason": "r", "items": SHOP_MX}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["warnings"] == [nohost_warning(dns_target)]
    check(schema, "ChangeDetail", response.json())
