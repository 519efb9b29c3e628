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
from changes.models import AuditEvent, ChangeRequest, CheckResult, Execution
from changes.services import change_create, change_submit, target_update_policy
from dns_adapters.local_named import free_port
from pipeline.execution import LeaseLost, change_move, execution_claim, execution_sweep
from pipeline.run import execution_run
from tests.factories import WWW, approved, run, wrong_secret

pytestmark = [pytest.mark.django_db, pytest.mark.named]
State = ChangeRequest.State


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
    # The end says why (issue 15): the failed check, its error and the round, in the
    # rolled_back event and so in its alert.
    because = AuditEvent.objects.get(change=change, action="change_rolled_back").payload["because"]
    (check,) = because["failed_checks"]
    assert check["name"] == f"tcp 127.0.0.1:{dead['port']}" and not check["ok"] and check["detail"]
    assert because["round"] >= 2  # the failure threshold is two consecutive rounds


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
        change_move(stale, State.APPLYING, action="apply_started")
    assert AuditEvent.objects.filter(change=change, action="change_applied").count() == 1


def test_resuming_after_a_crash_mid_apply_never_applies_twice(author, reviewer, fast_target):
    change = approved(author, reviewer, fast_target)
    lease = execution_claim(execution_id=change.execution.pk, worker="crashed")
    change_move(lease, State.APPLYING, action="apply_started")
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


def test_approval_alerts_the_author_and_reviewers(
        author, reviewer, fast_target, django_capture_on_commit_callbacks):
    from django.core import mail

    author.email, reviewer.email = "alice@example.test", "bob@example.test"
    author.save()
    reviewer.save()
    with django_capture_on_commit_callbacks(execute=True):  # notifications are delivered on commit
        approved(author, reviewer, fast_target)
    (message,) = [m for m in mail.outbox if "approved" in m.subject]
    assert sorted(message.to) == ["alice@example.test", "bob@example.test"]


@pytest.fixture
def down_target(own_named, staff, author, reviewer):
    from changes.services import target_register
    from tests.conftest import grant

    target = target_register(actor=staff, name="down.test", bake_seconds=0, bake_max_seconds=0, config={
        "zone": "down.test", "primary": own_named.primary, "tsig_key_file": str(own_named.key_file), "timeout": 1})
    grant(author, "engineer", target)
    grant(reviewer, "reviewer", target)
    return target


def test_dns_server_down_at_apply_time_fails_after_retries_zone_untouched(author, reviewer, down_target, own_named):
    from pipeline.execution import MAX_TRANSIENT_ATTEMPTS

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


# ---------------------------------------------------------------------------
# A permanent error ends the attempt once; a hold is audited once.


@pytest.mark.parametrize("breakage", ["wrong secret", "deleted"])
def test_a_bad_key_at_apply_time_fails_the_change_once_audited_and_alerted(
        breakage, author, reviewer, keyed_target, named_server, django_capture_on_commit_callbacks):
    from django.core import mail

    target, key_file = keyed_target
    author.email = "alice@example.test"
    author.save()
    change = approved(author, reviewer, target)
    before = www_live(target) if breakage == "deleted" else None
    if breakage == "wrong secret":
        wrong_secret(key_file, named_server)
    else:
        key_file.unlink()

    with django_capture_on_commit_callbacks(execute=True):  # the alert is delivered on commit
        assert run(change) == State.APPLY_FAILED
    change.refresh_from_db()
    assert change.state == State.APPLY_FAILED
    event = AuditEvent.objects.get(change=change, action="apply_failed")
    assert event.payload["permanent"] is True and event.payload["error_kind"] == "ConfigError"
    expected = "own.key: not found" if breakage == "deleted" else "rejected the TSIG key"
    assert expected in event.payload["error"], event.payload["error"]
    assert named_server.secret not in event.canonical_text
    execution = Execution.objects.get(change=change)
    assert (execution.state, execution.outcome, execution.claims) == ("done", "apply_failed", 1)
    assert execution.error == event.payload["error"]
    # Once: nothing is re-claimed, re-swept, re-audited or re-alerted.
    with django_capture_on_commit_callbacks(execute=True):  # a second alert would be delivered here
        assert execution_sweep() == []
        assert run(change) == "not-claimed"
    assert AuditEvent.objects.filter(change=change, action="apply_failed").count() == 1
    assert len([m for m in mail.outbox if f"apply_failed: change #{change.pk}" in m.subject]) == 1
    if breakage == "deleted":  # nothing was sent: with the key back, the zone is as it was
        import shutil

        shutil.copy(named_server.key_file, key_file)
        assert www_live(target) == before == [("192.0.2.10", "192.0.2.11")]


def test_every_permanent_adapter_error_ends_the_attempt_and_transient_ones_retry_bounded(
        author, reviewer, fast_target, monkeypatch):
    """The classification is the adapter's (`AdapterError.permanent`), honoured at
    the one place the run catches what its steps did not handle."""
    from changes import adapters
    from dns_adapters.base import AdapterError, ConfigError, DriftError, ItemValidationError, TransientError

    def failing(error):
        real = adapters.adapter_class(fast_target.kind)

        class Failing(real):
            def read(self, keys):
                raise error

        return lambda target: Failing(target.config, key_dir=adapters.settings.CHANGEGATE_KEY_DIR)

    permanent = [ConfigError("refused"), DriftError("moved", keys=[], live={}), ItemValidationError([]),
                 AdapterError("unclassified")]
    for error in permanent:
        assert error.permanent
        monkeypatch.setattr(adapters, "_factory_override", None)  # approving reads the live zone
        change = approved(author, reviewer, fast_target)
        monkeypatch.setattr(adapters, "_factory_override", failing(error))
        assert run(change) == State.APPLY_FAILED, error
        assert Execution.objects.get(change=change).outcome == "apply_failed"
    monkeypatch.setattr(adapters, "_factory_override", None)
    change = approved(author, reviewer, fast_target)
    monkeypatch.setattr(adapters, "_factory_override", failing(TransientError("timed out")))
    from pipeline.execution import MAX_TRANSIENT_ATTEMPTS

    results = [run(change) for _ in range(MAX_TRANSIENT_ATTEMPTS)]
    assert results == ["retrying"] * (MAX_TRANSIENT_ATTEMPTS - 1) + [State.APPLY_FAILED]
    event = AuditEvent.objects.get(change=change, action="apply_failed")
    assert (event.payload["permanent"], event.payload["retries"]) == (False, MAX_TRANSIENT_ATTEMPTS)


