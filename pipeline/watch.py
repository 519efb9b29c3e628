"""The watch window after `applied` (issue 16): the declared checks keep running, at
the target's lower rate, for a while after the bake passed, because some failures
show late (a resolver's cache of the old answer runs out 20 minutes after the
change). A failure in the window alerts the author and the approvers with the diff
and, where the target allows it, reverts the change (changes.services.reverts).

`watch_span` is the one rule for how long; the worker opens the window as the bake
passes (`watch_start`, pipeline.run), the beat's task runs `watch_sweep`, and the
pages show `watch_text`. While the window runs, the author or one approver may also
revert the change alone (changes.services.reverts.may_revert).

Races: a round is claimed with a conditional UPDATE of `watch_next_at` (the
Healthchecks pattern): two sweeps never run the same round, and a sweep that dies
mid-round gives it back when the claim's time is up. The result is stored under the
change's row lock and only while the claim is still the one this sweep made, so a
revert or a superseding change that ended the watch meanwhile is not overwritten.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from adapters import AdapterError, Plan
from audit.chain import SYSTEM, audit_record
from changes.adapters import adapter_for
from changes.errors import ServiceError
from changes.lifecycle import lock_change
from changes.models import LEASED, ChangeRequest, CheckResult, Execution
from changes.selectors import change_diff
from changes.services.reverts import change_revert, counted_approvals
from pipeline import checks
from pipeline.bake_time import bake_for, duration_text
from pipeline.check_rounds import check_round_store
from pipeline.check_specs import round_deadline_seconds
from pipeline.execution import worker_id
from pipeline.outbox import alert

logger = logging.getLogger(__name__)
State = ChangeRequest.State
PHASE = "watch"


# ---------------------------------------------------------------------------
# The rule, and what the pages say about it


def watch_span(change: ChangeRequest, target: Any) -> int:
    """Seconds the window lasts once the bake has passed: the target's
    `watch_seconds`, or (null) as long as the change's own bake (for DNS the
    TTL-derived span, pipeline.bake_time). 0: no window. A revert has none: it puts
    back what was live before, and undoing it alone would re-apply a change."""
    if getattr(change, "reverts_id", None) is not None:
        return 0
    if target.watch_seconds is not None:
        return int(target.watch_seconds)
    return int(bake_for(change, target).seconds)


def watch_start(change: ChangeRequest, target: Any, *, now: datetime) -> dict[str, Any]:
    """The change's fields that open its window as the bake passes at `now`
    ({} for no window): set by the worker in its move to applied."""
    span = watch_span(change, target)
    if span <= 0:
        return {}
    return {"watch_until": now + timedelta(seconds=span),
            "watch_next_at": now + timedelta(seconds=int(target.watch_interval_seconds)), "watch_failures": 0}


def watch_text(change: ChangeRequest, *, now: datetime | None = None) -> str:
    """One line for the change page and the API: the window to come, running or over."""
    target = change.target
    every = f"checks every {target.watch_interval_seconds} s"
    if change.watch_until is None:
        if change.state in (State.APPLIED, State.ROLLED_BACK, State.ROLLBACK_FAILED, State.APPLY_FAILED):
            return "not watched after the bake"
        span = watch_span(change, target)
        return (f"watched for {duration_text(span)} after the bake ({every})" if span
                else "not watched after the bake")
    until = timezone.localtime(change.watch_until).strftime("%Y-%m-%d %H:%M:%S %Z")
    if change.state == State.APPLIED and change.watch_next_at is not None and (now or timezone.now()) < change.watch_until:
        return f"watching until {until} ({every})"
    return f"watch window ended {until}"


# ---------------------------------------------------------------------------
# The sweep (the beat's changes.watch_applied task)


def watch_sweep(*, now: datetime | None = None) -> list[int]:
    """Run one round for every applied change whose window runs and whose next round
    is due (and one deciding round more for a check failing as the window ends).
    Returns the ids of the changes a round ran for."""
    now = now or timezone.now()
    due = (ChangeRequest.objects.filter(state=State.APPLIED, watch_next_at__isnull=False, watch_next_at__lte=now)
           .filter(Q(watch_until__gt=now) | Q(watch_failures__gt=0)).order_by("watch_next_at")
           .values_list("pk", "watch_next_at"))
    ran = []
    for change_id, due_at in list(due):
        try:
            if watch_round(change_id=change_id, due_at=due_at, now=now) not in ("not-claimed", "ended"):
                ran.append(change_id)
        except Exception:  # one change's trouble must not stop the others' watch; its claim runs out
            logger.exception("watch round of change #%s failed", change_id)
    return ran


def _claim(change_id: int, due_at: datetime, now: datetime, interval: int) -> datetime | None:
    # Moved past the round's longest run: a sweep that dies mid-round frees it then.
    claimed_until = now + timedelta(seconds=interval + round_deadline_seconds())
    taken = ChangeRequest.objects.filter(pk=change_id, state=State.APPLIED, watch_next_at=due_at).update(
        watch_next_at=claimed_until)
    return claimed_until if taken == 1 else None


def watch_round(*, change_id: int, due_at: datetime, now: datetime) -> str:
    """Claim, run and record one round of the change's watch. Returns what happened:
    not-claimed, ended (superseded by a later change), skipped (another change is
    being applied on the target), passed, failing, or failed (the watch decided)."""
    change = ChangeRequest.objects.select_related("target", "author").get(pk=change_id)
    target = change.target
    claimed = _claim(change_id, due_at, now, int(target.watch_interval_seconds))
    if claimed is None:
        return "not-claimed"
    execution = change.execution
    if execution is None:  # pragma: no cover - an applied change always has its attempt
        return _end(change_id, claimed, outcome="no attempt to record on")
    later = (Execution.objects.filter(target_id=target.pk, applied_at__gt=execution.applied_at)
             .exclude(change_id=change_id).order_by("pk").values_list("change_id", flat=True).first()
             if execution.applied_at else None)
    if later is not None:
        # Its plan is live over this one's: a verify would fail for the wrong reason.
        return _end(change_id, claimed, outcome="superseded", detail={"by": later})
    if Execution.objects.filter(target_id=target.pk, state__in=LEASED).exclude(change_id=change_id).exists():
        _reschedule(change_id, claimed, now + timedelta(seconds=int(target.watch_interval_seconds)))
        return "skipped"
    plan = Plan.from_json(change.plan)
    outcomes = _run(change, plan, applied_at=execution.applied_at)
    return _record(change_id, claimed, execution, outcomes, now=now)


def _run(change: ChangeRequest, plan: Plan, *, applied_at: datetime | None) -> list[checks.CheckOutcome]:
    declared = [*change.target.health_checks, *change.health_checks]
    try:
        adapter = adapter_for(change.target)
    except AdapterError as exc:  # the key file broke: the automatic check cannot run, which is a failure
        return [checks.CheckOutcome(name=f"verify {plan.zone}", kind="verify", ok=False,
                                    detail=f"the adapter could not be built: {exc.message}", duration_ms=0.0),
                *checks.run_round(adapter=None, plan=None, checks=declared, applied_at=applied_at)]
    try:
        return checks.run_round(adapter=adapter, plan=plan, checks=declared, applied_at=applied_at)
    finally:
        adapter.close()


def _identities(items: Sequence[Any]) -> list[tuple[str, str, int]]:
    """(kind, name, n-th of that name): one check followed across rounds, as the bake does."""
    seen: dict[tuple[str, str], int] = {}
    keys = []
    for item in items:
        name = item.name[:300]
        n = seen.get((item.kind, name), 0)
        seen[(item.kind, name)] = n + 1
        keys.append((item.kind, name, n))
    return keys


def _streaks(execution_id: int, round_no: int, outcomes: Sequence[Any]) -> list[int]:
    """Consecutive failed rounds of each outcome's check, this round included, read
    back from the stored rounds (threshold - 1 of them are enough)."""
    threshold = checks.DEFAULT_FAILURE_THRESHOLD
    earlier: dict[int, dict[tuple[str, str, int], bool]] = {}
    rows = list(CheckResult.objects.filter(execution_id=execution_id, phase=PHASE,
                                           round__gte=round_no - (threshold - 1), round__lt=round_no)
                .order_by("round", "pk"))
    for r in sorted({row.round for row in rows}):
        in_round = [row for row in rows if row.round == r]
        earlier[r] = {key: row.ok for key, row in zip(_identities(in_round), in_round, strict=True)}
    streaks = []
    for key, outcome in zip(_identities(outcomes), outcomes, strict=True):
        streak = 0
        if not outcome.ok:
            streak = 1
            for r in range(round_no - 1, round_no - threshold, -1):
                if earlier.get(r, {}).get(key, True):
                    break
                streak += 1
        streaks.append(streak)
    return streaks


def _still_ours(change_id: int, claimed: datetime) -> ChangeRequest | None:
    """Lock the change (then its target: the lock order) and prove the claim still
    stands: a revert or a later sweep's end of the watch took it otherwise."""
    locked = lock_change(ChangeRequest(pk=change_id))
    if locked.state != State.APPLIED or locked.watch_next_at != claimed:
        return None
    return locked


