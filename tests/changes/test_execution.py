"""The apply pipeline in-process (the Celery worker process has its own tests):
outbox, lease, re-plan, CAS apply, bake, rollback, against a real named."""

from __future__ import annotations

from datetime import timedelta

import dns.query
import dns.tsigkeyring
import dns.update
import pytest
from django.utils import timezone

from approvals.policy import approvals_valid, change_approve
from changes.adapters import adapter_for
from changes.execution import LeaseLost, _move, execution_claim, execution_run, execution_sweep
from changes.models import AuditEvent, ChangeRequest, CheckResult, Execution
from changes.services import change_create, change_submit, target_update_policy
from dns_adapters.local_named import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.named]
State = ChangeRequest.State
WWW = [{"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": ["192.0.2.99"]}]


@pytest.fixture
def fast_target(dns_target, staff):
    return target_update_policy(actor=staff, target=dns_target, bake_seconds=0)


def approved(author, reviewer, target, items=WWW, **kwargs):
    change = change_create(actor=author, target=target, title="t", reason="r", items=items, **kwargs)
    change = change_submit(actor=author, change=change)
    return change_approve(actor=reviewer, change=change, fingerprint=change.fingerprint)


def zone(target):
    adapter = adapter_for(target)
    try:
        return {k: v for k, v in adapter.read_zone().items() if k.rdtype != "SOA"}
    finally:
        adapter.close()


def outside(named_server, target, build):
    update = dns.update.UpdateMessage(target.name, keyring=dns.tsigkeyring.from_file(named_server.key_file))
    build(update)
    dns.query.tcp(update, "127.0.0.1", port=named_server.port, timeout=3)


def run(change):
    return execution_run(execution_id=change.execution.pk, worker="test-worker")


def test_approval_writes_the_outbox_row_in_the_same_transaction(author, reviewer, fast_target):
    change = approved(author, reviewer, fast_target)
    execution = Execution.objects.get(change=change)
    assert execution.state == Execution.State.PENDING and execution.enqueued_at is not None


def test_happy_path_applies_once_and_the_zone_holds_after(author, reviewer, fast_target):
    change = approved(author, reviewer, fast_target)
    assert run(change) == State.APPLIED
    live = zone(fast_target)
    assert [v.rdatas for k, v in live.items() if k.name.startswith("www.") and k.rdtype == "A"] == [("192.0.2.99",)]
    assert AuditEvent.objects.filter(change=change, action="change_applied").count() == 1
    execution = Execution.objects.get(change=change)
    assert (execution.state, execution.outcome, execution.apply_result["applied"]) == ("done", "applied", True)
    assert CheckResult.objects.filter(execution=execution, kind="verify", ok=True).exists()
    # A redelivered task is a no-op.
    assert run(change) == "not-claimed"
    assert AuditEvent.objects.filter(change=change, action="change_applied").count() == 1


def test_outside_change_between_approval_and_apply_is_drift(author, reviewer, fast_target, named_server):
    change = approved(author, reviewer, fast_target)
    outside(named_server, fast_target, lambda u: u.replace("www", 300, "A", "203.0.113.50"))
    assert run(change) == State.DRIFTED
    assert [v.rdatas for k, v in zone(fast_target).items() if k.name.startswith("www.") and k.rdtype == "A"] == [
        ("203.0.113.50",)]
    assert approvals_valid(ChangeRequest.objects.get(pk=change.pk)).count() == 0


