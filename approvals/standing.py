"""Which approvals of a change count, and how many it needs. Read by the policy,
by the worker's re-check before it applies (pipeline.execution) and by selectors;
it sits below the pipeline in the import order, so the pipeline never reaches up
into the policy that publishes to it."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone

from approvals.models import Approval
from changes.models import ChangeRequest


def approvals_required_parts(change: ChangeRequest) -> list[tuple[int, str]]:
    """Why a change needs the approvals it needs, as (count, reason) parts: the
    target's N, plus one for a plan with risk flags (however many flags). The one
    rule: `approvals_required` is their sum, and pages show the parts."""
    parts = [(change.target.required_approvals, "for the target")]
    if change.risk_flags:
        flags = ", ".join(f"'{flag}'" for flag in change.risk_flags)
        parts.append((1, f"for the risk flag{'s' if len(change.risk_flags) > 1 else ''} {flags}"))
    return parts


def approvals_required(change: ChangeRequest) -> int:
    """The target's N, plus one for a plan with risk flags (`approvals_required_parts`)."""
    return sum(count for count, _ in approvals_required_parts(change))


def approvals_valid(change: ChangeRequest, *, now: datetime | None = None) -> QuerySet[Approval]:
    """Approvals that count: not invalidated, for the current plan, not expired."""
    return change.approvals.filter(
        invalidated_at__isnull=True, fingerprint=change.fingerprint, expires_at__gt=now or timezone.now()
    )


def approvals_of(change: ChangeRequest) -> QuerySet[Approval]:
    """Every approval ever given on the change, oldest first (valid or not)."""
    return change.approvals.select_related("approver").order_by("created_at", "pk")


def approvals_invalidate(*, change: ChangeRequest, reason: str) -> int:
    """Kill every live approval of `change` (an edit, a different re-plan, drift).
    Runs inside the caller's transaction."""
    return change.approvals.filter(invalidated_at__isnull=True).update(
        invalidated_at=timezone.now(), invalidated_reason=reason[:200]
    )
