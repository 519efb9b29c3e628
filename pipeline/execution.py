"""The attempts (Execution rows) of approved changes: the outbox row, the claim and
lease, and the fenced moves of a change and its attempt. What a worker does with a
claimed attempt (apply, verify, bake, roll back) is `pipeline.run`. Every state
change goes through `lifecycle.transition` while the worker proves, under a row
lock, that it still holds the lease (fencing token), so a worker that stalled and
lost its lease cannot write over the one that took over.

Redis is only the wake-up: the Execution row written in the approving
transaction is the truth, and `execution_sweep` re-enqueues whatever nobody
picked up or whose worker died.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from approvals.standing import approvals_invalidate, approvals_required, approvals_valid
from audit.chain import SYSTEM, audit_record
from changes.lifecycle import transition
from changes.locking import (
    lock_change,
    lock_execution,
    lock_target,
    retry_on_contention,
)
from changes.models import (
    EXECUTION_STATE_OF,
    EXECUTION_TRANSITIONS,
    LEASED,
    TERMINAL,
    ChangeRequest,
    Execution,
)
from pipeline.lease import lease_extend
from pipeline.outbox import alert, reviewers_of
from pipeline.publish import APPLY_CHANGE, task_publish

logger = logging.getLogger(__name__)
State = ChangeRequest.State

MAX_TRANSIENT_ATTEMPTS = 5
ROLLBACK_BACKOFF_MAX_SECONDS = 60
E = Execution.State
# Where a claim may take an attempt from: the table's sources of CLAIMED (a leased
# one only once its lease ran out).
CLAIMABLE = frozenset(state for state, to in EXECUTION_TRANSITIONS.items() if E.CLAIMED in to)


def setting(name: str) -> int:
    return int(getattr(settings, name))


class LeaseLost(Exception):
    """Another worker holds this execution now; stop without writing anything."""


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ---------------------------------------------------------------------------
# Outbox


def execution_create(*, change: ChangeRequest) -> Execution:
    """Write the outbox row for an approved change and publish a wake-up after
    commit. Must run inside the approving transaction."""
    execution = Execution.objects.create(change=change, target=change.target, enqueued_at=timezone.now())
    transaction.on_commit(lambda: publish(execution.pk))
    return execution


def publish(execution_id: int, *, countdown: float = 0) -> None:
    """Wake a worker. A broker outage is logged, not raised: the sweep re-publishes."""
    try:
        task_publish(APPLY_CHANGE, execution_id, countdown=countdown)
    except Exception:  # kombu/redis errors of every kind; the row is the truth
        logger.warning("could not publish execution %s; the sweep will", execution_id, exc_info=True)


def execution_sweep(*, now: Any = None) -> list[int]:
    """Re-publish executions that nobody claimed, that are held, or whose lease
    expired (their worker died). Returns the ids published."""
    now = now or timezone.now()
    # One waiting for its retry's backoff is left alone until then.
    due = Q(state=E.PENDING) & (Q(retry_at__isnull=True) | Q(retry_at__lte=now))
    unclaimed = Q(enqueued_at__lt=now - timedelta(seconds=setting("CHANGEGATE_UNCLAIMED_AFTER_SECONDS")))
    stale = Execution.objects.filter(
        (due & (unclaimed | Q(hold_reason__gt=""))) | Q(state__in=LEASED, lease_expires_at__lt=now)
    )
    ids = list(stale.values_list("pk", flat=True))
    if ids:
        Execution.objects.filter(pk__in=ids, state=E.PENDING).update(enqueued_at=now)
    for execution_id in ids:
        publish(execution_id)
    return ids


# ---------------------------------------------------------------------------
# Lease


@dataclass
class Lease:
    execution_id: int
    worker: str
    token: int


def _jumps_window_holds(change_id: int) -> bool:
    return ChangeRequest.objects.filter(pk=change_id).filter(Q(emergency=True) | Q(reverts__isnull=False)).exists()


@retry_on_contention
def execution_claim(*, execution_id: int, worker: str, lease_seconds: int | None = None) -> Lease | None:
    """Take the lease if the execution is free and first in line on its target.
    None means: someone else has it, it is done, or it must wait its turn."""
    now = timezone.now()
    lease_seconds = lease_seconds or setting("CHANGEGATE_LEASE_SECONDS")
    with transaction.atomic():
        execution = Execution.objects.filter(pk=execution_id).first()
        if execution is None or execution.state not in CLAIMABLE:
            return None
        if execution.state == E.PENDING and execution.retry_at is not None and execution.retry_at > now:
            return None  # backing off after a transient failure; its own wake-up is scheduled
        # The target row lock serializes claims: one change at a time per target.
        # (Target, then execution: the lock order, changes.locking.)
        lock_target(execution.target_id)
        busy = Execution.objects.filter(
            target_id=execution.target_id, state__in=LEASED, lease_expires_at__gte=now
        ).exclude(pk=execution_id)
        earlier = Execution.objects.filter(
            target_id=execution.target_id, state__in=[E.PENDING, *LEASED], pk__lt=execution_id,
        )
        if _jumps_window_holds(execution.change_id):
            # Break-glass and reverts do not wait for a change window (pipeline.window_hold),
            # so they do not queue behind a change that does: it is held, not running,
            # and its own apply re-reads live (a compare-and-swap) when its window opens.
            earlier = earlier.exclude(state=E.PENDING, hold_reason__gt="", retry_at__gt=now)
        if busy.exists() or earlier.exists():
            return None  # approval order: the earlier one runs first, then wakes us
        # The one move of the attempt's state machine that is a conditional UPDATE (the
        # Healthchecks pattern): its sources are CLAIMABLE, from the table. The hold
        # reason stays: it is how the next hold knows it is the same hold.
        claimed = (
            Execution.objects.filter(pk=execution_id)
            .filter(Q(state=E.PENDING) | Q(state__in=CLAIMABLE - {E.PENDING}, lease_expires_at__lt=now))
            .update(state=E.CLAIMED, lease_owner=worker, token=F("token") + 1,
                    lease_expires_at=now + timedelta(seconds=lease_seconds), claims=F("claims") + 1, retry_at=None)
        )
        if claimed != 1:
            return None
        token = Execution.objects.values_list("token", flat=True).get(pk=execution_id)
        Execution.objects.filter(pk=execution_id, started_at__isnull=True).update(started_at=now)
    return Lease(execution_id=execution_id, worker=worker, token=token)


def fenced(lease: Lease) -> Execution:
    """Lock the change, its target, then the execution row (the lock order,
    changes.locking) and prove the lease is still ours. The locked change is
    `execution.change`. Call inside a transaction."""
    # change_id never changes: reading it unlocked is safe, and lets the change be
    # locked before the execution (issue 10: execution first deadlocked with claims).
    change = lock_change(Execution.objects.values_list("change_id", flat=True).get(pk=lease.execution_id))
    execution = lock_execution(lease.execution_id)
    execution.change = change
    if execution.token != lease.token or execution.lease_owner != lease.worker:
        raise LeaseLost(f"execution {lease.execution_id} was taken over (token {execution.token})")
    return execution


def lease_renew(lease: Lease) -> None:
    if not lease_extend(lease):  # the one fenced renewal, shared with the heartbeat
        raise LeaseLost(f"execution {lease.execution_id} was taken over")


def execution_advance(execution: Execution, to: str, *, outcome: str = "") -> None:
    """The only assignment of an attempt's `state` (besides the claim's conditional
    UPDATE): along EXECUTION_TRANSITIONS, saving the row. DONE takes the outcome and
    gives the lease back. Caller holds the row lock (`fenced`)."""
    if to not in EXECUTION_TRANSITIONS.get(execution.state, frozenset()):
        raise ValueError(f"execution {execution.pk} is {execution.state}; it cannot move to {to}")
    execution.state = to
    if to == E.DONE:
        execution.outcome, execution.finished_at, execution.lease_expires_at = outcome, timezone.now(), None
    execution.save()


def attempt_log(execution: Execution, lease: Lease, what: str, **detail: Any) -> None:
    execution.log = [*execution.log, {"at": timezone.now().isoformat(), "worker": lease.worker, "what": what, **detail}]


@retry_on_contention
def change_move(lease: Lease, to: str, *, action: str, payload: dict[str, Any] | None = None,
                execution_fields: dict[str, Any] | None = None, invalidate_approvals: str = "",
                change_fields: dict[str, Any] | None = None) -> ChangeRequest:
    """Fenced state change of the change (and its execution) in one transaction;
    with `invalidate_approvals` (the reason) the change's approvals die in it too;
    `change_fields` are set on the change in the same save (the watch window)."""
    with transaction.atomic():
        execution = fenced(lease)
        change = execution.change
        if withdrawn(execution, lease):
            return change
        if invalidate_approvals:
            approvals_invalidate(change=change, reason=invalidate_approvals)
        payload = {"execution": execution.pk, "worker": lease.worker, "token": lease.token, **(payload or {})}
        for field, value in (change_fields or {}).items():
            setattr(change, field, value)
        transition(change, to, actor=None, origin=SYSTEM, action=action, payload=payload)
        for field, value in (execution_fields or {}).items():
            setattr(execution, field, value)
        # A new phase starts its own count of transient failures.
        execution.retries, execution.retrying_since, execution.retry_at = 0, None, None
        attempt_log(execution, lease, action, to=to)
        if to in TERMINAL or to == State.DRIFTED:
            execution_advance(execution, E.DONE, outcome=to)
            transaction.on_commit(lambda: wake_next(change.target_id))
        else:
            execution_advance(execution, EXECUTION_STATE_OF[to])
        if to in NOTIFY:
            recipients = [change.author, *reviewers_of(change.target)]
            alert(event=to, change=change, recipients=recipients, detail=payload)
    return change


@retry_on_contention
def apply_start(lease: Lease, change: ChangeRequest) -> ChangeRequest:
    """approved -> applying, but only while the approvals still count. Approvals
    expire, and an approved change may wait long for its turn (a frozen target, a
    queue): the check is made here, under the execution's fence and the change's row
    lock, in the very transaction that starts the apply, so nothing between it and
    the send can revive a lapsed approval. If they no longer count, the change goes
    back for review (approved -> pending_approval) and this execution ends without
    touching the target. A break-glass change is exempt: its authority is the
    emergency record, not approvals; so is a one-person revert of a young change: its
    authority is the original change's approvals (changes.services.reverts, audited
    as change_revert_approved), and it puts back what was live before them."""

    with transaction.atomic():
        execution = fenced(lease)
        locked = execution.change
        if withdrawn(execution, lease):
            return locked
        if locked.state != State.APPROVED:  # pragma: no cover - _drive only calls this for approved changes
            raise LeaseLost(f"change #{locked.pk} is {locked.state}, not approved")
        if not locked.emergency and locked.reverts_id is None:
            valid = approvals_valid(locked).count()
            required = approvals_required(locked)
            if valid < required:
                payload = {"execution": execution.pk, "worker": lease.worker, "token": lease.token,
                           "fingerprint": locked.fingerprint, "valid_approvals": valid, "required": required,
                           "why": "approvals expired or were invalidated before the apply started"}
                transition(locked, State.PENDING_APPROVAL, actor=None, origin=SYSTEM, action="approval_lapsed",
                           payload=payload)
                attempt_log(execution, lease, "approval_lapsed", to=State.PENDING_APPROVAL)
                execution_advance(execution, E.DONE, outcome=Execution.Outcome.APPROVAL_LAPSED)
                transaction.on_commit(lambda: wake_next(locked.target_id))
                alert(event="approval_lapsed", change=locked, recipients=[locked.author, *reviewers_of(locked.target)],
                      detail=payload)
                return locked
        payload = {"execution": execution.pk, "worker": lease.worker, "token": lease.token,
                   "fingerprint": locked.fingerprint}
        transition(locked, State.APPLYING, actor=None, origin=SYSTEM, action="apply_started", payload=payload)
        attempt_log(execution, lease, "apply_started", to=State.APPLYING)
        execution.retries, execution.retrying_since = 0, None
        execution_advance(execution, E.APPLYING)
    return locked


NOTIFY = {State.APPLIED, State.DRIFTED, State.ROLLED_BACK, State.ROLLBACK_FAILED, State.APPLY_FAILED}


def withdrawn(execution: Execution, lease: Lease) -> bool:
    """Whether the change was cancelled while this worker read the zone unlocked
    (cancel is allowed while a change is approved, and the re-plan read runs outside
    any transaction so a slow DNS server never holds a row lock). Then the attempt
    ends here, target untouched, instead of crashing on a move the state machine
    forbids. Caller holds the locks (`fenced`)."""
    if execution.change.state != State.CANCELLED:
        return False
    attempt_log(execution, lease, "withdrawn", to=State.CANCELLED)
    execution_advance(execution, E.DONE, outcome=Execution.Outcome.CANCELLED)
    target_id = execution.change.target_id
    transaction.on_commit(lambda: wake_next(target_id))
    return True


@retry_on_contention
def lease_release(lease: Lease, *, hold_reason: str = "", error: str = "", retry_in: float | None = None) -> Execution:
    """Give the lease back without finishing: a hold, or a transient failure (counted
    in `retries`; no claim before `retry_in` seconds). A hold is audited when it
    starts or its reason changes, not on every sweep that finds it still held."""
    with transaction.atomic():
        execution = fenced(lease)
        now = timezone.now()
        held_before, hold_reason = execution.hold_reason, hold_reason[:300]
        execution.lease_expires_at = None
        execution.hold_reason, execution.error = hold_reason, error
        execution.enqueued_at = now
        if retry_in is not None:
            execution.retries += 1
            execution.retrying_since = execution.retrying_since or now
            execution.retry_at = now + timedelta(seconds=retry_in)
        if hold_reason != held_before or not hold_reason:  # the same hold again: nothing new to record
            attempt_log(execution, lease, "released", hold_reason=hold_reason, error=error)
        execution_advance(execution, E.PENDING)
        if hold_reason and hold_reason != held_before:
            audit_record(actor=None, origin=SYSTEM, action="execution_held", change=execution.change,
                         payload={"execution": execution.pk, "reason": hold_reason})
    return execution


def wake_next(target_id: int) -> None:
    following = Execution.objects.filter(target_id=target_id, state=E.PENDING).order_by("pk").first()
    if following is not None:
        publish(following.pk)
