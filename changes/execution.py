"""Applying approved changes: the outbox, the lease, and the apply/verify/rollback
run a worker performs. Every state change goes through `lifecycle.transition`
while the worker proves, under a row lock, that it still holds the lease
(fencing token), so a worker that stalled and lost its lease cannot write over
the one that took over.

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

from adapters import Adapter, AdapterError, DriftError, Plan, TransientError

from .adapters import adapter_for
from .faults import crashpoint
from .audit import SYSTEM, audit_record
from .lease import LeaseHeartbeat, lease_extend
from .lifecycle import transition
from .locking import lock_change, lock_execution, lock_target, retry_on_contention
from .logs import log_context
from .models import (
    EXECUTION_STATE_OF, EXECUTION_TRANSITIONS, LEASED, TERMINAL, ChangeRequest, CheckResult, Execution, Target,
)
from .notify import alert, reviewers_of
from .oob import oob_baseline_apply

logger = logging.getLogger(__name__)
State = ChangeRequest.State

MAX_TRANSIENT_ATTEMPTS = 5
ROLLBACK_BACKOFF_MAX_SECONDS = 60
E = Execution.State
# Where a claim may take an attempt from: the table's sources of CLAIMED (a leased
# one only once its lease ran out).
CLAIMABLE = frozenset(state for state, to in EXECUTION_TRANSITIONS.items() if E.CLAIMED in to)


def _setting(name: str) -> int:
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
    from .tasks import apply_change

    try:
        apply_change.apply_async((execution_id,), countdown=countdown)
    except Exception:  # kombu/redis errors of every kind; the row is the truth
        logger.warning("could not publish execution %s; the sweep will", execution_id, exc_info=True)


def execution_sweep(*, now: Any = None) -> list[int]:
    """Re-publish executions that nobody claimed, that are held, or whose lease
    expired (their worker died). Returns the ids published."""
    now = now or timezone.now()
    # One waiting for its retry's backoff is left alone until then.
    due = Q(state=E.PENDING) & (Q(retry_at__isnull=True) | Q(retry_at__lte=now))
    unclaimed = Q(enqueued_at__lt=now - timedelta(seconds=_setting("CHANGEGATE_UNCLAIMED_AFTER_SECONDS")))
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


@retry_on_contention
def execution_claim(*, execution_id: int, worker: str, lease_seconds: int | None = None) -> Lease | None:
    """Take the lease if the execution is free and first in line on its target.
    None means: someone else has it, it is done, or it must wait its turn."""
    now = timezone.now()
    lease_seconds = lease_seconds or _setting("CHANGEGATE_LEASE_SECONDS")
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


def _fenced(lease: Lease) -> Execution:
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
    gives the lease back. Caller holds the row lock (`_fenced`)."""
    if to not in EXECUTION_TRANSITIONS.get(execution.state, frozenset()):
        raise ValueError(f"execution {execution.pk} is {execution.state}; it cannot move to {to}")
    execution.state = to
    if to == E.DONE:
        execution.outcome, execution.finished_at, execution.lease_expires_at = outcome, timezone.now(), None
    execution.save()


def _log(execution: Execution, lease: Lease, what: str, **detail: Any) -> None:
    execution.log = [*execution.log, {"at": timezone.now().isoformat(), "worker": lease.worker, "what": what, **detail}]


@retry_on_contention
def _move(lease: Lease, to: str, *, action: str, payload: dict[str, Any] | None = None,
          execution_fields: dict[str, Any] | None = None) -> ChangeRequest:
    """Fenced state change of the change (and its execution) in one transaction."""
    with transaction.atomic():
        execution = _fenced(lease)
        change = execution.change
        if _withdrawn(execution, lease):
            return change
        payload = {"execution": execution.pk, "worker": lease.worker, "token": lease.token, **(payload or {})}
        transition(change, to, actor=None, origin=SYSTEM, action=action, payload=payload)
        for field, value in (execution_fields or {}).items():
            setattr(execution, field, value)
        # A new phase starts its own count of transient failures.
        execution.retries, execution.retrying_since, execution.retry_at = 0, None, None
        _log(execution, lease, action, to=to)
        if to in TERMINAL or to == State.DRIFTED:
            execution_advance(execution, E.DONE, outcome=to)
            transaction.on_commit(lambda: _wake_next(change.target_id))
        else:
            execution_advance(execution, EXECUTION_STATE_OF[to])
        if to in NOTIFY:
            recipients = [change.author, *reviewers_of(change.target)]
            alert(event=to, change=change, recipients=recipients, detail=payload)
    return change


