"""Lifecycle services against a real named."""

from __future__ import annotations

import pytest

from audit.chain import chain_verify
from changes.errors import Conflict, InvalidTransition, NotPermitted, TargetUnavailable, ValidationFailed
from changes.models import TRANSITIONS, AuditEvent, ChangeRequest
from changes.services import (
    change_cancel,
    change_create,
    change_plan,
    change_submit,
    change_update,
    target_register,
)
from tests.factories import WWW

pytestmark = [pytest.mark.django_db, pytest.mark.named]
State = ChangeRequest.State


def create(author, target, **kwargs):
    args = {"title": "Move www", "reason": "new load balancer", "items": WWW}
    args.update(kwargs)
    return change_create(actor=author, target=target, **args)


def test_create_stores_the_dry_run_plan_and_an_audit_event(author, dns_target):
    change = create(author, dns_target)
    assert change.state == State.DRAFT
    (step,) = change.plan["steps"]
    assert step["before"] == {"ttl": 300, "rdatas": ["192.0.2.10", "192.0.2.11"]}
    assert step["after"] == {"ttl": 300, "rdatas": ["192.0.2.99"]}
    assert len(change.fingerprint) == 64
    assert AuditEvent.objects.filter(change=change, action="change_created").count() == 1


def test_patch_text_is_accepted_and_errors_name_the_line(author, dns_target):
    change = create(author, dns_target, items=None, patch="= www 300 IN A 192.0.2.1\n= www 300 IN A 192.0.2.2\n- api A\n")
    assert [s["name"].split(".")[0] for s in change.plan["steps"]] == ["www", "api"]
    with pytest.raises(ValidationFailed) as info:
        create(author, dns_target, items=None, patch="# comment\n+ ok 60 A 192.0.2.1\n+ bad 60 A 999.0.0.1\n")
    assert info.value.errors[0]["line"] == 3
    assert info.value.errors[0]["field"] == "items[1].records[0]"


def test_missing_reason_and_bad_items_store_nothing(author, dns_target):
    before = (ChangeRequest.objects.count(), AuditEvent.objects.count())
    with pytest.raises(ValidationFailed) as info:
        create(author, dns_target, reason=" ", items=[{"op": "upsert", "name": "x.elsewhere.", "type": "A", "ttl": 1, "records": ["1.2.3.4"]}])
    assert {e["field"] for e in info.value.errors} == {"reason"}
    with pytest.raises(ValidationFailed) as info:
        create(author, dns_target, items=[{"op": "upsert", "name": "x.elsewhere.", "type": "A", "ttl": 1, "records": ["1.2.3.4"]}])
    assert info.value.errors[0]["field"] == "items[0].name"
    assert (ChangeRequest.objects.count(), AuditEvent.objects.count()) == before


def test_outsider_cannot_propose(outsider, dns_target):
    with pytest.raises(NotPermitted):
        create(outsider, dns_target)


def test_full_legal_path_and_illegal_moves(author, staff, dns_target):
    change = create(author, dns_target)
    change = change_submit(actor=author, change=change)
    assert change.state == State.PENDING_APPROVAL
    with pytest.raises(InvalidTransition):
        change_submit(actor=author, change=change)
    change = change_cancel(actor=author, change=change, reason="wrong record")
    assert change.state == State.CANCELLED
    for call in (change_submit, change_cancel):
        with pytest.raises(InvalidTransition):
            call(actor=author, change=change)
    with pytest.raises(InvalidTransition):
        change_update(actor=author, change=change, title="too late")


def test_transition_table_has_no_exit_from_terminal_states():
    from changes.models import TERMINAL

    assert not TERMINAL & set(TRANSITIONS)


def test_edit_by_co_editor_records_editor_and_replans(author, make_user, dns_target):
    from tests.conftest import grant

    co = make_user("erin")
    grant(co, "engineer", dns_target)
    change = change_submit(actor=author, change=create(author, dns_target))
    old = change.fingerprint
    edited = change_update(actor=co, change=change, items=[{"op": "delete", "name": "api", "type": "A"}])
    assert edited.state == State.PENDING_APPROVAL
    assert edited.fingerprint != old and edited.revision == 2
    assert list(edited.editors.all()) == [co]


