"""The four-eyes policy. Every entry point (API, admin, CLI, shell, tasks) asks
here; nothing else decides who may do what to a target."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from approvals.models import Approval
from approvals.standing import approvals_invalidate, approvals_of, approvals_required, approvals_valid  # noqa: F401
from audit.chain import SYSTEM, RequestOrigin, audit_record
from changes.errors import Conflict, InvalidTransition, NotPermitted, TargetUnavailable, ValidationFailed
from changes.lifecycle import lock_change, transition
from changes.locking import retry_on_contention
from changes.models import ChangeRequest

# Roles, operator checks and grants live in the one permissions module; re-exported
# here so every entry point can keep asking the policy.
from changes.permissions import (  # noqa: F401
    PERMISSIONS,
    ROLES,
    can_review,
    has_target_permission,
    require_no_self_grant,
    require_reviewer,
    require_target_permission,
    target_role_grant,
    target_role_revoke,
)
from changes.selectors import change_live_drift
from pipeline.execution import execution_create
from pipeline.outbox import alert, reviewers_of

# ---------------------------------------------------------------------------
# Four eyes. The only code that creates approvals or moves a change to approved.


class StaleFingerprint(Conflict):
    """The reviewer saw another plan than the one stored now."""

    code = "stale_fingerprint"

    def __init__(self, message: str, *, current: str) -> None:
        super().__init__(message)
        self.current = current

    def extra(self) -> dict[str, Any]:
        return {"current_fingerprint": self.current}


class PlanStale(Conflict):
    """The live zone no longer holds what the plan was read with: the diff the
    reviewer saw is not the one that would be applied. The author must re-plan."""

    code = "plan_stale"

    def __init__(self, message: str, *, moved: list[str]) -> None:
        super().__init__(message)
        self.moved = moved

    def extra(self) -> dict[str, Any]:
        return {"moved": self.moved}


def require_approval_mfa(origin: RequestOrigin) -> None:
    """With CHANGEGATE_APPROVAL_REQUIRES_MFA, approving (four-eyes, break-glass and
    its review) needs a session whose identity-provider sign-in reported multi-factor
    authentication. API tokens, the CLI and commands never carry it."""
    if settings.CHANGEGATE_APPROVAL_REQUIRES_MFA and not origin.mfa:
        raise NotPermitted("approving needs a multi-factor sign-in: sign in through the identity provider with "
                           "MFA and approve from that session (API tokens and passwords do not count)")


@retry_on_contention
def change_approve(
    *, actor: AbstractBaseUser, change: ChangeRequest, fingerprint: Any, comment: str = "",
    origin: RequestOrigin = SYSTEM,
) -> ChangeRequest:
    """Approve exactly the plan with `fingerprint`. When the target's count of
    distinct valid approvals is reached, the change becomes approved in this same
    transaction. Raises NotPermitted (author set, no permission), StaleFingerprint,
    InvalidTransition, Conflict (already approved by this person), PlanStale (the
    live zone moved since the plan was read), TargetUnavailable (it cannot be read)."""
    require_approval_mfa(origin)
    if not isinstance(fingerprint, str) or not fingerprint.strip():
        raise ValidationFailed([{"index": None, "field": "fingerprint",
                                 "message": "the fingerprint of the plan you reviewed is required"}])
    # The live re-read happens before the transaction: a DNS timeout must never hold
    # the change's row lock.
    checked = _require_plan_live(actor=actor, change=change, fingerprint=fingerprint.strip())
    with transaction.atomic():
        locked = lock_change(change)
        require_reviewer(actor, locked, "approve")
        require_no_self_grant(approver=actor, change=locked)
        if locked.state != ChangeRequest.State.PENDING_APPROVAL:
            raise InvalidTransition(f"change #{locked.pk} is {locked.state}; only pending changes can be approved")
        if fingerprint.strip() != locked.fingerprint:
            raise StaleFingerprint(
                f"the plan changed since you reviewed it; review the current plan {locked.fingerprint}",
                current=locked.fingerprint,
            )
        if checked != locked.fingerprint:
            # The plan was replaced (or the checks above started to pass) between the
            # live read and this lock: what was checked is not what would be approved.
            raise Conflict(f"change #{locked.pk} changed while its plan was checked against the live zone; "
                           "review it again")
        now = timezone.now()
        if approvals_valid(locked, now=now).filter(approver=actor).exists():
            raise Conflict(f"you already approved change #{locked.pk}")
        # An expired approval by the same person is replaced, not stacked.
        locked.approvals.filter(approver=actor, invalidated_at__isnull=True).update(
            invalidated_at=now, invalidated_reason="expired; renewed"
        )
        approval = Approval.objects.create(
            change=locked, approver=actor, author_id=locked.author_id, fingerprint=locked.fingerprint,
            comment=str(comment or "")[:2000], created_at=now,
            expires_at=now + timedelta(seconds=locked.target.approval_lifetime_seconds),
        )
        count, required = approvals_valid(locked, now=now).count(), approvals_required(locked)
        audit_record(actor=actor, origin=origin, action="approval_given", change=locked,
                     payload={"fingerprint": approval.fingerprint, "comment": approval.comment,
                              "expires_at": approval.expires_at.isoformat(), "count": count, "required": required,
                              # Whether the approver's session had a multi-factor IdP sign-in: an
                              # assessor reads it from the chain, whatever the setting was then.
                              "mfa": origin.mfa})
        if count >= required:
            approvers = list(approvals_valid(locked, now=now).values_list("approver__username", flat=True))
            transition(locked, ChangeRequest.State.APPROVED, actor=actor, origin=origin, action="change_approved",
                       payload={"fingerprint": locked.fingerprint, "approvers": approvers, "required": required})
            execution_create(change=locked)  # the outbox row, in the approving transaction
            alert(event="approved", change=locked, recipients=[locked.author, *reviewers_of(locked.target)],
                  detail={"approvers": approvers, "fingerprint": locked.fingerprint})
    return locked


def _require_plan_live(*, actor: AbstractBaseUser, change: ChangeRequest, fingerprint: str) -> str | None:
    """Re-read the live zone at the plan's keys and refuse when it no longer holds
    the plan's `before` (the same comparison as the change page: one rule,
    `change_live_drift`). Returns the fingerprint of the plan checked, or None when
    the request will be refused anyway by the checks change_approve repeats under
    the lock (so nobody can make the gateway query DNS for a change they may not
    approve)."""

    current = ChangeRequest.objects.select_related("target").filter(pk=change.pk).first()
    if (current is None or current.state != ChangeRequest.State.PENDING_APPROVAL
            or current.fingerprint != fingerprint or not can_review(actor, current)):
        return None
    try:
        rows = change_live_drift(current)
    except TargetUnavailable as exc:
        # Fail closed: an approval says "this diff against the live zone is right".
        # If the zone cannot be read, nobody can confirm the diff shown is still the
        # one that would be applied, so nothing is approved blind.
        raise TargetUnavailable(f"the live zone could not be read to confirm the plan is current, so it cannot "
                                f"be approved now: {exc.message}", permanent=exc.permanent) from None
    moved = [f"{row['name']} {row['type']}" for row in rows if not row["matches"]]
    if moved:
        raise PlanStale(f"the live zone changed since the plan was read ({', '.join(moved)}); "
                        f"change #{current.pk} must be re-planned before it can be approved", moved=moved)
    return current.fingerprint


@retry_on_contention
def change_reject(
    *, actor: AbstractBaseUser, change: ChangeRequest, comment: Any, origin: RequestOrigin = SYSTEM
) -> ChangeRequest:
    """End a pending change with a required comment saying why."""
    if not isinstance(comment, str) or not comment.strip():
        raise ValidationFailed([{"index": None, "field": "comment", "message": "say why the change is rejected"}])
    with transaction.atomic():
        locked = lock_change(change)
        require_reviewer(actor, locked, "reject")
        if locked.state != ChangeRequest.State.PENDING_APPROVAL:
            raise InvalidTransition(f"change #{locked.pk} is {locked.state}; only pending changes can be rejected")
        approvals_invalidate(change=locked, reason="change rejected")
        transition(locked, ChangeRequest.State.REJECTED, actor=actor, origin=origin, action="change_rejected",
                   payload={"comment": comment.strip(), "fingerprint": locked.fingerprint})
    return locked


# ---------------------------------------------------------------------------
# Break-glass: one person may apply alone, in the open, and a second person
# reviews it after the fact.


@retry_on_contention
def change_emergency(
    *, actor: AbstractBaseUser, change: ChangeRequest, reason: Any, origin: RequestOrigin = SYSTEM
) -> ChangeRequest:
    """Approve a draft or pending change alone, as an emergency. Needs
    emergency_change on the target and a written reason; alerts the target's
    reviewers and puts the change in the after-the-fact review queue."""
    require_approval_mfa(origin)
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationFailed([{"index": None, "field": "reason", "message": "say why this cannot wait for a second person"}])
    with transaction.atomic():
        locked = lock_change(change)
        require_target_permission(actor, "emergency_change", locked.target)
        require_no_self_grant(approver=actor, change=locked)
        if locked.state not in (ChangeRequest.State.DRAFT, ChangeRequest.State.PENDING_APPROVAL):
            raise InvalidTransition(f"change #{locked.pk} is {locked.state}; only draft or pending changes can be forced")
        if not (locked.plan or {}).get("steps"):
            raise InvalidTransition(f"change #{locked.pk} has nothing to do: the live zone already matches it")
        now = timezone.now()
        locked.emergency, locked.emergency_reason = True, reason.strip()
        locked.emergency_by, locked.emergency_at = actor, now
        if locked.state == ChangeRequest.State.DRAFT:
            locked.submitted_at = now
            transition(locked, ChangeRequest.State.PENDING_APPROVAL, actor=actor, origin=origin,
                       action="change_submitted", payload={"fingerprint": locked.fingerprint, "emergency": True})
        transition(locked, ChangeRequest.State.APPROVED, actor=actor, origin=origin, action="change_emergency_approved",
                   payload={"fingerprint": locked.fingerprint, "reason": locked.emergency_reason, "mfa": origin.mfa})
        execution_create(change=locked)
        alert(event="emergency_change", change=locked, recipients=reviewers_of(locked.target),
              detail={"by": actor.get_username(), "reason": locked.emergency_reason,
                      "fingerprint": locked.fingerprint})
    return locked


@retry_on_contention
def emergency_review(
    *, actor: AbstractBaseUser, change: ChangeRequest, comment: Any, origin: RequestOrigin = SYSTEM
) -> ChangeRequest:
    """The after-the-fact second pair of eyes on a break-glass change: anyone who
    may approve on the target, except the author set and whoever forced it."""
    require_approval_mfa(origin)
    if not isinstance(comment, str) or not comment.strip():
        raise ValidationFailed([{"index": None, "field": "comment", "message": "say what you checked"}])
    with transaction.atomic():
        locked = lock_change(change)
        # Who you are before what state it is in: a 403 must not depend on the state.
        if locked.emergency_by_id == actor.pk:
            raise NotPermitted("you forced this change; someone else must review it")
        require_reviewer(actor, locked, "review")
        if not locked.emergency:
            raise InvalidTransition(f"change #{locked.pk} is not an emergency change")
        if locked.emergency_reviewed_at is not None:
            raise Conflict(f"change #{locked.pk} was already reviewed by {locked.emergency_reviewed_by}")
        locked.emergency_reviewed_by, locked.emergency_reviewed_at = actor, timezone.now()
        locked.emergency_review_comment = comment.strip()
        locked.save(update_fields=["emergency_reviewed_by", "emergency_reviewed_at", "emergency_review_comment",
                                   "updated_at"])
        audit_record(actor=actor, origin=origin, action="emergency_reviewed", change=locked,
                     payload={"comment": locked.emergency_review_comment, "fingerprint": locked.fingerprint})
    return locked