def test_failing_declared_check_rolls_back_to_before_exactly(author, reviewer, fast_target):
    before = zone(fast_target)
    dead = {"type": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": 0.5}
    change = approved(author, reviewer, fast_target, health_checks=[dead])
    assert run(change) == State.ROLLED_BACK
    assert zone(fast_target) == before
    failed = CheckResult.objects.filter(execution__change=change, kind="tcp", ok=False)
    assert failed.count() >= 1


def test_two_approved_changes_on_one_rrset_one_applies_the_other_drifts(author, reviewer, fast_target):
    first = approved(author, reviewer, fast_target)
    second = approved(author, reviewer, fast_target,
                      items=[{"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": ["192.0.2.77"]}])
    assert run(second) == "not-claimed"  # approval order: the first goes first
    assert run(first) == State.APPLIED
    assert run(second) == State.DRIFTED
    assert [v.rdatas for k, v in zone(fast_target).items() if k.name.startswith("www.") and k.rdtype == "A"] == [
        ("192.0.2.99",)]


def test_frozen_target_holds_the_change_with_the_reason(author, reviewer, fast_target, staff):
    change = approved(author, reviewer, fast_target)
    target_update_policy(actor=staff, target=fast_target, frozen=True)
    assert run(change) == "held"
    execution = Execution.objects.get(change=change)
    assert "frozen" in execution.hold_reason
    assert ChangeRequest.objects.get(pk=change.pk).state == State.APPROVED
    assert execution.pk in execution_sweep()  # held executions are retried by the sweep
    target_update_policy(actor=staff, target=fast_target, frozen=False)
    assert run(change) == State.APPLIED


def test_a_worker_that_lost_its_lease_cannot_write(author, reviewer, fast_target):
    change = approved(author, reviewer, fast_target)
    stale = execution_claim(execution_id=change.execution.pk, worker="slow")
    Execution.objects.filter(pk=change.execution.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert execution_sweep() == [change.execution.pk]  # an expired lease is resumed
    assert run(change) == State.APPLIED  # a second worker takes over
    with pytest.raises(LeaseLost):
        _move(stale, State.APPLYING, action="apply_started")
    assert AuditEvent.objects.filter(change=change, action="change_applied").count() == 1


def test_resuming_after_a_crash_mid_apply_never_applies_twice(author, reviewer, fast_target):
    change = approved(author, reviewer, fast_target)
    lease = execution_claim(execution_id=change.execution.pk, worker="crashed")
    _move(lease, State.APPLYING, action="apply_started")
    adapter = adapter_for(fast_target)
    from dns_adapters.base import Plan

    adapter.apply(Plan.from_json(ChangeRequest.objects.get(pk=change.pk).plan))  # sent; then the worker died
    adapter.close()
    Execution.objects.filter(pk=change.execution.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert run(change) == State.APPLIED
    execution = Execution.objects.get(pk=change.execution.pk)
    assert execution.apply_result["applied"] is False  # the CAS saw `after` live: nothing sent twice


def test_manual_rollback_is_a_new_four_eyes_change(author, reviewer, fast_target):
    from changes.services import change_propose_rollback

    change = approved(author, reviewer, fast_target)
    assert run(change) == State.APPLIED
    undo = change_propose_rollback(actor=author, change=ChangeRequest.objects.get(pk=change.pk), reason="pay.example 502s")
    assert undo.state == State.DRAFT and "Rollback of change" in undo.reason
    (step,) = undo.plan["steps"]
    assert step["before"]["rdatas"] == ["192.0.2.99"]
    assert step["after"]["rdatas"] == ["192.0.2.10", "192.0.2.11"]
    undo = approved_existing(author, reviewer, undo)
    assert run(undo) == State.APPLIED
    assert [v.rdatas for k, v in zone(fast_target).items() if k.name.startswith("www.") and k.rdtype == "A"] == [
        ("192.0.2.10", "192.0.2.11")]


def approved_existing(author, reviewer, change):
    change = change_submit(actor=author, change=change)
    return change_approve(actor=reviewer, change=change, fingerprint=change.fingerprint)


def test_approval_alerts_the_author_and_reviewers(author, reviewer, fast_target):
    from django.core import mail

    author.email, reviewer.email = "alice@example.test", "bob@example.test"
    author.save()
    reviewer.save()
    approved(author, reviewer, fast_target)
    (message,) = [m for m in mail.outbox if "approved" in m.subject]
    assert sorted(message.to) == ["alice@example.test", "bob@example.test"]


@pytest.fixture
def own_named():
    """A named of this test's own, to stop and start again on the same port."""
    from dns_adapters.local_named import LocalNamed, default_zone_text
    from tests.conftest import DEMO_RECORDS

    server = LocalNamed({"down.test": default_zone_text("down.test", DEMO_RECORDS)})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def down_target(own_named, staff, author, reviewer):
    from changes.services import target_register
    from tests.conftest import grant

    target = target_register(actor=staff, name="down.test", bake_seconds=0, config={
        "zone": "down.test", "primary": own_named.primary, "tsig_key_file": str(own_named.key_file), "timeout": 1})
    grant(author, "engineer", target)
    grant(reviewer, "reviewer", target)
    return target


def test_dns_server_down_at_apply_time_fails_after_retries_zone_untouched(author, reviewer, down_target, own_named):
    from changes.execution import MAX_TRANSIENT_ATTEMPTS

    change = approved(author, reviewer, down_target)
    port = own_named.port
    own_named.stop(cleanup=False)
    results = [run(change) for _ in range(MAX_TRANSIENT_ATTEMPTS)]
    assert results == ["retrying"] * (MAX_TRANSIENT_ATTEMPTS - 1) + [State.APPLY_FAILED]
    own_named.start(port=port)
    assert [v.rdatas for k, v in zone(down_target).items() if k.name.startswith("www.") and k.rdtype == "A"] == [
        ("192.0.2.10", "192.0.2.11")]


def test_dns_server_back_before_the_retries_run_out_applies(author, reviewer, down_target, own_named):
    change = approved(author, reviewer, down_target)
    port = own_named.port
    own_named.stop(cleanup=False)
    assert run(change) == "retrying"
    own_named.start(port=port)
    assert run(change) == State.APPLIED


def www_live(target):
    return [v.rdatas for k, v in zone(target).items() if k.name.startswith("www.") and k.rdtype == "A"]


def test_an_approval_that_expired_while_the_target_was_frozen_sends_the_change_back_for_review(
        author, reviewer, fast_target, staff):
    from approvals.models import Approval

    target_update_policy(actor=staff, target=fast_target, frozen=True)
    change = approved(author, reviewer, fast_target)
    assert run(change) == "held"
    # The freeze outlasts the approval's lifetime.
    Approval.objects.filter(change=change).update(expires_at=timezone.now() - timedelta(seconds=1))
    target_update_policy(actor=staff, target=fast_target, frozen=False)

    assert run(change) == State.PENDING_APPROVAL
    assert www_live(fast_target) == [("192.0.2.10", "192.0.2.11")]  # untouched
    change.refresh_from_db()
    assert change.state == State.PENDING_APPROVAL
    event = AuditEvent.objects.get(change=change, action="approval_lapsed")
    assert (event.payload["from"], event.payload["to"]) == (State.APPROVED, State.PENDING_APPROVAL)
    assert (event.payload["valid_approvals"], event.payload["required"]) == (0, 1)
    assert not AuditEvent.objects.filter(change=change, action__in=["apply_started", "change_applied"]).exists()
    execution = Execution.objects.get(change=change)
    assert (execution.state, execution.outcome) == (Execution.State.DONE, "approval_lapsed")
    assert run(change) == "not-claimed"  # a redelivered wake-up does nothing

    # Back in review: a fresh approval is a new attempt, and that one applies.
    again = change_approve(actor=reviewer, change=change, fingerprint=change.fingerprint)
    assert again.state == State.APPROVED
    assert Execution.objects.filter(change=change).count() == 2
    assert run(again) == State.APPLIED
    assert www_live(fast_target) == [("192.0.2.99",)]


def test_approvals_that_no_longer_reach_the_target_count_send_the_change_back(
        author, reviewer, second_reviewer, fast_target, staff):
    change = approved(author, reviewer, fast_target)
    target_update_policy(actor=staff, target=fast_target, required_approvals=2)  # raised after the approval
    assert run(change) == State.PENDING_APPROVAL
    event = AuditEvent.objects.get(change=change, action="approval_lapsed")
    assert (event.payload["valid_approvals"], event.payload["required"]) == (1, 2)
    again = change_approve(actor=second_reviewer, change=change, fingerprint=change.fingerprint)
    assert again.state == State.APPROVED  # bob's approval still counts; carol's is the second
    assert run(again) == State.APPLIED


def test_a_break_glass_change_applies_without_approvals(author, make_user, fast_target, staff):
    from approvals.policy import change_emergency
    from tests.conftest import grant

    on_call = make_user("olga")
    grant(on_call, "emergency", fast_target)
    target_update_policy(actor=staff, target=fast_target, frozen=True)
    draft = change_create(actor=author, target=fast_target, title="t", reason="r", items=WWW)
    change = change_emergency(actor=on_call, change=draft, reason="card payments failing")
    assert run(change) == "held"
    target_update_policy(actor=staff, target=fast_target, frozen=False)
    assert run(change) == State.APPLIED  # its authority is the emergency record, not approvals