def _reschedule(change_id: int, claimed: datetime, next_at: datetime) -> None:
    ChangeRequest.objects.filter(pk=change_id, watch_next_at=claimed).update(watch_next_at=next_at)


def _end(change_id: int, claimed: datetime, *, outcome: str, detail: dict[str, Any] | None = None) -> str:
    with transaction.atomic():
        locked = _still_ours(change_id, claimed)
        if locked is not None:
            locked.watch_next_at = None
            locked.save(update_fields=["watch_next_at", "updated_at"])
            audit_record(actor=None, origin=SYSTEM, action="watch_ended", change=locked,
                         payload={"outcome": outcome, **(detail or {})})
    return "ended"


def _record(change_id: int, claimed: datetime, execution: Execution, outcomes: list[checks.CheckOutcome], *,
            now: datetime) -> str:
    with transaction.atomic():
        locked = _still_ours(change_id, claimed)
        if locked is None:
            return "not-claimed"
        target = locked.target
        round_no = (CheckResult.objects.filter(execution_id=execution.pk, phase=PHASE)
                    .aggregate(last=Max("round"))["last"] or 0) + 1
        streaks = _streaks(execution.pk, round_no, outcomes)
        failed = [o for o, streak in zip(outcomes, streaks, strict=True)
                  if streak >= checks.DEFAULT_FAILURE_THRESHOLD or (not o.ok and o.decisive)]
        check_round_store(change=locked, execution_id=execution.pk, worker=worker_id(), token=execution.token,
                          phase=PHASE, round_no=round_no, outcomes=outcomes)
        locked.watch_failures = min(max(streaks, default=0), 32767)
        if failed:
            locked.watch_next_at = None
            locked.save(update_fields=["watch_next_at", "watch_failures", "updated_at"])
            _failed(locked, failed, round_no)
            return "failed"
        next_at = now + timedelta(seconds=int(target.watch_interval_seconds))
        if next_at >= locked.watch_until and not locked.watch_failures:
            locked.watch_next_at = None  # the window is over and every check passes
            locked.save(update_fields=["watch_next_at", "watch_failures", "updated_at"])
            audit_record(actor=None, origin=SYSTEM, action="watch_ended", change=locked,
                         payload={"outcome": "passed", "rounds": round_no})
            return "passed"
        locked.watch_next_at = next_at
        locked.save(update_fields=["watch_next_at", "watch_failures", "updated_at"])
        return "failing" if locked.watch_failures else "passed"


def _failed(change: ChangeRequest, failed: list[checks.CheckOutcome], round_no: int) -> None:
    """The watch decided the change is bad: say so on the record, revert it if the
    target allows (as the system), and alert its author and approvers with the diff.
    In the caller's transaction, under the change's lock."""
    names = ", ".join(o.name for o in failed)
    payload: dict[str, Any] = {"failed_checks": [o.to_json() for o in failed], "round": round_no,
                               "auto_revert": bool(change.target.watch_auto_revert)}
    if change.target.watch_auto_revert:
        try:
            with transaction.atomic():  # a savepoint: a refused revert leaves the rest standing
                revert = change_revert(actor=None, change=change, reason=f"the watch window's checks failed: {names}")
        except ServiceError as exc:
            payload["revert_refused"] = exc.message
        else:
            payload["revert"] = revert.pk
    audit_record(actor=None, origin=SYSTEM, action="watch_failed", change=change, outcome="failed", payload=payload)
    plan = change.plan or {}
    people = [change.author, *(a.approver for a in counted_approvals(change).select_related("approver"))]
    alert(event="watch_check_failed", change=change, recipients=people,
          detail={**payload, "diff": change_diff(change), "steps": plan.get("steps", [])})
