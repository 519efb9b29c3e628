"""Every write to change requests: one function per lifecycle step.

Each runs in one transaction, locks the change row, checks the move against
`TRANSITIONS`, writes its audit event in the same transaction and nothing else
assigns `state`. Reads of the live target happen *before* the transaction (a
DNS timeout must not hold a row lock); the revision counter then proves the
change was not edited in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from adapters import ItemValidationError, Options, Plan
from approvals.standing import approvals_invalidate
from audit.chain import SYSTEM, RequestOrigin, audit_record
from changes.adapters import adapter_open
from changes.errors import InvalidTransition, NotPermitted, ServiceError, ValidationFailed
from changes.kinds import kind_of, target_unavailable_on_adapter_error
from changes.lifecycle import can_move, in_author_set, lock_change, lock_editable, transition
from changes.locking import retry_on_contention
from changes.models import EDITABLE, ChangeRequest, Target
from changes.permissions import can_cancel, has_target_permission, require_target_permission
from pipeline.bake_time import override_errors
from pipeline.check_specs import validate_health_checks

State = ChangeRequest.State
TITLE_MAX = 200


# ---------------------------------------------------------------------------
# Input preparation (pure apart from the live read in `_plan`)


@dataclass(frozen=True)
class PreparedItems:
    raw: list[dict[str, Any]]
    items: list[Any]  # the kind's validated items
    lines: list[int] | None  # patch line of each item, when the items came from a patch


def _field_errors(exc: ItemValidationError, lines: list[int] | None, field: str = "items") -> ValidationFailed:
    errors = []
    for e in exc.errors:
        error = {"index": e.index, "field": e.field if e.index is None else f"{field}[{e.index}].{e.field}", "message": e.message}
        if lines is not None and e.index is not None and e.index < len(lines):
            error["line"] = lines[e.index]
        errors.append(error)
    return ValidationFailed(errors)




def _prepare_items(
    *, target: Target, items: Any, patch: str | None, options: Options
) -> PreparedItems:
    if items not in (None, []) and patch not in (None, ""):
        raise ValidationFailed([{"index": None, "field": "patch", "message": "give either items or patch, not both"}])
    lines: list[int] | None = None
    if patch not in (None, ""):
        try:
            parsed = kind_of(target).parse_patch(patch)  # type: ignore[arg-type]
        except ItemValidationError as exc:
            raise _field_errors(exc, None) from None
        items = [p.item for p in parsed]
        lines = [p.line for p in parsed]
    adapter = adapter_open(target)
    try:
        validated = adapter.validate_items(items if items is not None else [], options=options)
    except ItemValidationError as exc:
        raise _field_errors(exc, lines) from None
    finally:
        adapter.close()
    # Store the validated form (absolute names, canonical rdata, integer TTLs): what
    # was checked is what is kept and shown, and re-validating it gives the same items.
    item_json = kind_of(target).item_json
    return PreparedItems(raw=[item_json(item) for item in validated], items=validated, lines=lines)


def _plan(target: Target, prepared: PreparedItems, *, options: Options) -> Plan:
    """Dry-run against the live target. Never inside a transaction."""
    adapter = adapter_open(target)
    try:
        with target_unavailable_on_adapter_error(target):
            try:
                return adapter.plan(prepared.items, options=options)
            except ItemValidationError as exc:
                raise _field_errors(exc, prepared.lines) from None
    finally:
        adapter.close()


def _refuse_no_op(prepared: PreparedItems, plan: Plan) -> None:
    """A proposal whose every item is already live has an empty plan: it could never be
    submitted (require_may_submit), so it is refused here rather than kept as a draft
    that piles up. Create and edit only: a re-plan that finds the zone caught up is drift
    news, not a mistake (the submit refusal says so)."""
    if plan.steps:
        return
    keys = list(dict.fromkeys(str(item.key) for item in prepared.items if getattr(item, "key", None) is not None))
    what = (f"{', '.join(keys)} {'is' if len(keys) == 1 else 'are'} already live" if keys
            else "every item is already live")
    raise ValidationFailed([{"index": None, "field": "items",
                             "message": f"this change changes nothing: {what} as proposed"}])


def _validate_text(title: Any, reason: Any) -> tuple[str, str]:
    errors = []
    if not isinstance(title, str) or not title.strip():
        errors.append({"index": None, "field": "title", "message": "title is required"})
    elif len(title.strip()) > TITLE_MAX:
        errors.append({"index": None, "field": "title", "message": f"at most {TITLE_MAX} characters"})
    if not isinstance(reason, str) or not reason.strip():
        errors.append({"index": None, "field": "reason", "message": "reason is required: say why the change is needed"})
    if errors:
        raise ValidationFailed(errors)
    return title.strip(), reason.strip()


REFERENCE_MAX = 100


def _validate_reference(reference: Any) -> str:
    """A change ticket number as people type it (CHG0012345): free text, one line of
    printable characters, so it prints and exports as it reads."""
    if reference is None:
        return ""
    if not isinstance(reference, str):
        raise ValidationFailed([{"index": None, "field": "reference", "message": "must be text"}])
    reference = reference.strip()
    if len(reference) > REFERENCE_MAX:
        raise ValidationFailed([{"index": None, "field": "reference",
                                 "message": f"at most {REFERENCE_MAX} characters"}])
    if not reference.isprintable():
        raise ValidationFailed([{"index": None, "field": "reference",
                                 "message": "printable characters only (no control characters or line breaks)"}])
    return reference


# "Not given" for an edit, where None means "back to the target's rule".
UNSET: Any = object()


def _validate_bake_override(seconds: Any, reason: Any) -> tuple[int | None, str]:
    """The change's own bake length and its reason (pipeline/bake_time.py has the rule)."""
    errors = override_errors(seconds, reason)
    if errors:
        raise ValidationFailed([{"index": None, "field": field, "message": message} for field, message in errors])
    return (None, "") if seconds is None else (seconds, reason.strip())