@retry_on_contention
def _start_apply(lease: Lease, change: ChangeRequest) -> ChangeRequest:
    """approved -> applying, but only while the approvals still count. Approvals
    expire, and an approved change may wait long for its turn (a frozen target, a
    queue): the check is made here, under the execution's fence and the change's row
    lock, in the very transaction that starts the apply, so nothing between it and
    the send can revive a lapsed approval. If they no longer count, the change goes
    back for review (approved -> pending_approval) and this execution ends without
    touching the target. A break-glass change is exempt: its authority is the
    emergency record, not approvals."""
    from approvals.policy import approvals_required, approvals_valid  # approvals.policy imports this module

    with transaction.atomic():
        execution = _fenced(lease)
        locked = execution.change
        if _withdrawn(execution, lease):
            return locked
        if locked.state != State.APPROVED:  # pragma: no cover - _drive only calls this for approved changes
            raise LeaseLost(f"change #{locked.pk} is {locked.state}, not approved")
        if not locked.emergency:
            valid = approvals_valid(locked).count()
            required = approvals_required(locked)
            if valid < required:
                payload = {"execution": execution.pk, "worker": lease.worker, "token": lease.token,
                           "fingerprint": locked.fingerprint, "valid_approvals": valid, "required": required,
                           "why": "approvals expired or were invalidated before the apply started"}
                transition(locked, State.PENDING_APPROVAL, actor=None, origin=SYSTEM, action="approval_lapsed",
                           payload=payload)
                _log(execution, lease, "approval_lapsed", to=State.PENDING_APPROVAL)
                execution_advance(execution, E.DONE, outcome=Execution.Outcome.APPROVAL_LAPSED)
                transaction.on_commit(lambda: _wake_next(locked.target_id))
                alert(event="approval_lapsed", change=locked, recipients=[locked.author, *reviewers_of(locked.target)],
                      detail=payload)
                return locked
        payload = {"execution": execution.pk, "worker": lease.worker, "token": lease.token,
                   "fingerprint": locked.fingerprint}
        transition(locked, State.APPLYING, actor=None, origin=SYSTEM, action="apply_started", payload=payload)
        _log(execution, lease, "apply_started", to=State.APPLYING)
        execution.retries, execution.retrying_since = 0, None
        execution_advance(execution, E.APPLYING)
    return locked


NOTIFY = {State.APPLIED, State.DRIFTED, State.ROLLED_BACK, State.ROLLBACK_FAILED, State.APPLY_FAILED}


def _withdrawn(execution: Execution, lease: Lease) -> bool:
    """Whether the change was cancelled while this worker read the zone unlocked
    (cancel is allowed while a change is approved, and the re-plan read runs outside
    any transaction so a slow DNS server never holds a row lock). Then the attempt
    ends here, target untouched, instead of crashing on a move the state machine
    forbids. Caller holds the locks (`_fenced`)."""
    if execution.change.state != State.CANCELLED:
        return False
    _log(execution, lease, "withdrawn", to=State.CANCELLED)
    execution_advance(execution, E.DONE, outcome=Execution.Outcome.CANCELLED)
    target_id = execution.change.target_id
    transaction.on_commit(lambda: _wake_next(target_id))
    return True


@retry_on_contention
def _release(lease: Lease, *, hold_reason: str = "", error: str = "", retry_in: float | None = None) -> Execution:
    """Give the lease back without finishing: a hold, or a transient failure (counted
    in `retries`; no claim before `retry_in` seconds). A hold is audited when it
    starts or its reason changes, not on every sweep that finds it still held."""
    with transaction.atomic():
        execution = _fenced(lease)
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
            _log(execution, lease, "released", hold_reason=hold_reason, error=error)
        execution_advance(execution, E.PENDING)
        if hold_reason and hold_reason != held_before:
            audit_record(actor=None, origin=SYSTEM, action="execution_held", change=execution.change,
                         payload={"execution": execution.pk, "reason": hold_reason})
    return execution


def _wake_next(target_id: int) -> None:
    following = Execution.objects.filter(target_id=target_id, state=E.PENDING).order_by("pk").first()
    if following is not None:
        publish(following.pk)


# ---------------------------------------------------------------------------
# The run


