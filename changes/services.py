"""Every write in `changes`: one function per lifecycle step.

Each runs in one transaction, locks the change row, checks the move against
`TRANSITIONS`, writes its audit event in the same transaction and nothing else
assigns `state`. Reads of the live target happen *before* the transaction (a
DNS timeout must not hold a row lock); the revision counter then proves the
change was not edited in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals.policy import approvals_invalidate, has_target_permission, require_target_permission
from adapters import Adapter, ItemValidationError, Plan, UnknownKind

from .adapters import adapter_for, validate_target_config
from .audit import SYSTEM, RequestOrigin, audit_record
from .errors import InvalidTransition, NotPermitted, ValidationFailed
from .health import validate_health_checks
from .kinds import REGISTRY, kind_of, target_unavailable_on_adapter_error
from .lifecycle import in_author_set, lock_change, lock_editable, transition
from .locking import lock_target, retry_on_contention
from .models import EDITABLE, TRANSITIONS, ChangeRequest, Target
from .permissions import can_cancel, require_operator

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


def _open_adapter(target: Target) -> Adapter:
    """adapter_for, with a config that broke after registration (the key file was
    removed or rotated badly) reported as an unavailable target, not an AdapterError
    escaping to the caller as a crash."""
    with target_unavailable_on_adapter_error(target):
        return adapter_for(target)


def _prepare_items(
    *, target: Target, items: Any, patch: str | None, allow_apex: bool
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
    adapter = _open_adapter(target)
    try:
        validated = adapter.validate_items(items if items is not None else [], options={"allow_apex": allow_apex})
    except ItemValidationError as exc:
        raise _field_errors(exc, lines) from None
    finally:
        adapter.close()
    # Store the validated form (absolute names, canonical rdata, integer TTLs): what
    # was checked is what is kept and shown, and re-validating it gives the same items.
    item_json = kind_of(target).item_json
    return PreparedItems(raw=[item_json(item) for item in validated], items=validated, lines=lines)


def _plan(target: Target, prepared: PreparedItems, *, allow_apex: bool) -> Plan:
    """Dry-run against the live target. Never inside a transaction."""
    adapter = _open_adapter(target)
    try:
        with target_unavailable_on_adapter_error(target):
            try:
                return adapter.plan(prepared.items, options={"allow_apex": allow_apex})
            except ItemValidationError as exc:
                raise _field_errors(exc, prepared.lines) from None
    finally:
        adapter.close()


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


def _store_plan(change: ChangeRequest, plan: Plan) -> None:
    change.plan = plan.to_json()
    change.fingerprint = plan.fingerprint
    change.planned_at = timezone.now()
    change.risk_flags = kind_of(change.target).risk_flags(plan, item_count=change.target.item_count)


def _plan_summary(change: ChangeRequest) -> dict[str, Any]:
    return {
        "fingerprint": change.fingerprint,
        "steps": len((change.plan or {}).get("steps", [])),
        "risk_flags": change.risk_flags,
    }


# ---------------------------------------------------------------------------
# Targets


def target_register(
    *,
    actor: AbstractBaseUser | None,
    name: str,
    config: dict[str, Any],
    kind: str = Target.Kind.DNS,
    required_approvals: int = 1,
    approval_lifetime_seconds: int = 24 * 3600,
    bake_seconds: int = 60,
    health_checks: Sequence[dict[str, Any]] = (),
    frozen: bool = False,
    origin: RequestOrigin = SYSTEM,
    check_reachable: bool = True,
) -> Target:
    """Register a target after checking the adapter config and that the zone answers
    (SOA over TCP with the key). Operators only (actor None = a management command)."""
    if actor is not None:
        require_operator(actor, "register targets")
    errors = []
    if not isinstance(name, str) or not name.strip():
        errors.append({"index": None, "field": "name", "message": "name is required"})
    if kind not in REGISTRY:
        errors.append({"index": None, "field": "kind", "message": f"kind must be one of {', '.join(REGISTRY.names())}"})
    errors += _policy_errors(required_approvals=required_approvals,
                             approval_lifetime_seconds=approval_lifetime_seconds, bake_seconds=bake_seconds)
    if errors:
        raise ValidationFailed(errors)
    try:
        normalized = validate_target_config(kind, config)
    except UnknownKind:  # unreachable after the check above; keeps the lookup total
        raise ValidationFailed([{"index": None, "field": "kind", "message": "unknown kind"}]) from None
    except ItemValidationError as exc:
        raise ValidationFailed(
            [{"index": None, "field": f"config.{e.field}", "message": e.message} for e in exc.errors]
        ) from None
    # list() only for the tuple default: anything else goes to the validator as given
    # (list("tcp") would be three bogus checks, list(0) a TypeError).
    checks = validate_health_checks(list(health_checks) if isinstance(health_checks, tuple) else health_checks)
    target = Target(
        name=name.strip(), kind=kind, config=normalized, required_approvals=required_approvals,
        approval_lifetime_seconds=approval_lifetime_seconds, bake_seconds=bake_seconds,
        health_checks=checks, frozen=frozen,
    )
    serial = None
    if check_reachable:
        adapter = adapter_for(target)
        try:
            with target_unavailable_on_adapter_error(target, what=f"cannot reach zone {normalized.get('zone')}"):
                serial = adapter.check_reachable()
                target.item_count = len(adapter.read_zone())
                target.item_count_at = timezone.now()
        finally:
            adapter.close()
    with transaction.atomic():
        if Target.objects.filter(name=target.name).exists():
            raise ValidationFailed([{"index": None, "field": "name", "message": f"target {target.name} already exists"}])
        try:
            target.save()
        except IntegrityError:
            raise ValidationFailed([{"index": None, "field": "name", "message": f"target {target.name} already exists"}]) from None
        audit_record(actor=actor, origin=origin, action="target_registered", target=target,
                     payload={"name": target.name, "kind": kind, "config": normalized, "serial": serial,
                              "rrset_count": target.item_count})
    return target


@retry_on_contention
def target_rename(
    *, actor: AbstractBaseUser | None, target: Target, name: Any, origin: RequestOrigin = SYSTEM
) -> Target:
    """Give a target a new (unique) name, e.g. to move an old registration aside.
    Operators only (actor None = a management command); audited with both names."""
    if actor is not None:
        require_operator(actor, "rename targets")
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 253:
        raise ValidationFailed([{"index": None, "field": "name", "message": "a name of 1..253 characters is required"}])
    with transaction.atomic():
        # FOR UPDATE, not the usual NO KEY UPDATE: the name is a unique key, so the
        # UPDATE below needs the strong lock; take it first, not as an upgrade
        # (changes.locking).
        locked = Target.objects.select_for_update().get(pk=target.pk)
        before, after = locked.name, name.strip()
        if Target.objects.filter(name=after).exclude(pk=locked.pk).exists():
            raise ValidationFailed([{"index": None, "field": "name", "message": f"target {after} already exists"}])
        locked.name = after
        locked.save(update_fields=["name", "updated_at"])
        audit_record(actor=actor, origin=origin, action="target_renamed", target=locked,
                     payload={"before": before, "after": after})
    return locked


POLICY_RANGES = {
    "required_approvals": (1, 10),
    "approval_lifetime_seconds": (60, 30 * 86400),
    "bake_seconds": (0, 86400),
    "emergency_review_hours": (1, 720),
    "oob_interval_seconds": (0, 7 * 86400),  # 0 = no out-of-band change detection
}


def _policy_errors(**values: Any) -> list[dict[str, Any]]:
    errors = []
    for field, value in values.items():
        low, high = POLICY_RANGES[field]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            errors.append({"index": None, "field": field, "message": f"must be an integer {low}..{high}"})
    return errors


@retry_on_contention
def target_update_policy(
    *, actor: AbstractBaseUser, target: Target, origin: RequestOrigin = SYSTEM, **changes: Any
) -> Target:
    """Change a target's policy (approvals, lifetimes, bake time, default checks,
    frozen). Operators only; audited with the old and new values."""
    require_operator(actor, "change a target's policy")
    allowed = {*POLICY_RANGES, "health_checks", "frozen", "webhook_url"}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise ValidationFailed([{"index": None, "field": f, "message": "not a policy field"} for f in unknown])
    errors = _policy_errors(**{k: v for k, v in changes.items() if k in POLICY_RANGES})
    if "frozen" in changes and not isinstance(changes["frozen"], bool):
        errors.append({"index": None, "field": "frozen", "message": "must be true or false"})
    if changes.get("webhook_url"):
        try:
            URLValidator(schemes=["http", "https"])(changes["webhook_url"])
        except DjangoValidationError:
            errors.append({"index": None, "field": "webhook_url", "message": "must be an http(s) URL"})
    if errors:
        raise ValidationFailed(errors)
    if "health_checks" in changes:
        changes["health_checks"] = validate_health_checks(changes["health_checks"])
    with transaction.atomic():
        locked = lock_target(target.pk)
        before = {field: getattr(locked, field) for field in changes}
        changed = {field: value for field, value in changes.items() if before[field] != value}
        if not changed:
            return locked
        for field, value in changed.items():
            setattr(locked, field, value)
        locked.save(update_fields=[*changed, "updated_at"])
        audit_record(actor=actor, origin=origin, action="target_policy_changed", target=locked,
                     payload={"before": {f: before[f] for f in changed}, "after": changed})
    return locked


def target_refresh_zone_stats(*, target: Target) -> int:
    """Refresh the cached RRset count from a whole-zone read."""
    adapter = _open_adapter(target)
    try:
        with target_unavailable_on_adapter_error(target):
            count = len(adapter.read_zone())
    finally:
        adapter.close()
    Target.objects.filter(pk=target.pk).update(item_count=count, item_count_at=timezone.now())
    target.item_count = count
    return count


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
    allow_apex: bool = False,
    origin: RequestOrigin = SYSTEM,
) -> ChangeRequest:
    """Create a draft change and its dry-run plan against the live target.
    Raises NotPermitted, ValidationFailed, TargetUnavailable; stores nothing then."""
    require_target_permission(actor, "submit_change", target)
    title, reason = _validate_text(title, reason)
    checks = validate_health_checks(health_checks)
    prepared = _prepare_items(target=target, items=items, patch=patch, allow_apex=allow_apex)
    plan = _plan(target, prepared, allow_apex=allow_apex)
    with transaction.atomic():
        change = ChangeRequest(
            target=target, author=actor, title=title, reason=reason, items=prepared.raw,
            health_checks=checks, allow_apex=allow_apex,
        )
        _store_plan(change, plan)
        change.save()
        audit_record(actor=actor, origin=origin, action="change_created", change=change,
                     payload={"title": title, "reason": reason, "items": prepared.raw,
                              "health_checks": checks, "allow_apex": allow_apex, "plan": change.plan,
                              **_plan_summary(change)})
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
    allow_apex: bool | None = None,
    origin: RequestOrigin = SYSTEM,
) -> ChangeRequest:
    """Edit a change that is not yet approved. Records the editor and re-plans; a
    new revision means approvals given to the old one no longer count."""
    target = change.target
    if change.author_id != actor.pk:
        require_target_permission(actor, "submit_change", target)
    if change.state not in EDITABLE:
        raise InvalidTransition(f"change #{change.pk} is {change.state}; only {', '.join(sorted(EDITABLE))} changes can be edited")
    revision = change.revision
    new_title, new_reason = _validate_text(title if title is not None else change.title,
                                           reason if reason is not None else change.reason)
    checks = validate_health_checks(health_checks) if health_checks is not None else change.health_checks
    apex = change.allow_apex if allow_apex is None else bool(allow_apex)
    if items is None and patch in (None, ""):
        items = change.items
    prepared = _prepare_items(target=target, items=items, patch=patch, allow_apex=apex)
    plan = _plan(target, prepared, allow_apex=apex)
    with transaction.atomic():
        locked = lock_editable(change, revision=revision)
        old_fingerprint = locked.fingerprint
        locked.title, locked.reason, locked.items = new_title, new_reason, prepared.raw
        locked.health_checks, locked.allow_apex = checks, apex
        locked.revision += 1
        _store_plan(locked, plan)
        locked.save()
        if actor.pk != locked.author_id:
            locked.editors.add(actor)
        # Reviewers approved the old revision; nobody approved this one.
        invalidated = approvals_invalidate(change=locked, reason=f"edited by {actor.get_username()}")
        audit_record(actor=actor, origin=origin, action="change_edited", change=locked,
                     payload={"title": new_title, "reason": new_reason, "items": prepared.raw,
                              "health_checks": checks, "allow_apex": apex, "revision": locked.revision,
                              "approvals_invalidated": invalidated,
                              "previous_fingerprint": old_fingerprint, "plan": locked.plan,
                              **_plan_summary(locked)})
    return locked


@retry_on_contention
def change_plan(*, actor: AbstractBaseUser, change: ChangeRequest, origin: RequestOrigin = SYSTEM) -> ChangeRequest:
    """Re-run the dry-run against live. A different result replaces the stored plan
    (and with it the fingerprint any approval was bound to)."""
    target = change.target
    if not (change.author_id == actor.pk or has_target_permission(actor, "submit_change", target)
            or has_target_permission(actor, "approve_change", target)):
        raise NotPermitted(f"you lack the submit_change or approve_change permission on target {target.name}")
    if change.state not in EDITABLE:
        raise InvalidTransition(f"change #{change.pk} is {change.state}; its plan is fixed")
    revision = change.revision
    prepared = _prepare_items(target=target, items=change.items, patch=None, allow_apex=change.allow_apex)
    plan = _plan(target, prepared, allow_apex=change.allow_apex)
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
        if not in_author_set(actor, locked):
            raise NotPermitted("only the author or an editor of a change may submit it")
        require_target_permission(actor, "submit_change", locked.target)
        if not (locked.plan or {}).get("steps"):
            raise InvalidTransition(f"change #{locked.pk} has nothing to do: the live zone already matches it")
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
        # Who you are before what you wrote: a 403 must not depend on the body.
        if not can_cancel(actor, locked):
            raise NotPermitted("only the author, an editor or an operator may cancel a change")
        # Then the state: cancelling a finished change is a conflict whatever the body says.
        if State.CANCELLED not in TRANSITIONS.get(locked.state, frozenset()):
            raise InvalidTransition(f"change #{locked.pk} is {locked.state}; it cannot move to {State.CANCELLED}")
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
        reason=f"Rollback of change #{change.pk}. {reason.strip()}", items=items, allow_apex=change.allow_apex,
        health_checks=change.health_checks, origin=origin,
    )
