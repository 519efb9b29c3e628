"""The four-eyes policy. Every entry point (API, admin, CLI, shell, tasks) asks
here; nothing else decides who may do what to a target."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from guardian.models import GroupObjectPermission, UserObjectPermission
from guardian.shortcuts import assign_perm, remove_perm

from changes.audit import SYSTEM, RequestOrigin, audit_record
from changes.errors import Conflict, InvalidTransition, NotPermitted, ValidationFailed
from changes.lifecycle import in_author_set, lock_change, transition
from changes.models import ChangeRequest, Target
from changes.execution import execution_create
from changes.notify import alert, reviewers_of

from .models import Approval

PERMISSIONS = ("view_target", "submit_change", "approve_change", "emergency_change", "export_audit")

# What each role may do on a target, granted per target (`manage.py grant`). The one
# table: the demo setup and the tests read it from here too.
ROLES: dict[str, tuple[str, ...]] = {
    "engineer": ("view_target", "submit_change"),
    "reviewer": ("view_target", "approve_change"),
    "auditor": ("view_target", "export_audit"),
    "emergency": ("view_target", "emergency_change"),
}


def has_target_permission(user: AbstractBaseUser | AnonymousUser | None, perm: str, target: Target) -> bool:
    """Per-object permission on the target (directly or via a group, django-guardian).
    Model-wide grants do not count: access is given zone by zone."""
    if perm not in PERMISSIONS:
        raise ValueError(f"unknown target permission {perm}")
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return user.has_perm(f"changes.{perm}", target)


def require_target_permission(user: AbstractBaseUser | AnonymousUser | None, perm: str, target: Target) -> None:
    if not has_target_permission(user, perm, target):
        raise NotPermitted(f"you lack the {perm} permission on target {target.name}")


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


def approvals_required(change: ChangeRequest) -> int:
    """The target's N, plus one for a plan with risk flags."""
    return change.target.required_approvals + (1 if change.risk_flags else 0)


def approvals_valid(change: ChangeRequest, *, now: datetime | None = None) -> QuerySet[Approval]:
    """Approvals that count: not invalidated, for the current plan, not expired."""
    return change.approvals.filter(
        invalidated_at__isnull=True, fingerprint=change.fingerprint, expires_at__gt=now or timezone.now()
    )


def approvals_of(change: ChangeRequest) -> QuerySet[Approval]:
    """Every approval ever given on the change, oldest first (valid or not)."""
    return change.approvals.select_related("approver").order_by("created_at", "pk")


def can_review(user: AbstractBaseUser | AnonymousUser | None, change: ChangeRequest) -> bool:
    """Whether `user` is someone who may approve or reject `change`: the same checks
    change_approve and change_reject make about the person (not in the author set,
    approve_change on the target). Entry points use it to decide what to offer; the
    policy functions still refuse on their own."""
    if user is None or not user.is_authenticated:
        return False
    try:
        _require_reviewer(user, change, "review")  # type: ignore[arg-type]
    except NotPermitted:
        return False
    return True


def target_role_grant(
    *, actor: AbstractBaseUser | None, target: Target, role: str, user: AbstractBaseUser | None = None,
    group: Group | None = None, origin: RequestOrigin = SYSTEM,
) -> list[str]:
    """Give `user` or `group` the permissions of `role` (ROLES) on `target`; audited
    as permission_granted. Superusers only (actor None = a management command).
    Returns the permissions that were not held before."""
    _check_role_request(actor, role, user, group)
    with transaction.atomic():
        held = _direct_perms(target, user, group)
        added = [perm for perm in ROLES[role] if perm not in held]
        for perm in added:
            assign_perm(f"changes.{perm}", user or group, target)
        audit_record(actor=actor, origin=origin, action="permission_granted", target=target,
                     payload={"role": role, **_principal(user, group), "permissions": added})
    return added


def target_role_revoke(
    *, actor: AbstractBaseUser | None, target: Target, role: str, user: AbstractBaseUser | None = None,
    group: Group | None = None, origin: RequestOrigin = SYSTEM,
) -> list[str]:
    """Take `role` on `target` away from `user` or `group`; audited as
    permission_revoked. A permission another role still held there also gives stays
    (revoking reviewer from someone who is also an engineer keeps view_target).
    Returns the permissions removed."""
    _check_role_request(actor, role, user, group)
    with transaction.atomic():
        held = _direct_perms(target, user, group)
        kept = {perm for other, perms in ROLES.items() if other != role and set(perms) <= held for perm in perms}
        removed = [perm for perm in ROLES[role] if perm in held and perm not in kept]
        for perm in removed:
            remove_perm(f"changes.{perm}", user or group, target)
        audit_record(actor=actor, origin=origin, action="permission_revoked", target=target,
                     payload={"role": role, **_principal(user, group), "permissions": removed})
    return removed


def _check_role_request(actor: AbstractBaseUser | None, role: str, user: Any, group: Any) -> None:
    if actor is not None and not (actor.is_active and actor.is_superuser):
        raise NotPermitted("only superusers may grant or revoke roles")
    errors = []
    if role not in ROLES:
        errors.append({"index": None, "field": "role", "message": f"unknown role {role!r}; one of {', '.join(ROLES)}"})
    if (user is None) == (group is None):
        errors.append({"index": None, "field": "user", "message": "give either a user or a group"})
    if errors:
        raise ValidationFailed(errors)


def _direct_perms(target: Target, user: AbstractBaseUser | None, group: Group | None) -> set[str]:
    # Only what was granted to this user or group itself (a user's group grants are
    # the group's to revoke), read from guardian's tables: its shortcuts answer
    # nothing for an inactive user, whose grants must still be revocable.
    rows = (UserObjectPermission.objects.filter(user=user) if user is not None
            else GroupObjectPermission.objects.filter(group=group))
    return set(rows.filter(content_type=ContentType.objects.get_for_model(Target), object_pk=str(target.pk))
               .values_list("permission__codename", flat=True))


