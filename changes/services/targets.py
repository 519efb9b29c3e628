"""Every write to targets: register, rename, policy, zone statistics. Operators
only; each in one transaction with its audit event. The live target is read
before the transaction (a slow server must not hold a row lock)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.utils import timezone

from adapters import ItemValidationError, UnknownKind
from audit.chain import SYSTEM, RequestOrigin, audit_record
from changes.adapters import adapter_for, adapter_open, validate_target_config
from changes.errors import ValidationFailed
from changes.kinds import REGISTRY, target_unavailable_on_adapter_error
from changes.locking import lock_target, retry_on_contention
from changes.models import Target
from changes.permissions import require_operator
from pipeline.check_specs import validate_health_checks
from pipeline.window_hold import window_holds_recheck
from pipeline.windows import validate_change_windows


def target_register(
    *,
    actor: AbstractBaseUser | None,
    name: str,
    config: dict[str, Any],
    kind: str = "dns",
    required_approvals: int = 1,
    approval_lifetime_seconds: int = 24 * 3600,
    bake_seconds: int = 60,
    bake_max_seconds: int = 3600,
    watch_seconds: int | None = None,
    watch_interval_seconds: int = 30,
    watch_auto_revert: bool = True,
    change_windows: Any = None,
    health_checks: Sequence[dict[str, Any]] = (),
    frozen: bool = False,
    origin: RequestOrigin = SYSTEM,
    check_reachable: bool = True,
    prepare: bool = False,
) -> Target:
    """Register a target after checking the adapter config and that the target answers
    (DNS: SOA over TCP with the key; nftables: the helper runs and the owned tables
    exist, or with `prepare` are created empty). Operators only (actor None = a
    management command)."""
    if actor is not None:
        require_operator(actor, "register targets")
    errors = []
    if not isinstance(name, str) or not name.strip():
        errors.append({"index": None, "field": "name", "message": "name is required"})
    if kind not in REGISTRY:
        errors.append({"index": None, "field": "kind", "message": f"kind must be one of {', '.join(REGISTRY.names())}"})
    errors += _policy_errors(required_approvals=required_approvals,
                             approval_lifetime_seconds=approval_lifetime_seconds, bake_seconds=bake_seconds,
                             bake_max_seconds=bake_max_seconds, watch_interval_seconds=watch_interval_seconds)
    errors += _watch_errors(watch_seconds=watch_seconds, watch_auto_revert=watch_auto_revert)
    windows = _windows_or_errors(change_windows, errors)
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
        bake_max_seconds=bake_max_seconds, health_checks=checks, frozen=frozen, watch_seconds=watch_seconds,
        watch_interval_seconds=watch_interval_seconds, watch_auto_revert=watch_auto_revert, change_windows=windows,
    )
    serial = None
    if check_reachable:
        adapter = adapter_for(target)
        try:
            what = f"cannot reach zone {normalized['zone']}" if normalized.get("zone") else f"cannot reach {name}"
            with target_unavailable_on_adapter_error(target, what=what):
                serial = adapter.check_reachable(prepare=prepare)
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
    "bake_max_seconds": (0, 86400),  # the cap on a TTL-derived bake (pipeline/bake_time.py)
    "emergency_review_hours": (1, 720),
    "oob_interval_seconds": (0, 7 * 86400),  # 0 = no out-of-band change detection
    "watch_interval_seconds": (1, 3600),  # between check rounds in the watch window (pipeline.watch)
}
# The watch window after the bake: null = as long as the change's bake (pipeline.watch).
WATCH_SECONDS_MAX = 7 * 86400


def _watch_errors(**values: Any) -> list[dict[str, Any]]:
    """The watch policy fields that are not plain ranges: watch_seconds may be null
    (as long as the bake), watch_auto_revert is a boolean."""
    errors = []
    if "watch_seconds" in values:
        value = values["watch_seconds"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value <= WATCH_SECONDS_MAX):
            errors.append({"index": None, "field": "watch_seconds",
                           "message": f"must be null (as long as the bake) or an integer 0..{WATCH_SECONDS_MAX}"})
    if "watch_auto_revert" in values and not isinstance(values["watch_auto_revert"], bool):
        errors.append({"index": None, "field": "watch_auto_revert", "message": "must be true or false"})
    return errors


def _windows_or_errors(raw: Any, errors: list[dict[str, Any]]) -> dict[str, Any]:
    """The normalized change windows (pipeline.windows), or {} with its errors added."""
    try:
        return validate_change_windows(raw)
    except ValidationFailed as exc:
        errors += exc.errors
        return {}


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
    allowed = {*POLICY_RANGES, "health_checks", "frozen", "webhook_url", "watch_seconds", "watch_auto_revert",
               "change_windows"}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise ValidationFailed([{"index": None, "field": f, "message": "not a policy field"} for f in unknown])
    errors = _policy_errors(**{k: v for k, v in changes.items() if k in POLICY_RANGES})
    errors += _watch_errors(**{k: v for k, v in changes.items() if k in ("watch_seconds", "watch_auto_revert")})
    if "change_windows" in changes:
        changes["change_windows"] = _windows_or_errors(changes["change_windows"], errors)
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
        if "change_windows" in changed:
            # Changes held for the old windows are judged by the new ones now, not at the old opening.
            window_holds_recheck(target_id=locked.pk)
        audit_record(actor=actor, origin=origin, action="target_policy_changed", target=locked,
                     payload={"before": {f: before[f] for f in changed}, "after": changed})
    return locked


def target_refresh_zone_stats(*, target: Target) -> int:
    """Refresh the cached RRset count from a whole-zone read."""
    adapter = adapter_open(target)
    try:
        with target_unavailable_on_adapter_error(target):
            count = len(adapter.read_zone())
    finally:
        adapter.close()
    Target.objects.filter(pk=target.pk).update(item_count=count, item_count_at=timezone.now())
    target.item_count = count
    return count