def execution_run(*, execution_id: int, worker: str | None = None, bake: Any = None) -> str:
    """Claim the execution and drive its change to a terminal state (or a hold).
    Safe to call any number of times for the same execution, from any worker:
    it resumes from the change's state and every apply is a compare-and-swap."""
    worker = worker or worker_id()
    lease = execution_claim(execution_id=execution_id, worker=worker)
    if lease is None:
        return "not-claimed"
    execution = Execution.objects.select_related("change__target").get(pk=execution_id)
    change = execution.change
    if change.state in TERMINAL or change.state == State.DRIFTED or change.state == State.CANCELLED:
        with transaction.atomic():
            execution_advance(_fenced(lease), E.DONE, outcome=change.state)
        _wake_next(change.target_id)
        return change.state
    target = change.target
    if target.frozen:
        _release(lease, hold_reason=f"target {target.name} is frozen")
        return "held"
    _resume(lease, change)
    plan = Plan.from_json(change.plan)
    try:
        with log_context(change_id=change.pk):
            try:
                # Building the adapter reads the key file: a key deleted or replaced by
                # something that is not a key fails here, before anything is sent.
                adapter = adapter_for(target)
            except AdapterError as exc:
                return _adapter_failed(lease, exc)
            try:
                logger.info("execution %s claimed by %s (token %s), change is %s", execution_id, worker,
                            lease.token, change.state)
                # The apply, the bake's rounds and the rollback's retries may each
                # outlast the lease: renewed in the background until _drive returns.
                with LeaseHeartbeat(lease):
                    return _drive(lease, change, plan, adapter, bake=bake)
            except AdapterError as exc:
                # Whatever the steps did not handle themselves (a bad key answered with
                # BADSIG on the re-plan read, a refusal): classified here, once, by the
                # adapter's own verdict, never left to escape the task and loop.
                return _adapter_failed(lease, exc)
            finally:
                adapter.close()
    except LeaseLost:
        logger.warning("lease lost on execution %s; stopping", execution_id)
        return "lease-lost"


@retry_on_contention
@retry_on_contention
def _resume(lease: Lease, change: ChangeRequest) -> None:
    """After the claim: the attempt goes ahead, so a hold is over, and a worker that
    takes over mid-way mirrors the change's phase (the claim left it CLAIMED)."""
    mirrored = EXECUTION_STATE_OF.get(change.state)
    if mirrored is None and not Execution.objects.filter(pk=lease.execution_id, hold_reason__gt="").exists():
        return  # the usual case: a fresh attempt, nothing to write
    with transaction.atomic():
        execution = _fenced(lease)
        if execution.hold_reason:
            _log(execution, lease, "hold_ended", hold_reason=execution.hold_reason)
            execution.hold_reason = ""
        if mirrored is not None:
            execution_advance(execution, mirrored)
        else:
            execution.save()


def _adapter_failed(lease: Lease, exc: AdapterError) -> str:
    """End the attempt on an adapter error nobody handled closer to the call. A
    transient one (server unreachable) is retried with a bound; a permanent one (bad
    key, refused, not authoritative) will not get better by retrying: the change
    fails with the reason, audited and alerted once, and the attempt is done."""
    state = ChangeRequest.objects.values_list("state", flat=True).get(pk=Execution.objects.values_list(
        "change_id", flat=True).get(pk=lease.execution_id))
    if not exc.permanent:
        if state in (State.APPROVED, State.APPLYING):
            return _transient(lease, exc.message, fail_to=State.APPLY_FAILED)
        retrying = _rollback_retry(lease, exc.message)  # the change is live: bounded by time, like a rollback
        if retrying is not None:
            return retrying
    payload = {"error": exc.message, "permanent": exc.permanent, "error_kind": type(exc).__name__}
    if state in (State.APPROVED, State.APPLYING):
        _move(lease, State.APPLY_FAILED, action="apply_failed", payload=payload,
              execution_fields={"error": exc.message})
        return State.APPLY_FAILED
    if state == State.VERIFYING:  # live, and it cannot be checked: undo it (which will fail the same way, loudly)
        _move(lease, State.ROLLING_BACK, action="rollback_started", payload=payload)
    _move(lease, State.ROLLBACK_FAILED, action="rollback_failed", payload=payload,
          execution_fields={"error": exc.message})
    return State.ROLLBACK_FAILED


