"""The one-person revert of a young change (issue 16).

While an applied change is in its watch window (`ChangeRequest.watch_until`, set by
the worker when the bake passes: pipeline.watch), its author or any one of the
people whose approval of its fingerprint counted may undo it alone: the revert is a
new change whose plan is exactly the inverse of the applied plan (applied only
while `after` is still live: the worker's re-plan compares live with each step's
`before`), approved at once on the authority of the original approvals and audited
as such (`change_revert_approved`). After the window a rollback is an ordinary
four-eyes change again (`change_propose_rollback`).

The watch itself reverts a change whose checks fail (actor None: the system); it is
not held to the window (it decides in the window's last rounds) nor to a person.

Who writes the revert: the person who asked for it, so the audit log and the change
list name who undid what. The system's revert is written in the original author's
name (a change needs an author; the author answers for the change either way) and
its events say actor "system". Neither gains anything from it: a revert is never
reviewed (no approval row is ever written for it, so the author-set rules that stop
self-approval have nothing to bypass), it has no watch window of its own and cannot
itself be reverted alone (undoing it re-applies a change, which needs approval
again), and its authority is recorded as the original approvals, by name.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from adapters import Plan
from approvals.models import Approval
from audit.chain import SYSTEM, RequestOrigin, audit_record
from changes.errors import Conflict, InvalidTransition, NotPermitted, ServiceError, ValidationFailed
from changes.kinds import kind_of
from changes.lifecycle import lock_change, transition
from changes.locking import retry_on_contention
from changes.models import AuditEvent, ChangeRequest
from changes.permissions import has_target_permission
from changes.services.change_requests import TITLE_MAX, _plan_summary, _store_plan
from pipeline.execution import execution_create
from pipeline.outbox import alert

State = ChangeRequest.State

# A revert that ended in one of these did not undo the change (nothing of it is live,
# or it put the change back itself): the change may be reverted again. Any other
# state (on its way, applied, or a failed rollback a human must look at) stands.
REVERT_DID_NOT_STAND = frozenset({State.CANCELLED, State.REJECTED, State.APPLY_FAILED, State.DRIFTED,
                                  State.ROLLED_BACK})


def counted_approvals(change: ChangeRequest) -> QuerySet[Approval]:
    """The approvals that made `change` approved: valid (not invalidated, for its
    fingerprint, not expired) at its last `change_approved` move. None for a
    break-glass change, whose authority is the emergency record."""
    approved_at = (AuditEvent.objects.filter(change=change, action="change_approved").order_by("-seq")
                   .values_list("created_at", flat=True).first())
    if approved_at is None:
        return Approval.objects.none()
    return change.approvals.filter(invalidated_at__isnull=True, fingerprint=change.fingerprint,
                                   created_at__lte=approved_at, expires_at__gt=approved_at).order_by("created_at", "pk")


def standing_revert(change: ChangeRequest) -> ChangeRequest | None:
    """The revert of `change` that is on its way or done (`REVERT_DID_NOT_STAND` aside)."""
    return change.reverted_by.exclude(state__in=REVERT_DID_NOT_STAND).order_by("-pk").first()


def _window_refusal(change: ChangeRequest, now: datetime) -> str | None:
    rollback = f"a rollback now is an ordinary four-eyes change (changegate rollback {change.pk})"
    if change.watch_until is None:
        return f"change #{change.pk} has no watch window (its target watches applied changes for 0 s), so nobody " \
               f"may revert it alone; {rollback}"
    if now >= change.watch_until:
        return f"the watch window of change #{change.pk} ended at {change.watch_until.isoformat()}; {rollback}"
    return None


def require_may_revert(actor: AbstractBaseUser | None, change: ChangeRequest, *, now: datetime | None = None) -> None:
    """Raise unless `actor` may revert `change` alone now. The person first (a 403
    must not depend on the state): its author with submit_change on the target, or
    one of its counted approvers who still holds approve_change there. Then the
    change: applied, not a revert itself, not already reverted, inside its watch
    window. `actor` None is the watch's own revert: no person, no window."""
    target = change.target
    if actor is not None:
        if change.author_id == actor.pk:
            if not has_target_permission(actor, "submit_change", target):
                raise NotPermitted(f"you no longer hold submit_change on target {target.name}")
        elif counted_approvals(change).filter(approver_id=actor.pk).exists():
            if not has_target_permission(actor, "approve_change", target):
                raise NotPermitted(f"you no longer hold approve_change on target {target.name}")
        else:
            raise NotPermitted(f"only the author of change #{change.pk} or one of the people whose approval of it "
                               f"counted may revert it alone; propose a rollback instead "
                               f"(changegate rollback {change.pk}), four eyes like any change")
    if change.reverts_id is not None:
        raise InvalidTransition(f"change #{change.pk} is itself a revert (of #{change.reverts_id}); undoing it "
                                f"re-applies a change, which needs approval again: propose it as a new change")
    if change.state != State.APPLIED:
        raise InvalidTransition(f"change #{change.pk} is {change.state}; only an applied change can be reverted")
    revert = standing_revert(change)
    if revert is not None:
        raise Conflict(f"change #{change.pk} is already reverted by change #{revert.pk} ({revert.state})")
    if actor is not None and (refusal := _window_refusal(change, now or timezone.now())):
        raise InvalidTransition(refusal)


