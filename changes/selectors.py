"""Reads, filtered by what the user may see. Something you may not see does not
exist for you: 404, never 403."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet
from django.http import Http404
from guardian.shortcuts import get_objects_for_user

from dns_adapters.base import AdapterError, Plan, RRKey, RRValue
from dns_adapters.planning import parse_owner, parse_rdtype, zone_name
from dns_adapters.presentation import unified_diff

from .adapters import adapter_for
from .errors import TargetUnavailable, ValidationFailed
from .models import AuditEvent, ChangeRequest, Target

# Any role on a target lets you see it and its changes.
VISIBLE_WITH = [
    "changes.view_target",
    "changes.submit_change",
    "changes.approve_change",
    "changes.emergency_change",
    "changes.export_audit",
]


def targets_visible(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Target]:
    if not user.is_authenticated or not user.is_active:
        return Target.objects.none()
    return get_objects_for_user(user, VISIBLE_WITH, klass=Target, any_perm=True, accept_global_perms=False)


def changes_visible(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[ChangeRequest]:
    return (
        ChangeRequest.objects.filter(target__in=targets_visible(user=user))
        .select_related("target", "author")
        .prefetch_related("editors")
    )


def access_target(*, user: AbstractBaseUser | AnonymousUser, ref: Any) -> Target:
    """A target by id or name, if the user may see it; Http404 otherwise."""
    qs = targets_visible(user=user)
    text = str(ref).strip()
    if "\x00" in text:  # PostgreSQL refuses NUL in text: no target can have such a name
        raise Http404("no such target")
    # isascii: "²".isdigit() is True but int("²") fails.
    target = qs.filter(pk=int(text)).first() if text.isascii() and text.isdigit() else qs.filter(name=text).first()
    if target is None:
        raise Http404("no such target")
    return target


def access_change(*, user: AbstractBaseUser | AnonymousUser, pk: Any) -> ChangeRequest:
    try:
        return changes_visible(user=user).get(pk=int(pk))
    except (ChangeRequest.DoesNotExist, ValueError, TypeError):
        raise Http404("no such change") from None


def change_plan_of(change: ChangeRequest) -> Plan | None:
    return Plan.from_json(change.plan) if change.plan else None


def change_diff(change: ChangeRequest) -> str:
    plan = change_plan_of(change)
    return unified_diff(plan) if plan else ""


def change_events(change: ChangeRequest) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(change=change).order_by("seq")


def target_read_live(*, target: Target, name: Any, rdtype: Any) -> tuple[RRKey, RRValue | None]:
    """The live RRset at (name, rdtype) of a DNS target, read from its primary.
    `name` is relative to the zone unless absolute. Raises ValidationFailed naming
    `name` or `type`, TargetUnavailable when the zone cannot be read."""
    owner, name_error = parse_owner(name, zone_name(target.config["zone"]))
    canonical_type, type_error = parse_rdtype(rdtype)
    errors = [
        {"index": None, "field": field, "message": message}
        for field, message in (("name", name_error), ("type", type_error))
        if message
    ]
    if errors:
        raise ValidationFailed(errors)
    key = RRKey(owner, canonical_type)  # type: ignore[arg-type]
    try:
        adapter = adapter_for(target)
        try:
            return key, adapter.read([key])[key]
        finally:
            adapter.close()
    except AdapterError as exc:
        raise TargetUnavailable(f"target {target.name}: {exc.message}", permanent=exc.permanent) from None
