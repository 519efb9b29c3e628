"""Where a change is in its life right now and until when (issue 16): the one answer
the API (`phase`), the change page and `changegate wait` give, so a person sees the
same "baking, 14 min left" everywhere.

Read-only and cheap: computed from the change, its latest attempt and the bake rule
(pipeline.bake_time); no query of its own beyond what the caller passes in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from changes.models import ChangeRequest, Execution
from pipeline.bake_time import bake_for, duration_text

S = ChangeRequest.State


@dataclass(frozen=True)
class Phase:
    """`name`: draft, pending_approval, drifted, waiting (approved, held: a change
    window, a frozen target, a retry's backoff), queued, applying, baking,
    rolling_back, watching (applied, inside its watch window) or done."""

    name: str
    text: str
    until: datetime | None = None
    seconds_left: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "text": self.text, "until": self.until.isoformat() if self.until else None,
                "seconds_left": self.seconds_left}


def _left(until: datetime | None, now: datetime) -> int | None:
    return None if until is None else max(0, int((until - now).total_seconds() + 0.999))


def _phase(name: str, text: str, until: datetime | None, now: datetime) -> Phase:
    left = _left(until, now)
    if left is not None:
        text = f"{text} ({duration_text(left)} left)"
    return Phase(name=name, text=text, until=until, seconds_left=left)


def watching(change: ChangeRequest, now: datetime | None = None) -> bool:
    """Applied and inside its watch window, still being checked (pipeline.watch ends
    it early on a failure, a later change on the target or a revert)."""
    now = now or timezone.now()
    return (change.state == S.APPLIED and change.watch_until is not None and now < change.watch_until
            and change.watch_next_at is not None)


def change_phase(change: ChangeRequest, execution: Execution | None, *, now: datetime | None = None,
                 reverted: bool = False) -> Phase:
    """The phase of `change`, whose latest attempt is `execution` (None: never approved);
    `reverted`: a revert of it stands (changes.services.reverts.standing_revert)."""
    now = now or timezone.now()
    state = change.state
    if state == S.APPROVED:
        if execution is not None and execution.hold_reason:
            return _phase("waiting", f"approved, waiting: {execution.hold_reason}", execution.retry_at, now)
        if execution is not None and execution.retry_at is not None and execution.retry_at > now:
            return _phase("waiting", f"approved, retrying after: {execution.error or 'a transient failure'}",
                          execution.retry_at, now)
        return Phase(name="queued", text="approved, waiting for a worker")
    if state == S.APPLYING:
        return Phase(name="applying", text="applying")
    if state == S.VERIFYING:
        bake = bake_for(change, change.target)
        applied_at = execution.applied_at if execution is not None else None
        until = applied_at + timedelta(seconds=bake.seconds) if applied_at else None
        return _phase("baking", f"baking: {bake.why}", until, now)
    if state == S.ROLLING_BACK:
        return Phase(name="rolling_back", text="rolling back")
    if state == S.APPLIED and reverted:
        return Phase(name="done", text="applied, then reverted")
    if state == S.APPLIED and watching(change, now):
        return _phase("watching", f"applied, watching (checks every {change.target.watch_interval_seconds} s); "
                                  "its author or an approver may revert it alone until the window ends",
                      change.watch_until, now)
    if state == S.APPLIED and change.watch_until is not None and now < change.watch_until:
        # The watch stopped early (a check failed on a target that only alerts, or a
        # later change superseded it): no more rounds, but the window still allows a
        # one-person revert.
        return _phase("done", "applied; its watch stopped early, and its author or an approver may still revert "
                              "it alone until the window ends", change.watch_until, now)
    if state in (S.DRAFT, S.PENDING_APPROVAL, S.DRIFTED):
        return Phase(name=state, text=state.replace("_", " "))
    return Phase(name="done", text=state.replace("_", " "))
