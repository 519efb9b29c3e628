"""Reads, filtered by what the user may see. Something you may not see does not
exist for you: 404, never 403."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet
from django.http import Http404
from guardian.shortcuts import get_objects_for_user

from dns_adapters.base import Plan
from dns_adapters.presentation import unified_diff

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
    target = qs.filter(pk=int(text)).first() if text.isdigit() else qs.filter(name=text).first()
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
