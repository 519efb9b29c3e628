"""The lease heartbeat (pipeline.lease): renewals are fenced by the token, so a
worker that lost its lease renews nothing; the heartbeat keeps a live worker's
lease and stops when its work ends. Threads with their own database connections,
hence transactional tests."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.policy import change_approve
from changes.models import Execution
from changes.services import change_create, change_submit
from pipeline.execution import execution_claim
from pipeline.lease import LeaseHeartbeat, lease_extend
from tests.factories import WWW

# Real commits: the heartbeat renews from its own thread and connection (see above).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.named]


@pytest.fixture
def execution(author, reviewer, dns_target) -> Execution:
    change = change_create(actor=author, target=dns_target, title="t", reason="r", items=WWW)
    change = change_submit(actor=author, change=change)
    change = change_approve(actor=reviewer, change=change, fingerprint=change.fingerprint)
    return Execution.objects.get(change=change)


def expire(execution: Execution) -> None:
    """What a stalled worker sees: its lease ran out (the sweep then hands it on)."""
    Execution.objects.filter(pk=execution.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def row(execution: Execution) -> Execution:
    return Execution.objects.get(pk=execution.pk)


def taken_over(execution: Execution):
    stalled = execution_claim(execution_id=execution.pk, worker="stalled")
    expire(execution)
    successor = execution_claim(execution_id=execution.pk, worker="successor")
    assert stalled is not None and successor is not None and successor.token == stalled.token + 1
    return stalled, successor


def test_a_worker_that_lost_its_lease_cannot_renew_it(execution):
    stalled, successor = taken_over(execution)
    before = row(execution)
    assert not lease_extend(stalled, seconds=3600)
    after = row(execution)
    assert (after.lease_owner, after.token, after.lease_expires_at) == ("successor", successor.token,
                                                                        before.lease_expires_at)
    assert lease_extend(successor, seconds=3600)
    assert row(execution).lease_expires_at > before.lease_expires_at


def test_an_expired_lease_nobody_took_is_still_the_owners_to_renew(execution):
    lease = execution_claim(execution_id=execution.pk, worker="slow")
    expire(execution)
    assert lease_extend(lease)
    assert row(execution).lease_expires_at > timezone.now()
    assert execution_claim(execution_id=execution.pk, worker="other") is None


def test_a_finished_attempt_is_not_renewed(execution):
    lease = execution_claim(execution_id=execution.pk, worker="w")
    Execution.objects.filter(pk=execution.pk).update(state=Execution.State.DONE, lease_expires_at=None)
    assert not lease_extend(lease)
    assert row(execution).lease_expires_at is None


def test_the_heartbeat_keeps_renewing_until_the_work_ends(execution):
    lease = execution_claim(execution_id=execution.pk, worker="w")
    claimed_until = row(execution).lease_expires_at
    with LeaseHeartbeat(lease, interval=0.05) as heartbeat:
        assert heartbeat.wait_beats(3, timeout=30)
        assert row(execution).lease_expires_at > claimed_until
        thread = heartbeat._thread
    assert thread is not None and not thread.is_alive()  # stopped with the block
    assert not heartbeat.lost.is_set()


def test_a_heartbeat_whose_lease_was_taken_over_stops_and_renews_nothing(execution):
    stalled, successor = taken_over(execution)
    successor_until = row(execution).lease_expires_at
    with LeaseHeartbeat(stalled, interval=0.05) as heartbeat:
        assert heartbeat.lost.wait(30)
        assert not heartbeat.wait_beats(1, timeout=0)
    after = row(execution)
    assert (after.lease_owner, after.token, after.lease_expires_at) == ("successor", successor.token,
                                                                        successor_until)