def _drive(lease: Lease, change: ChangeRequest, plan: Plan, adapter: Adapter, *, bake: Any) -> str:
    state = change.state
    if state == State.APPROVED:
        # The re-plan just before applying: the zone must still be what was approved.
        try:
            live = adapter.read(plan.keys())
        except TransientError as exc:
            return _transient(lease, f"re-plan read failed: {exc.message}", fail_to=State.APPLY_FAILED)
        moved = [str(s.key) for s in plan.steps if live.get(s.key) != s.before]
        if moved:
            return _drifted(lease, change, moved, {str(k): (v.to_json() if v else None) for k, v in live.items()})
        change = _start_apply(lease, change)
        state = change.state
    if state == State.APPLYING:
        crashpoint("before_send")
        try:
            result = adapter.apply(plan)
        except DriftError as exc:
            return _drifted(lease, change, [str(k) for k in exc.keys],
                            {str(k): (v.to_json() if v else None) for k, v in exc.live.items()})
        except TransientError as exc:
            return _transient(lease, exc.message, fail_to=State.APPLY_FAILED)
        crashpoint("after_send")
        _baseline_follow(change.target, plan)
        change = _move(lease, State.VERIFYING, action="change_applied",
                       payload={"result": result.to_json(), "fingerprint": change.fingerprint},
                       execution_fields={"apply_result": result.to_json(), "applied_at": timezone.now()})
        state = change.state
    if state == State.VERIFYING:
        ok, failed = _bake(lease, change, plan, adapter, bake=bake, phase="apply")
        if ok:
            _move(lease, State.APPLIED, action="change_verified", payload={"checks": "passed"})
            return State.APPLIED
        change = _move(lease, State.ROLLING_BACK, action="rollback_started",
                       payload={"failed_checks": [f.to_json() for f in failed]})
        state = change.state
    if state == State.ROLLING_BACK:
        return _rollback(lease, change, plan, adapter)
    return state


def _baseline_follow(target: Target, plan: Plan) -> None:
    """Move the out-of-band baseline along with a plan this worker just sent, so
    changegate's own change is never reported as out-of-band. Done right after the
    send, while the execution is still RUNNING (checks skip the target until then):
    after the ROLLED_BACK move the execution is done, and a check in between would
    compare the rolled-back zone with a baseline still holding the change. A
    failure here must not fail the change, which is live: logged, and the next check
    then reports it as out-of-band (erring on the side of telling)."""
    try:
        oob_baseline_apply(target=target, plan=plan)
    except Exception:
        logger.exception("could not move the out-of-band baseline of %s", target.name)


def _transient(lease: Lease, message: str, *, fail_to: str | None = None) -> str:
    """A transient failure before anything was sent: retried MAX_TRANSIENT_ATTEMPTS
    times in all (counted per attempt, not per claim: a held attempt is claimed on
    every sweep), then the change fails with the last error."""
    failures = Execution.objects.values_list("retries", flat=True).get(pk=lease.execution_id) + 1
    if fail_to is not None and failures >= MAX_TRANSIENT_ATTEMPTS:
        _move(lease, fail_to, action="apply_failed",
              payload={"error": message, "permanent": False, "retries": failures},
              execution_fields={"error": message})
        return fail_to
    delay = _setting("CHANGEGATE_RETRY_DELAY_SECONDS") * failures
    _release(lease, error=message, retry_in=delay)
    publish(lease.execution_id, countdown=delay)
    return "retrying"


def _drifted(lease: Lease, change: ChangeRequest, moved: list[str], live: dict[str, Any]) -> str:
    from approvals.policy import approvals_invalidate

    with transaction.atomic():
        _fenced(lease)
        approvals_invalidate(change=change, reason="the live zone drifted from the approved plan")
    moved_change = _move(lease, State.DRIFTED, action="change_drifted", payload={"moved": moved, "live": live},
                         execution_fields={"error": f"drift: {', '.join(moved)}"})
    return moved_change.state


@retry_on_contention
def _store_round(lease: Lease, change: ChangeRequest, phase: str, round_no: int, outcomes: list[Any]) -> None:
    crashpoint("during_checks")
    # The rows and their audit event in one transaction: the exported log carries
    # every health-check result (PCI DSS 10.2.2), chained like everything else.
    # Locks: the execution (renewal), its rows, the audit head last (changes.locking).
    with transaction.atomic():
        lease_renew(lease)
        rows = CheckResult.objects.bulk_create([
            CheckResult(execution_id=lease.execution_id, phase=phase, round=round_no, name=o.name[:300], kind=o.kind,
                        ok=o.ok, detail=o.detail, duration_ms=o.duration_ms)
            for o in outcomes
        ])
        audit_record(actor=None, origin=SYSTEM, action="checks_round", change=change,
                     outcome="passed" if all(row.ok for row in rows) else "failed", payload={
            "execution": lease.execution_id, "worker": lease.worker, "token": lease.token, "phase": phase,
            "round": round_no, "ok": all(row.ok for row in rows),
            "results": [{"name": row.name, "kind": row.kind, "ok": row.ok, "detail": row.detail,
                         "duration_ms": row.duration_ms} for row in rows],
        })