def _principal(user: AbstractBaseUser | None, group: Group | None) -> dict[str, str]:
    return {"user": user.get_username()} if user is not None else {"group": group.name}  # type: ignore[union-attr]


def approvals_invalidate(*, change: ChangeRequest, reason: str) -> int:
    """Kill every live approval of `change` (an edit, a different re-plan, drift).
    Runs inside the caller's transaction."""
    return change.approvals.filter(invalidated_at__isnull=True).update(
        invalidated_at=timezone.now(), invalidated_reason=reason[:200]
    )


def _require_reviewer(actor: AbstractBaseUser, change: ChangeRequest, verb: str) -> None:
    # The author set never reviews its own change, whatever its role: superusers too.
    if in_author_set(actor, change):
        raise NotPermitted(f"you wrote or edited change #{change.pk}; someone else must {verb} it")
    require_target_permission(actor, "approve_change", change.target)


def change_approve(
    *, actor: AbstractBaseUser, change: ChangeRequest, fingerprint: Any, comment: str = "",
    origin: RequestOrigin = SYSTEM,
) -> ChangeRequest:
    """Approve exactly the plan with `fingerprint`. When the target's count of
    distinct valid approvals is reached, the change becomes approved in this same
    transaction. Raises NotPermitted (author set, no permission), StaleFingerprint,
    InvalidTransition, Conflict (already approved by this person)."""
    if not isinstance(fingerprint, str) or not fingerprint.strip():
        raise ValidationFailed([{"index": None, "field": "fingerprint",
                                 "message": "the fingerprint of the plan you reviewed is required"}])
    with transaction.atomic():
        locked = lock_change(change)
        _require_reviewer(actor, locked, "approve")
        if locked.state != ChangeRequest.State.PENDING_APPROVAL:
            raise InvalidTransition(f"change #{locked.pk} is {locked.state}; only pending changes can be approved")
        if fingerprint.strip() != locked.fingerprint:
            raise StaleFingerprint(
                f"the plan changed since you reviewed it; review the current plan {locked.fingerprint}",
                current=locked.fingerprint,
            )
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
                              "expires_at": approval.expires_at.isoformat(), "count": count, "required": required})
        if count >= required:
            approvers = list(approvals_valid(locked, now=now).values_list("approver__username", flat=True))
            transition(locked, ChangeRequest.State.APPROVED, actor=actor, origin=origin, action="change_approved",
                       payload={"fingerprint": locked.fingerprint, "approvers": approvers, "required": required})
            execution_create(change=locked)  # the outbox row, in the approving transaction
            alert(event="approved", change=locked, recipients=[locked.author, *reviewers_of(locked.target)],
                  detail={"approvers": approvers, "fingerprint": locked.fingerprint})
    return locked


def change_reject(
    *, actor: AbstractBaseUser, change: ChangeRequest, comment: Any, origin: RequestOrigin = SYSTEM
) -> ChangeRequest:
    """End a pending change with a required comment saying why."""
    if not isinstance(comment, str) or not comment.strip():
        raise ValidationFailed([{"index": None, "field": "comment", "message": "say why the change is rejected"}])
    with transaction.atomic():
        locked = lock_change(change)
        _require_reviewer(actor, locked, "reject")
        if locked.state != ChangeRequest.State.PENDING_APPROVAL:
            raise InvalidTransition(f"change #{locked.pk} is {locked.state}; only pending changes can be rejected")
        approvals_invalidate(change=locked, reason="change rejected")
        transition(locked, ChangeRequest.State.REJECTED, actor=actor, origin=origin, action="change_rejected",
                   payload={"comment": comment.strip(), "fingerprint": locked.fingerprint})
    return locked


# ---------------------------------------------------------------------------
# Break-glass: one person may apply alone, in the open, and a second person
# reviews it after the fact.


def change_emergency(
    *, actor: AbstractBaseUser, change: ChangeRequest, reason: Any, origin: RequestOrigin = SYSTEM
) -> ChangeRequest:
    """Approve a draft or pending change alone, as an emergency. Needs
    emergency_change on the target and a written reason; alerts the target's
    reviewers and puts the change in the after-the-fact review queue."""
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationFailed([{"index": None, "field": "reason", "message": "say why this cannot wait for a second person"}])
    with transaction.atomic():
        locked = lock_change(change)
        require_target_permission(actor, "emergency_change", locked.target)
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
                   payload={"fingerprint": locked.fingerprint, "reason": locked.emergency_reason})
        execution_create(change=locked)
        alert(event="emergency_change", change=locked, recipients=reviewers_of(locked.target),
              detail={"by": actor.get_username(), "reason": locked.emergency_reason,
                      "fingerprint": locked.fingerprint})
    return locked


def emergency_review(
    *, actor: AbstractBaseUser, change: ChangeRequest, comment: Any, origin: RequestOrigin = SYSTEM
) -> ChangeRequest:
    """The after-the-fact second pair of eyes on a break-glass change: anyone who
    may approve on the target, except the author set and whoever forced it."""
    if not isinstance(comment, str) or not comment.strip():
        raise ValidationFailed([{"index": None, "field": "comment", "message": "say what you checked"}])
    with transaction.atomic():
        locked = lock_change(change)
        # Who you are before what state it is in: a 403 must not depend on the state.
        if locked.emergency_by_id == actor.pk:
            raise NotPermitted("you forced this change; someone else must review it")
        _require_reviewer(actor, locked, "review")
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
