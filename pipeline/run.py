"""What a worker does with an attempt it claimed: re-read live, apply conditional on
the approved plan, verify, bake with the health checks, roll back on failure, and
end the change in a state that says what happened. Every move goes through the
fenced helpers of `pipeline.execution`; this module holds the order of the steps
and how each adapter failure is classified."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import Subquery
from django.utils import timezone

from adapters import (
    Adapter,
    AdapterError,
    ApplyResult,
    DriftError,
    Plan,
    TransientError,
)
from adapters.errors import PartialApplyError, TargetReverted
from changes.adapters import adapter_for
from changes.locking import retry_on_contention
from changes.models import (
    EXECUTION_STATE_OF,
    TERMINAL,
    AuditEvent,
    ChangeRequest,
    Execution,
    Target,
)
from drift.sweep import oob_baseline_apply
from ops.logs import log_context
from pipeline import checks
from pipeline.bake_time import bake_for
from pipeline.check_rounds import check_round_store
from pipeline.execution import (
    MAX_TRANSIENT_ATTEMPTS,
    ROLLBACK_BACKOFF_MAX_SECONDS,
    E,
    Lease,
    LeaseLost,
    State,
    apply_start,
    attempt_log,
    change_move,
    execution_advance,
    execution_claim,
    fenced,
    lease_release,
    lease_renew,
    publish,
    setting,
    wake_next,
    worker_id,
)
from pipeline.faults import crashpoint
from pipeline.lease import LeaseHeartbeat
from pipeline.watch import watch_start
from pipeline.window_hold import window_gate

logger = logging.getLogger(__name__)


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
            execution_advance(fenced(lease), E.DONE, outcome=change.state)
        wake_next(change.target_id)
        return change.state
    target = change.target
    if target.frozen:
        lease_release(lease, hold_reason=f"target {target.name} is frozen")
        return "held"
    if window_gate(lease, change):  # outside the target's change window (break-glass goes on, audited)
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
def _resume(lease: Lease, change: ChangeRequest) -> None:
    """After the claim: the attempt goes ahead, so a hold is over, and a worker that
    takes over mid-way mirrors the change's phase (the claim left it CLAIMED)."""
    mirrored = EXECUTION_STATE_OF.get(change.state)
    if mirrored is None and not Execution.objects.filter(pk=lease.execution_id, hold_reason__gt="").exists():
        return  # the usual case: a fresh attempt, nothing to write
    with transaction.atomic():
        execution = fenced(lease)
        if execution.hold_reason:
            attempt_log(execution, lease, "hold_ended", hold_reason=execution.hold_reason)
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
        change_move(lease, State.APPLY_FAILED, action="apply_failed", payload=payload,
              execution_fields={"error": exc.message})
        return State.APPLY_FAILED
    if state == State.VERIFYING:  # live, and it cannot be checked: undo it (which will fail the same way, loudly)
        change_move(lease, State.ROLLING_BACK, action="rollback_started", payload=payload)
    change_move(lease, State.ROLLBACK_FAILED, action="rollback_failed", payload=payload,
          execution_fields={"error": exc.message})
    return State.ROLLBACK_FAILED


def _drive(lease: Lease, change: ChangeRequest, plan: Plan, adapter: Adapter, *, bake: Any) -> str:
    state = change.state
    resumed = state == State.APPLYING  # a worker died between apply_start and recording its send
    if state == State.APPROVED:
        # The re-plan just before applying: the zone must still be what was approved.
        try:
            live = adapter.read(plan.keys())
        except TransientError as exc:
            return _transient(lease, f"re-plan read failed: {exc.message}", fail_to=State.APPLY_FAILED)
        moved = [str(s.key) for s in plan.steps if live.get(s.key) != s.before]
        if moved:
            return _drifted(lease, change, moved, _live_json(live))
        change = apply_start(lease, change)
        state = change.state
    if state == State.APPLYING:
        crashpoint("before_send")
        if resumed and (how := adapter.reverted(plan)) is not None:
            return _sent_then_reverted(lease, change, plan, how)
        try:
            result = adapter.apply(plan)
        except DriftError as exc:
            return _drifted(lease, change, [str(k) for k in exc.keys], _live_json(exc.live))
        except PartialApplyError as exc:
            return _partially_applied(lease, exc)
        except TransientError as exc:
            return _transient(lease, exc.message, fail_to=State.APPLY_FAILED)
        crashpoint("after_send")
        _baseline_follow(change.target, plan)
        change = change_move(lease, State.VERIFYING, action="change_applied",
                       payload={"result": result.to_json(), "fingerprint": change.fingerprint},
                       execution_fields={"apply_result": result.to_json(), "applied_at": timezone.now()})
        state = change.state
    if state == State.VERIFYING:
        # A target that undid the change by itself (its commit-confirmed deadline
        # passed while no worker held the change) is not baked: nothing is live.
        if (how := adapter.reverted(plan)) is not None:
            return _reverted_by_target(lease, change, plan, how)
        ok, failed, rounds = _bake(lease, change, plan, adapter, bake=bake, phase="apply")
        if ok:
            try:
                confirmed = adapter.confirm(plan)
            except TargetReverted as exc:
                return _reverted_by_target(lease, change, plan, exc.message)
            payload: dict[str, Any] = {"checks": "passed"}
            if confirmed is not None:
                payload["confirmed"] = confirmed
            # The watch window starts as the bake passes (pipeline.watch has the rule).
            window = watch_start(change, change.target, now=timezone.now())
            if window:
                payload["watch_until"] = window["watch_until"].isoformat()
            change_move(lease, State.APPLIED, action="change_verified", payload=payload, change_fields=window)
            return State.APPLIED
        change = change_move(lease, State.ROLLING_BACK, action="rollback_started",
                             payload={"failed_checks": [f.to_json() for f in failed], "round": rounds})
        state = change.state
    if state == State.ROLLING_BACK:
        return _rollback(lease, change, plan, adapter)
    return state


