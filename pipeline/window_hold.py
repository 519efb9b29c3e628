"""The worker's side of change windows (issue 16): after the claim, an approved change
whose target's window is closed waits for it, and a break-glass change goes ahead
with the audit log saying it ignored the window. The rule itself (when is a window
open, the reason text) is `pipeline.windows`; this module only holds or records."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from audit.chain import SYSTEM, audit_record
from changes.models import AuditEvent, ChangeRequest, Execution
from pipeline.execution import E, Lease, fenced, lease_release, publish
from pipeline.outbox import alert
from pipeline.windows import always_open, wait_for, window_now

# With no opening within pipeline.windows.HORIZON, look again daily (the windows may be edited).
NEVER_OPENS_RECHECK = timedelta(days=1)
# A Celery countdown is held in a worker's memory (and redelivered by redis after its
# visibility timeout): a longer wait is woken by the sweep once `retry_at` has passed.
COUNTDOWN_MAX_SECONDS = 3600
HOLD_REASON_MAX = 300  # Execution.hold_reason's length, as lease_release cuts it


def window_gate(lease: Lease, change: ChangeRequest) -> bool:
    """True when the attempt was released to wait for the change window: the
    execution is held with the reason text and not claimed again before the window
    opens (`retry_at`, set without counting as a transient failure), and a wake-up
    is published for that instant. Only a change not started yet (approved) waits:
    one a worker resumes mid-apply or mid-bake finishes whatever the window says."""
    windows = change.target.change_windows
    if change.state != ChangeRequest.State.APPROVED or always_open(windows):
        return False
    clock = window_now()
    wait = wait_for(windows, clock)
    if wait is None:
        return False
    if change.emergency or change.reverts_id is not None:
        # Break-glass, and a revert of a young change (it puts back what was live
        # before an approved change, possibly one that went in just before the window
        # closed): neither waits for the next window, and the log says so.
        _record_ignored(lease, change, wait.reason, wait.runs_at)
        return False
    delay = (wait.runs_at - clock) if wait.runs_at is not None else NEVER_OPENS_RECHECK
    reason = wait.reason[:HOLD_REASON_MAX]
    with transaction.atomic():
        held_before = fenced(lease).hold_reason
        execution = lease_release(lease, hold_reason=reason)
        # retry_at, not lease_release(retry_in=...): a wait is not a transient failure and
        # must not use up the retry bound or show as one (Execution.retries).
        Execution.objects.filter(pk=execution.pk).update(retry_at=timezone.now() + delay)
        # Once per hold, like lease_release's execution_held: a sweep or a stray wake-up
        # that finds the same wait records nothing new.
        if reason != held_before:
            runs_at = wait.runs_at.isoformat() if wait.runs_at else None
            audit_record(actor=None, origin=SYSTEM, action="change_window_wait", change=change,
                         payload={"execution": execution.pk, "reason": wait.reason, "runs_at": runs_at})
            # The author expected it to go in now: say when it will instead (once per wait).
            alert(event="waiting_for_window", change=change, recipients=[change.author],
                  detail={"reason": wait.reason, "runs_at": runs_at})
        seconds = delay.total_seconds()
        if wait.runs_at is not None and seconds <= COUNTDOWN_MAX_SECONDS:
            # A little after retry_at, so the claim does not find it still backing off.
            transaction.on_commit(lambda: publish(execution.pk, countdown=seconds + 0.5))
    return True


def _record_ignored(lease: Lease, change: ChangeRequest, reason: str, runs_at: datetime | None) -> None:
    with transaction.atomic():
        locked = fenced(lease).change
        # Once per change: a worker resuming after a crash before the apply started
        # does not record it again.
        if AuditEvent.objects.filter(change=locked, action="change_window_ignored").exists():
            return
        why = "break-glass" if locked.emergency else f"a revert of #{locked.reverts_id}"
        payload = {"change_window": f"ignored ({why}): {reason}",
                   "window_opens_at": runs_at.isoformat() if runs_at else None}
        if locked.emergency:
            payload["emergency_reason"] = locked.emergency_reason
        else:
            payload["reverts"] = locked.reverts_id
        audit_record(actor=None, origin=SYSTEM, action="change_window_ignored", change=locked, payload=payload)


def window_holds_recheck(*, target_id: int) -> list[int]:
    """Call in the transaction that changes a target's `change_windows`: attempts held
    for the old windows (their `retry_at` is the old opening) are claimed again now and
    judged by the new ones, instead of waiting for an opening that may have moved.
    Returns the execution ids woken."""
    # A window hold is the only hold with a retry_at (a frozen hold has none, a backoff no hold_reason).
    held = Execution.objects.filter(target_id=target_id, state=E.PENDING, hold_reason__gt="", retry_at__isnull=False)
    ids = list(held.values_list("pk", flat=True))
    if ids:
        Execution.objects.filter(pk__in=ids).update(retry_at=None)
        for execution_id in ids:
            transaction.on_commit(lambda execution_id=execution_id: publish(execution_id))
    return ids