def _bake(lease: Lease, change: ChangeRequest, plan: Plan, adapter: Adapter, *, bake: Any, phase: str) -> tuple[bool, list[Any]]:
    from . import checks

    policy = checks.BakePolicy(bake_seconds=float(change.target.bake_seconds))
    declared = [*change.target.health_checks, *change.health_checks]
    result = (bake or checks.bake)(
        adapter=adapter, plan=plan, checks=declared, policy=policy,
        on_round=lambda round_no, outcomes: _store_round(lease, change, phase, round_no, outcomes),
    )
    return result.ok, list(result.failed)


def _rollback_retry(lease: Lease, message: str) -> str | None:
    """The server did not answer the rollback (nothing is known to have changed): give
    the lease back and try again after a backoff (CHANGEGATE_RETRY_DELAY_SECONDS
    doubling, at most ROLLBACK_BACKOFF_MAX_SECONDS), for CHANGEGATE_ROLLBACK_RETRY_SECONDS from
    the first failure. Releasing instead of sleeping keeps the worker free and the
    retry durable (the sweep or any worker resumes it); the attempt stays first in
    line on its target, so nothing else is applied meanwhile. None: time is up."""
    execution = Execution.objects.only("retries", "retrying_since").get(pk=lease.execution_id)
    now = timezone.now()
    since = execution.retrying_since or now
    if (now - since).total_seconds() >= _setting("CHANGEGATE_ROLLBACK_RETRY_SECONDS"):
        return None
    delay = min(_setting("CHANGEGATE_RETRY_DELAY_SECONDS") * 2 ** execution.retries, ROLLBACK_BACKOFF_MAX_SECONDS)
    _release(lease, error=f"rollback: {message}", retry_in=delay)
    publish(lease.execution_id, countdown=delay)
    return "retrying"


def _rollback(lease: Lease, change: ChangeRequest, plan: Plan, adapter: Adapter) -> str:
    inverse = plan.inverse()
    try:
        result = adapter.apply(inverse)
    except TransientError as exc:
        retrying = _rollback_retry(lease, exc.message)
        if retrying is not None:
            return retrying
        since = Execution.objects.values_list("retrying_since", flat=True).get(pk=lease.execution_id)
        waited = int((timezone.now() - since).total_seconds()) if since else 0
        return _rollback_failed(lease, plan, adapter, f"{exc.message} (no answer for {waited}s; gave up)")
    except AdapterError as exc:  # an answer that refuses, or drift: somebody else's change is live now
        return _rollback_failed(lease, plan, adapter, exc.message)
    return _rolled_back(lease, change, inverse, adapter, result)


def _rollback_failed(lease: Lease, plan: Plan, adapter: Adapter, error: str) -> str:
    try:
        live = adapter.read(plan.keys())
    except AdapterError:
        live = {}
    _move(lease, State.ROLLBACK_FAILED, action="rollback_failed",
          payload={"error": error, "live": {str(k): (v.to_json() if v else None) for k, v in live.items()},
                   "plan": plan.to_json()},
          execution_fields={"error": error})
    return State.ROLLBACK_FAILED


def _rolled_back(lease: Lease, change: ChangeRequest, inverse: Plan, adapter: Adapter, result: Any) -> str:
    _baseline_follow(change.target, inverse)  # the primary holds it now, whether or not it verifies
    report = adapter.verify(inverse)
    if not report.ok:
        failures = [f"{c.server} {c.key}" for c in report.failures()]
        _move(lease, State.ROLLBACK_FAILED, action="rollback_failed",
              payload={"error": "rollback did not verify", "failures": failures},
              execution_fields={"rollback_result": result.to_json(), "error": "rollback did not verify"})
        return State.ROLLBACK_FAILED
    _move(lease, State.ROLLED_BACK, action="change_rolled_back", payload={"result": result.to_json()},
          execution_fields={"rollback_result": result.to_json()})
    return State.ROLLED_BACK