def _store_plan(change: ChangeRequest, plan: Plan) -> None:
    change.plan = plan.to_json()
    change.fingerprint = plan.fingerprint
    change.planned_at = timezone.now()
    change.risk_flags = kind_of(change.target).risk_flags(plan, item_count=change.target.item_count,
                                                             config=change.target.config)
    # Plan.to_json leaves the warnings out (they are not part of what is approved),
    # so they are kept beside the plan and replaced with it, never merged.
    change.plan_warnings = list(plan.warnings)


def _plan_summary(change: ChangeRequest) -> dict[str, Any]:
    return {
        "fingerprint": change.fingerprint,
        "steps": len((change.plan or {}).get("steps", [])),
        "risk_flags": change.risk_flags,
        "warnings": change.plan_warnings,
    }


# ---------------------------------------------------------------------------
# Change requests


def change_create(
    *,
    actor: AbstractBaseUser,
    target: Target,
    title: Any,
    reason: Any,
    items: Any = None,
    patch: str | None = None,
    health_checks: Any = None,
    options: Options | None = None,
    origin: RequestOrigin = SYSTEM,
    reference: Any = None,
    bake_override_seconds: Any = None,
    bake_override_reason: Any = "",
) -> ChangeRequest:
    """Create a draft change and its dry-run plan against the live target.
    `options` are the target kind's options for this change (DNS: allow_apex).
    Raises NotPermitted, ValidationFailed, TargetUnavailable; stores nothing then."""
    require_target_permission(actor, "submit_change", target)
    title, reason = _validate_text(title, reason)
    reference = _validate_reference(reference)
    bake_seconds, bake_reason = _validate_bake_override(bake_override_seconds, bake_override_reason)
    checks = validate_health_checks(health_checks)
    options = dict(options or {})
    prepared = _prepare_items(target=target, items=items, patch=patch, options=options)
    plan = _plan(target, prepared, options=options)
    _refuse_no_op(prepared, plan)
    with transaction.atomic():
        change = ChangeRequest(
            target=target, author=actor, title=title, reason=reason, reference=reference, items=prepared.raw,
            health_checks=checks, options=options,
            bake_override_seconds=bake_seconds, bake_override_reason=bake_reason,
        )
        _store_plan(change, plan)
        change.save()
        # Kept on the instance: a new draft's only event, which the API's answer shows
        # without reading it back (issue 14: one statement and a query's CPU per proposal).
        change.creation_event = audit_record(
            actor=actor, origin=origin, action="change_created", change=change,
            payload={"title": title, "reason": reason, "reference": reference, "items": prepared.raw,
                     "health_checks": checks, "bake_override_seconds": bake_seconds,
                     "bake_override_reason": bake_reason,
                     "options": options, "plan": change.plan, **_plan_summary(change)})
    return change