def _live_json(live: dict[Any, Any]) -> dict[str, Any]:
    return {str(k): (v.to_json() if v else None) for k, v in live.items()}


def _partially_applied(lease: Lease, exc: PartialApplyError) -> str:
    """The target answered yes but dropped part of the update (read back right
    after the send). The adapter has already put `before` back where it could. If it
    did, nothing of the change is live: apply_failed, with what was dropped. If it
    could not, live holds neither the approved `before` nor `after` at some keys:
    rollback_failed, so a human is paged, never a claim that the target is
    untouched."""
    payload = {"error": exc.message, "error_kind": type(exc).__name__, "keys": [str(k) for k in exc.keys],
               "live": _live_json(exc.live), "restored": exc.restored, "elapsed_ms": round(exc.elapsed_ms, 1)}
    to = State.APPLY_FAILED if exc.restored else State.ROLLBACK_FAILED
    action = "apply_failed" if exc.restored else "rollback_failed"
    change_move(lease, to, action=action, payload=payload, execution_fields={"error": exc.message})
    return to


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
        change_move(lease, fail_to, action="apply_failed",
              payload={"error": message, "permanent": False, "retries": failures},
              execution_fields={"error": message})
        return fail_to
    delay = setting("CHANGEGATE_RETRY_DELAY_SECONDS") * failures
    lease_release(lease, error=message, retry_in=delay)
    publish(lease.execution_id, countdown=delay)
    return "retrying"


def _drifted(lease: Lease, change: ChangeRequest, moved: list[str], live: dict[str, Any]) -> str:
    """Live moved away from the approved plan: the approvals die and the change goes
    back to review in one transaction, so no reader ever sees a drifted change with
    approvals that still count, or dead approvals on a change still approved."""
    moved_change = change_move(
        lease, State.DRIFTED, action="change_drifted", payload={"moved": moved, "live": live},
        execution_fields={"error": f"drift: {', '.join(moved)}"},
        invalidate_approvals="the live zone drifted from the approved plan",
    )
    return moved_change.state


@retry_on_contention
def _store_round(lease: Lease, change: ChangeRequest, phase: str, round_no: int, outcomes: list[Any]) -> None:
    crashpoint("during_checks")
    # The rows and their audit event in one transaction: the exported log carries
    # every health-check result (PCI DSS 10.2.2), chained like everything else.
    # Locks: the execution (renewal), its rows, the audit head last (changes.locking).
    with transaction.atomic():
        lease_renew(lease)
        check_round_store(change=change, execution_id=lease.execution_id, worker=lease.worker, token=lease.token,
                          phase=phase, round_no=round_no, outcomes=outcomes)