def test_a_frozen_target_audits_the_hold_once_not_on_every_sweep(author, reviewer, fast_target, staff):
    change = approved(author, reviewer, fast_target)
    target_update_policy(actor=staff, target=fast_target, frozen=True)
    for _ in range(5):  # five sweeps, each claiming and releasing the held attempt
        assert change.execution.pk in execution_sweep()
        assert run(change) == "held"
    assert AuditEvent.objects.filter(change=change, action="execution_held").count() == 1
    execution = Execution.objects.get(change=change)
    assert execution.claims == 5 and "frozen" in execution.hold_reason
    assert [e["what"] for e in execution.log].count("released") == 1
    # Unfrozen, the hold ends; frozen again later is a new hold, audited again.
    target_update_policy(actor=staff, target=fast_target, frozen=False)
    second = approved(author, reviewer, fast_target,
                      items=[{"op": "upsert", "name": "api", "type": "A", "ttl": 300, "records": ["192.0.2.77"]}])
    assert run(change) == State.APPLIED
    target_update_policy(actor=staff, target=fast_target, frozen=True)
    assert run(second) == "held" and run(second) == "held"
    assert AuditEvent.objects.filter(change=second, action="execution_held").count() == 1


# ---------------------------------------------------------------------------
# The DNS server down during the bake: the rollback waits for it, for a bounded time.


def stopping_during_the_bake(server, then=None):
    """The real bake, after the server went down (stopped, its files kept)."""
    from pipeline import checks

    def bake(**kwargs):
        server.stop(cleanup=False)
        if then is not None:
            then()
        return checks.bake(**kwargs)

    return bake


def test_server_down_during_the_bake_the_rollback_retries_until_it_is_back(
        author, reviewer, down_target, own_named, settings):
    settings.CHANGEGATE_ROLLBACK_RETRY_SECONDS = 300
    change = approved(author, reviewer, down_target)
    port = own_named.port
    first = execution_run(execution_id=change.execution.pk, worker="test-worker",
                          bake=stopping_during_the_bake(own_named))
    assert first == "retrying"  # the bake failed (no answer), and so did the rollback's first send
    assert run(change) == "retrying"  # still down
    execution = Execution.objects.get(change=change)
    assert (execution.state, execution.retries) == (Execution.State.PENDING, 2)
    assert execution.retrying_since and execution.error.startswith("rollback:")
    assert ChangeRequest.objects.get(pk=change.pk).state == State.ROLLING_BACK
    assert not AuditEvent.objects.filter(change=change, action="rollback_failed").exists()

    own_named.start(port=port)  # back, still holding `after`
    assert www_live(down_target) == [("192.0.2.99",)]
    assert run(change) == State.ROLLED_BACK
    assert www_live(down_target) == [("192.0.2.10", "192.0.2.11")]
    execution = Execution.objects.get(change=change)
    assert (execution.state, execution.outcome, execution.claims) == ("done", "rolled_back", 3)


def test_a_rollback_gives_up_once_the_server_stayed_down_for_the_retry_time(
        author, reviewer, down_target, own_named, settings):
    settings.CHANGEGATE_ROLLBACK_RETRY_SECONDS = 300
    change = approved(author, reviewer, down_target)
    port = own_named.port
    assert execution_run(execution_id=change.execution.pk, worker="test-worker",
                         bake=stopping_during_the_bake(own_named)) == "retrying"
    settings.CHANGEGATE_ROLLBACK_RETRY_SECONDS = 0  # the retry time is up
    assert run(change) == State.ROLLBACK_FAILED
    event = AuditEvent.objects.get(change=change, action="rollback_failed")
    assert "gave up" in event.payload["error"]
    own_named.start(port=port)
    assert www_live(down_target) == [("192.0.2.99",)]  # nothing was undone: a human must look


def test_a_server_that_answers_and_refuses_the_rollback_makes_it_final_at_once(
        author, reviewer, fast_target, named_server, settings):
    settings.CHANGEGATE_ROLLBACK_RETRY_SECONDS = 300
    dead = {"type": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": 0.5}
    change = approved(author, reviewer, fast_target, health_checks=[dead])
    from pipeline import checks

    def drifting_bake(**kwargs):  # somebody else's change lands during the bake
        outside(named_server, fast_target, lambda u: u.replace("www", 300, "A", "203.0.113.7"))
        return checks.bake(**kwargs)

    assert execution_run(execution_id=change.execution.pk, worker="test-worker",
                         bake=drifting_bake) == State.ROLLBACK_FAILED
    assert Execution.objects.get(change=change).retries == 0
    assert www_live(fast_target) == [("203.0.113.7",)]
    because = AuditEvent.objects.get(change=change, action="rollback_failed").payload["because"]
    assert "tcp" in [c["kind"] for c in because["failed_checks"]]  # and verify: the outside value