@retry_on_contention
def change_update(
    *,
    actor: AbstractBaseUser,
    change: ChangeRequest,
    title: Any = None,
    reason: Any = None,
    items: Any = None,
    patch: str | None = None,
    health_checks: Any = None,
    options: Options | None = None,
    origin: RequestOrigin = SYSTEM,
    reference: Any = None,
    bake_override_seconds: Any = UNSET,
    bake_override_reason: Any = UNSET,
) -> ChangeRequest:
    """Edit a change that is not yet approved. Records the editor and re-plans; a
    new revision means approvals given to the old one no longer count."""
    target = change.target
    require_may_edit(actor, change)
    revision = change.revision
    new_title, new_reason = _validate_text(title if title is not None else change.title,
                                           reason if reason is not None else change.reason)
    new_reference = _validate_reference(reference) if reference is not None else change.reference
    bake_seconds, bake_reason = _validate_bake_override(
        change.bake_override_seconds if bake_override_seconds is UNSET else bake_override_seconds,
        change.bake_override_reason if bake_override_reason is UNSET else bake_override_reason)
    checks = validate_health_checks(health_checks) if health_checks is not None else change.health_checks
    # Options given are merged over the change's own; those not given stay.
    merged = {**change.options, **(options or {})}
    if items is None and patch in (None, ""):
        items = change.items
    prepared = _prepare_items(target=target, items=items, patch=patch, options=merged)
    plan = _plan(target, prepared, options=merged)
    _refuse_no_op(prepared, plan)
    with transaction.atomic():
        locked = lock_editable(change, revision=revision)
        old_fingerprint = locked.fingerprint
        locked.title, locked.reason, locked.items = new_title, new_reason, prepared.raw
        locked.reference = new_reference
        # A new bake is a new revision too: reviewers approve how long it is watched.
        locked.bake_override_seconds, locked.bake_override_reason = bake_seconds, bake_reason
        locked.health_checks, locked.options = checks, merged
        locked.revision += 1
        _store_plan(locked, plan)
        locked.save()
        if actor.pk != locked.author_id:
            locked.editors.add(actor)
        # Reviewers approved the old revision; nobody approved this one.
        invalidated = approvals_invalidate(change=locked, reason=f"edited by {actor.get_username()}")
        audit_record(actor=actor, origin=origin, action="change_edited", change=locked,
                     payload={"title": new_title, "reason": new_reason, "reference": new_reference,
                              "items": prepared.raw,
                              "health_checks": checks, "options": merged, "revision": locked.revision,
                              "bake_override_seconds": bake_seconds, "bake_override_reason": bake_reason,
                              "approvals_invalidated": invalidated,
                              "previous_fingerprint": old_fingerprint, "plan": locked.plan,
                              **_plan_summary(locked)})
    return locked


# ---------------------------------------------------------------------------
# Who may re-plan, submit and cancel what, now: each rule once, raised by its
# service and asked by the pages that decide which buttons to offer.


def require_may_edit(actor: AbstractBaseUser, change: ChangeRequest) -> None:
    """The author, or anyone who may submit on the target; a change not yet approved."""
    if change.author_id != actor.pk:
        require_target_permission(actor, "submit_change", change.target)
    if change.state not in EDITABLE:
        raise InvalidTransition(f"change #{change.pk} is {change.state}; only {', '.join(sorted(EDITABLE))} changes can be edited")


def require_may_plan(actor: AbstractBaseUser, change: ChangeRequest) -> None:
    """The author, or anyone who may submit or approve on the target; an editable change only."""
    target = change.target
    if not (change.author_id == actor.pk or has_target_permission(actor, "submit_change", target)
            or has_target_permission(actor, "approve_change", target)):
        raise NotPermitted(f"you lack the submit_change or approve_change permission on target {target.name}")
    if change.state not in EDITABLE:
        raise InvalidTransition(f"change #{change.pk} is {change.state}; its plan is fixed")


# Submitting is the author set's move from a draft, or from drift after a re-plan.
# (approved -> pending_approval is the worker's, when approvals lapse: not a submit.)
SUBMITTABLE = frozenset({State.DRAFT, State.DRIFTED})


def require_may_submit(actor: AbstractBaseUser, change: ChangeRequest) -> None:
    """The author or an editor, with submit_change on the target, of a draft (or drifted) change with steps."""
    if not in_author_set(actor, change):
        raise NotPermitted("only the author or an editor of a change may submit it")
    require_target_permission(actor, "submit_change", change.target)
    if change.state not in SUBMITTABLE or not can_move(change, State.PENDING_APPROVAL):
        raise InvalidTransition(f"change #{change.pk} is {change.state}; it cannot move to {State.PENDING_APPROVAL}")
    if not (change.plan or {}).get("steps"):
        raise InvalidTransition(f"change #{change.pk} has nothing to do: the live zone already matches it")


