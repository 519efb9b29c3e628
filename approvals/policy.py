"""The four-eyes policy. Every entry point (API, admin, CLI, shell, tasks) asks
here; nothing else decides who may do what to a target."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from changes.errors import NotPermitted
from changes.models import Target

PERMISSIONS = ("view_target", "submit_change", "approve_change", "emergency_change", "export_audit")


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