def test_stale_revision_is_a_conflict(author, dns_target):
    change = create(author, dns_target)
    stale = ChangeRequest.objects.get(pk=change.pk)
    change_update(actor=author, change=change, title="first edit")
    with pytest.raises(Conflict):
        change_update(actor=author, change=stale, title="second edit from an old page")


def test_replan_picks_up_live_changes(author, dns_target, named_server):
    import dns.query
    import dns.tsigkeyring
    import dns.update

    change = create(author, dns_target)
    update = dns.update.UpdateMessage(dns_target.name, keyring=dns.tsigkeyring.from_file(named_server.key_file))
    update.replace("www", 300, "A", "198.51.100.5")
    dns.query.tcp(update, "127.0.0.1", port=named_server.port, timeout=3)
    replanned = change_plan(actor=author, change=change)
    assert replanned.fingerprint != change.fingerprint
    assert replanned.plan["steps"][0]["before"]["rdatas"] == ["198.51.100.5"]


def test_only_the_author_set_or_an_operator_cancel_and_say_why(author, reviewer, plain_staff, operator, dns_target):
    change = create(author, dns_target)
    for who in (reviewer, plain_staff):
        with pytest.raises(NotPermitted):
            change_cancel(actor=who, change=change, reason="not mine")
    with pytest.raises(ValidationFailed, match="reason"):
        change_cancel(actor=operator, change=change, reason="  ")
    assert change_cancel(actor=operator, change=change, reason="zone retired").state == State.CANCELLED


def test_every_transition_is_audited_and_the_chain_verifies(author, dns_target):
    change = create(author, dns_target)
    change_update(actor=author, change=change, title="Move www again")
    change = ChangeRequest.objects.get(pk=change.pk)
    change_submit(actor=author, change=change)
    change_cancel(actor=author, change=change, reason="not needed")
    actions = list(AuditEvent.objects.filter(change=change).values_list("action", flat=True))
    assert actions == ["change_created", "change_edited", "change_submitted", "change_cancelled"]
    events = list(AuditEvent.objects.order_by("seq"))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert chain_verify(events) is None


def test_tampered_event_breaks_the_chain(author, dns_target):
    create(author, dns_target)
    events = list(AuditEvent.objects.order_by("seq"))
    events[-1].payload = {"title": "something else"}
    assert chain_verify(events) == events[-1].seq


def test_register_refuses_an_unreachable_zone_clearly(staff, named_server):
    from dns_adapters.local_named import free_port

    with pytest.raises(TargetUnavailable) as info:
        target_register(actor=staff, name="down.test", config={
            "zone": "demo.test", "primary": f"127.0.0.1:{free_port()}",
            "tsig_key_file": str(named_server.key_file), "timeout": 1})
    assert "cannot reach zone demo.test" in info.value.message
    with pytest.raises(TargetUnavailable) as info:
        target_register(actor=staff, name="notserved.test", config={
            "zone": "notserved.test", "primary": named_server.primary,
            "tsig_key_file": str(named_server.key_file), "timeout": 1})
    assert info.value.permanent


def test_policy_edit_is_operator_only_validated_and_audited(staff, plain_staff, author, dns_target):
    from changes.services import target_update_policy

    for who in (author, plain_staff):
        with pytest.raises(NotPermitted):
            target_update_policy(actor=who, target=dns_target, frozen=True)
    with pytest.raises(ValidationFailed) as info:
        target_update_policy(actor=staff, target=dns_target, bake_seconds=10**9, required_approvals=0)
    assert {e["field"] for e in info.value.errors} == {"bake_seconds", "required_approvals"}
    updated = target_update_policy(actor=staff, target=dns_target, frozen=True, required_approvals=2)
    assert (updated.frozen, updated.required_approvals) == (True, 2)
    event = AuditEvent.objects.filter(target=dns_target, action="target_policy_changed").get()
    assert event.payload == {"before": {"frozen": False, "required_approvals": 1},
                             "after": {"frozen": True, "required_approvals": 2}}