def require_may_cancel(actor: AbstractBaseUser, change: ChangeRequest) -> None:
    """The author, an editor or an operator (`can_cancel`), of a change that may still move to cancelled."""
    # Who you are before the state: a 403 must not depend on it.
    if not can_cancel(actor, change):
        raise NotPermitted("only the author, an editor or an operator may cancel a change")
    if not can_move(change, State.CANCELLED):
        raise InvalidTransition(f"change #{change.pk} is {change.state}; it cannot move to {State.CANCELLED}")


def _allowed(check: Any, actor: Any, change: ChangeRequest) -> bool:
    if actor is None or not actor.is_authenticated:
        return False
    try:
        check(actor, change)
    except ServiceError:
        return False
    return True


def may_edit(actor: Any, change: ChangeRequest) -> bool:
    return _allowed(require_may_edit, actor, change)


def may_plan(actor: Any, change: ChangeRequest) -> bool:
    return _allowed(require_may_plan, actor, change)


def may_submit(actor: Any, change: ChangeRequest) -> bool:
    return _allowed(require_may_submit, actor, change)


def may_cancel(actor: Any, change: ChangeRequest) -> bool:
    return _allowed(require_may_cancel, actor, change)


@retry_on_contention
def change_plan(*, actor: AbstractBaseUser, change: ChangeRequest, origin: RequestOrigin = SYSTEM) -> ChangeRequest:
    """Re-run the dry-run against live. A different result replaces the stored plan
    (and with it the fingerprint any approval was bound to)."""
    target = change.target
    require_may_plan(actor, change)
    revision = change.revision
    prepared = _prepare_items(target=target, items=change.items, patch=None, options=change.options)
    plan = _plan(target, prepared, options=change.options)
    with transaction.atomic():
        locked = lock_editable(change, revision=revision)
        old = locked.fingerprint
        _store_plan(locked, plan)
        invalidated = 0
        if plan.fingerprint != old:
            locked.revision += 1
            invalidated = approvals_invalidate(change=locked, reason="re-plan read different live data")
        locked.save()
        audit_record(actor=actor, origin=origin, action="change_planned", change=locked,
                     payload={"previous_fingerprint": old, "changed": plan.fingerprint != old,
                              "approvals_invalidated": invalidated,
                              "plan": locked.plan, **_plan_summary(locked)})
    return locked


@retry_on_contention
def change_submit(*, actor: AbstractBaseUser, change: ChangeRequest, origin: RequestOrigin = SYSTEM) -> ChangeRequest:
    """draft (or drifted, after a re-plan) -> pending_approval."""
    with transaction.atomic():
        locked = lock_change(change)
        require_may_submit(actor, locked)
        locked.submitted_at = timezone.now()
        transition(locked, State.PENDING_APPROVAL, actor=actor, origin=origin, action="change_submitted",
                    payload=_plan_summary(locked))
    return locked


@retry_on_contention
def change_cancel(*, actor: AbstractBaseUser, change: ChangeRequest, origin: RequestOrigin = SYSTEM,
                  reason: Any = None, comment: Any = None) -> ChangeRequest:
    """Withdraw a change that has not started applying, saying why. The author, an
    editor or an operator (`can_cancel`). `comment` is the reason's old name."""
    reason = reason if reason not in (None, "") else comment
    with transaction.atomic():
        locked = lock_change(change)
        # Who you are, then the state (cancelling a finished change is a conflict),
        # before what you wrote: neither answer may depend on the body.
        require_may_cancel(actor, locked)
        if not isinstance(reason, str) or not reason.strip():
            raise ValidationFailed([{"index": None, "field": "reason", "message": "say why the change is cancelled"}])
        transition(locked, State.CANCELLED, actor=actor, origin=origin, action="change_cancelled",
                    payload={"reason": reason.strip()})
    return locked


def change_propose_rollback(
    *, actor: AbstractBaseUser, change: ChangeRequest, reason: Any, origin: RequestOrigin = SYSTEM
) -> ChangeRequest:
    """A manual rollback of an applied change is a new change (four eyes like any
    other): its items put every RRset back to the applied plan's `before`, and its
    plan is read against live now, so anything that moved since shows in the diff."""
    require_target_permission(actor, "submit_change", change.target)
    if change.state != State.APPLIED:
        raise InvalidTransition(f"change #{change.pk} is {change.state}; only applied changes can be rolled back")
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationFailed([{"index": None, "field": "reason", "message": "say why the change is rolled back"}])
    items = kind_of(change.target).rollback_items(Plan.from_json(change.plan))
    return change_create(
        actor=actor, target=change.target, title=f"Roll back #{change.pk}: {change.title}"[:TITLE_MAX],
        reason=f"Rollback of change #{change.pk}. {reason.strip()}", items=items, options=change.options,
        health_checks=change.health_checks, origin=origin,
    )