def _bake(lease: Lease, change: ChangeRequest, plan: Plan, adapter: Adapter, *, bake: Any,
          phase: str) -> tuple[bool, list[Any], int]:

    policy = checks.BakePolicy(bake_seconds=float(bake_for(change, change.target).seconds))
    declared = [*change.target.health_checks, *change.health_checks]
    # The resolver checks' stale rule counts the old TTL from the recorded apply.
    applied_at = Execution.objects.values_list("applied_at", flat=True).get(pk=lease.execution_id)
    result = (bake or checks.bake)(
        adapter=adapter, plan=plan, checks=declared, policy=policy, applied_at=applied_at,
        on_round=lambda round_no, outcomes: _store_round(lease, change, phase, round_no, outcomes),
    )
    return result.ok, list(result.failed), result.rounds


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
    if (now - since).total_seconds() >= setting("CHANGEGATE_ROLLBACK_RETRY_SECONDS"):
        return None
    delay = min(setting("CHANGEGATE_RETRY_DELAY_SECONDS") * 2 ** execution.retries, ROLLBACK_BACKOFF_MAX_SECONDS)
    lease_release(lease, error=f"rollback: {message}", retry_in=delay)
    publish(lease.execution_id, countdown=delay)
    return "retrying"


def _rollback(lease: Lease, change: ChangeRequest, plan: Plan, adapter: Adapter) -> str:
    inverse = plan.inverse()
    try:
        if (how := adapter.reverted(plan)) is not None:  # the target was faster: `before` is live again
            return _reverted_by_target(lease, change, plan, how)
        result = adapter.rollback(plan)
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


def _sent_then_reverted(lease: Lease, change: ChangeRequest, plan: Plan, how: str) -> str:
    """The worker that died had sent the plan (the target armed its revert for it), and
    the target has undone it since, nobody having confirmed it. Sending again would
    re-apply what the target's safety net took back (after a lockout: lock out again):
    record the send, then end as the target left it."""
    sent = ApplyResult(applied=True, rcode="OK", detail="sent by a worker that died before recording it")
    change = change_move(lease, State.VERIFYING, action="change_applied",
                         payload={"result": sent.to_json(), "fingerprint": change.fingerprint},
                         execution_fields={"apply_result": sent.to_json()})
    return _reverted_by_target(lease, change, plan, how)


def _reverted_by_target(lease: Lease, change: ChangeRequest, plan: Plan, how: str) -> str:
    """The target put `before` back by itself (commit-confirmed revert): the change
    ends rolled back, saying so, and the drift baseline follows."""
    _baseline_follow(change.target, plan.inverse())
    if change.state == State.VERIFYING:
        change = change_move(lease, State.ROLLING_BACK, action="rollback_started", payload={"reverted_by_target": how})
    change_move(lease, State.ROLLED_BACK, action="change_rolled_back", payload={"reverted_by_target": how},
                execution_fields={"error": how})
    return State.ROLLED_BACK


def _rollback_cause(lease: Lease) -> dict[str, Any]:
    """Why this attempt is rolling back, as its `rollback_started` event recorded it
    (the failed checks and their round, or the target's own revert). Read from the
    audit log, not passed along: a rollback resumed by another worker after a crash
    must say why just the same."""
    change_id = Execution.objects.filter(pk=lease.execution_id).values("change_id")[:1]
    started = (AuditEvent.objects.filter(change_id=Subquery(change_id), action="rollback_started")
               .order_by("-seq").values_list("payload", flat=True).first()) or {}
    if started.get("execution") != lease.execution_id:
        return {}
    return {k: started[k] for k in ("failed_checks", "round", "reverted_by_target") if k in started}


def _rollback_failed(lease: Lease, plan: Plan, adapter: Adapter, error: str) -> str:
    try:
        live = adapter.read(plan.keys())
    except AdapterError:
        live = {}
    change_move(lease, State.ROLLBACK_FAILED, action="rollback_failed",
          payload={"error": error, "live": {str(k): (v.to_json() if v else None) for k, v in live.items()},
                   "plan": plan.to_json(), "because": _rollback_cause(lease)},
          execution_fields={"error": error})
    return State.ROLLBACK_FAILED


def _rolled_back(lease: Lease, change: ChangeRequest, inverse: Plan, adapter: Adapter, result: Any) -> str:
    _baseline_follow(change.target, inverse)  # the primary holds it now, whether or not it verifies
    report = adapter.verify(inverse)
    if not report.ok:
        failures = [f"{c.server} {c.key}" for c in report.failures()]
        change_move(lease, State.ROLLBACK_FAILED, action="rollback_failed",
              payload={"error": "rollback did not verify", "failures": failures, "because": _rollback_cause(lease)},
              execution_fields={"rollback_result": result.to_json(), "error": "rollback did not verify"})
        return State.ROLLBACK_FAILED
    change_move(lease, State.ROLLED_BACK, action="change_rolled_back",
                payload={"result": result.to_json(), "because": _rollback_cause(lease)},
          execution_fields={"rollback_result": result.to_json()})
    return State.ROLLED_BACK