def revert_refusal(user: Any, change: ChangeRequest) -> str | None:
    """Why `user` may not revert `change` alone now, or None when they may: the rule
    of `require_may_revert`, asked by the pages that decide whether to offer it."""
    if user is None or not user.is_authenticated:
        return "sign in first"
    try:
        require_may_revert(user, change)
    except ServiceError as exc:
        return exc.message
    return None


def may_revert(user: Any, change: ChangeRequest) -> bool:
    return revert_refusal(user, change) is None


@retry_on_contention
def change_revert(*, actor: AbstractBaseUser | None, change: ChangeRequest, reason: Any,
                  origin: RequestOrigin = SYSTEM) -> ChangeRequest:
    """Revert a young applied change alone (`require_may_revert`), saying why: a new
    change with `reverts` = `change`, the inverse of its applied plan, approved in this
    transaction on the original approvals' authority, with its attempt queued. The
    change's watch ends here. Raises NotPermitted, InvalidTransition / Conflict (409:
    not applied, already reverted, the window ended), ValidationFailed (reason)."""
    with transaction.atomic():
        locked = lock_change(change)
        now = timezone.now()
        # Who, then the state and the window, before what was written (as cancel does).
        require_may_revert(actor, locked, now=now)
        if not isinstance(reason, str) or not reason.strip():
            raise ValidationFailed([{"index": None, "field": "reason", "message": "say why the change is reverted"}])
        reason = reason.strip()
        target = locked.target
        applied = Plan.from_json(locked.plan)
        approvers = list(counted_approvals(locked).values_list("approver__username", flat=True))
        revert = ChangeRequest(
            target=target, author=actor if actor is not None else locked.author,
            title=f"Revert #{locked.pk}: {locked.title}"[:TITLE_MAX],
            reason=f"Revert of change #{locked.pk} in its watch window. {reason}", reference=locked.reference,
            items=kind_of(target).rollback_items(applied), options=locked.options, health_checks=[],
            # It puts back a state that was live (and watched) before the change: no bake of its own.
            bake_override_seconds=0, bake_override_reason=f"a revert restores what was live before #{locked.pk}",
            reverts=locked, submitted_at=now,
        )
        # Exactly the inverse of what was applied, not a fresh plan against live: the
        # worker applies it only while `after` is still live (its re-plan step).
        _store_plan(revert, applied.inverse())
        revert.save()
        audit_record(actor=actor, origin=origin, action="change_created", change=revert,
                     payload={"title": revert.title, "reason": revert.reason, "reference": revert.reference,
                              "items": revert.items, "health_checks": [], "options": revert.options,
                              "bake_override_seconds": 0, "bake_override_reason": revert.bake_override_reason,
                              "reverts": locked.pk, "plan": revert.plan, **_plan_summary(revert)})
        transition(revert, State.PENDING_APPROVAL, actor=actor, origin=origin, action="change_submitted",
                   payload={**_plan_summary(revert), "reverts": locked.pk})
        transition(revert, State.APPROVED, actor=actor, origin=origin, action="change_revert_approved", payload={
            "reverts": locked.pk, "reason": reason, "fingerprint": revert.fingerprint,
            "reverted_fingerprint": locked.fingerprint, "approved_by": approvers,
            "within_watch_until": locked.watch_until.isoformat() if locked.watch_until else None,
            "one_person": actor is not None, "automatic": actor is None,
        })
        execution_create(change=revert)
        locked.watch_next_at = None  # nothing left to watch: it is being undone
        locked.save(update_fields=["watch_next_at", "updated_at"])
        audit_record(actor=actor, origin=origin, action="change_reverted", change=locked,
                     payload={"revert": revert.pk, "reason": reason, "fingerprint": revert.fingerprint,
                              "automatic": actor is None})
        if actor is not None:  # the watch's own revert is in its watch_check_failed alert
            people = [locked.author, *(a.approver for a in counted_approvals(locked).select_related("approver"))]
            alert(event="change_reverted", change=locked, recipients=people,
                  detail={"revert": revert.pk, "by": actor.get_username(), "reason": reason})
    return revert
