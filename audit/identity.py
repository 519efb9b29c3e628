"""Every change to who someone is or what they may do is an audit event.

Django's own User and Group admin pages, `createsuperuser`, `changepassword`,
guardian rows written by hand: none of them call a changegate service, so the
events are written from model signals. `RequestActorMiddleware` remembers the
request being served, so an event names the person who made the change (read at
signal time: DRF sets the authenticated user on the underlying request); without a
request (a management command, a shell) the actor is the OS user and host.

Each event is written in the transaction of the change when there is one (the
admin wraps its forms in one), else in its own. Password hashes never appear:
a password change is recorded as `{"field": "password", "changed": true}`.

Every privilege gained this way is also a `PrivilegeGain` row (for the self-grant
rule) and every new account an `AccountOrigin` row (who created it). The
permission services in `changes.permissions` write their own, richer events, and
the guardian-row events stay silent while they do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.http import HttpRequest, HttpResponse
from guardian.models import GroupObjectPermission, UserObjectPermission

from audit.chain import RequestOrigin, audit_record
from changes.models import AccountOrigin, Origin, Target
from changes.permissions import os_actor, privilege_gained, service_is_writing

_current_request: ContextVar[HttpRequest | None] = ContextVar("changegate_current_request", default=None)

# User fields whose changes are recorded. last_login moves on every sign-in and says
# nothing about rights; the password is recorded as changed, never its value.
USER_FIELDS = ("username", "email", "first_name", "last_name", "is_active", "is_staff", "is_superuser", "password")


class RequestActorMiddleware:
    """Remembers the request being served, for the identity events' actor."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)


def _context() -> tuple[AbstractBaseUser | None, RequestOrigin, dict[str, str]]:
    """(actor, origin, extra payload) for an event written now."""
    request = _current_request.get()
    if request is None:
        return None, RequestOrigin(kind=Origin.CLI), {"actor": os_actor()}
    user = getattr(request, "user", None)
    actor = user if user is not None and user.is_authenticated else None
    kind = Origin.ADMIN if request.path.startswith("/admin/") else Origin.API
    return actor, RequestOrigin.from_request(request, kind=kind), {}


def _record(action: str, payload: dict[str, Any], *, target: Target | None = None) -> AbstractBaseUser | None:
    actor, origin, extra = _context()
    with transaction.atomic():
        audit_record(actor=actor, origin=origin, action=action, target=target, payload={**payload, **extra})
    return actor


def _actor_label() -> str:
    """What created an account when no signed-in user did: a command, or a sign-in (single sign-on)."""
    actor, origin, extra = _context()
    return extra.get("actor") or ("" if actor is not None else f"unauthenticated {origin.kind} request")


def _name(user: Any) -> str:
    return user.get_username()


def _perm_name(permission: Permission) -> str:
    return f"{permission.content_type.app_label}.{permission.codename}"


# ---------------------------------------------------------------------------
# Users and groups


def _user_pre_save(sender: type, instance: Any, raw: bool = False, update_fields: Any = None, **kwargs: Any) -> None:
    instance._changegate_before = None
    if raw or instance.pk is None:
        return
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return
    instance._changegate_before = sender.objects.filter(pk=instance.pk).values(*USER_FIELDS).first()


def _user_post_save(sender: type, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        return
    if created:
        actor = _record("user_created", {"user": _name(instance), "is_active": instance.is_active,
                                         "is_staff": instance.is_staff, "is_superuser": instance.is_superuser})
        AccountOrigin.objects.get_or_create(user_id=instance.pk, defaults={
            "created_by_id": getattr(actor, "pk", None), "created_by_label": _actor_label()})
        if instance.is_superuser:
            privilege_gained(users=[instance], target=None, privilege="is_superuser", granted_by=actor)
        return
    before = getattr(instance, "_changegate_before", None)
    if not before:
        return
    for field in USER_FIELDS:
        old, new = before[field], getattr(instance, field)
        if old == new:
            continue
        if field == "password":
            _record("user_changed", {"user": _name(instance), "field": "password", "changed": True})
            continue
        actor = _record("user_changed", {"user": _name(instance), "field": field, "before": old, "after": new})
        if field == "is_superuser" and new:
            privilege_gained(users=[instance], target=None, privilege="is_superuser", granted_by=actor)
    instance._changegate_before = None


def _user_post_delete(sender: type, instance: Any, **kwargs: Any) -> None:
    _record("user_deleted", {"user": _name(instance)})


def _group_pre_save(sender: type, instance: Group, raw: bool = False, **kwargs: Any) -> None:
    instance._changegate_before = (  # type: ignore[attr-defined]
        None if raw or instance.pk is None else Group.objects.filter(pk=instance.pk).values_list("name", flat=True).first()
    )


def _group_post_save(sender: type, instance: Group, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if raw:
        return
    if created:
        _record("group_created", {"group": instance.name})
        return
    before = getattr(instance, "_changegate_before", None)
    if before is not None and before != instance.name:
        _record("group_changed", {"group": instance.name, "field": "name", "before": before, "after": instance.name})


def _group_post_delete(sender: type, instance: Group, **kwargs: Any) -> None:
    _record("group_deleted", {"group": instance.name})


# ---------------------------------------------------------------------------
# Memberships and model-wide permissions (m2m, either side)


def _m2m_pairs(instance: Any, reverse: bool, model: type, pk_set: Iterable[Any]) -> list[tuple[Any, Any]]:
    """(owner, related) pairs with the owner on the forward side, whichever side changed."""
    others = list(model.objects.filter(pk__in=pk_set))
    return [(other, instance) for other in others] if reverse else [(instance, other) for other in others]


def _m2m_handler(describe: Callable[[Any, Any, bool], None]) -> Callable[..., None]:
    def handler(sender: type, instance: Any, action: str, reverse: bool, model: type, pk_set: Any,
                **kwargs: Any) -> None:
        if action == "pre_clear":
            # clear() sends no pk_set: remember what is about to go.
            instance._changegate_cleared = _cleared(sender, instance, reverse)
            return
        if action == "post_clear":
            pairs = getattr(instance, "_changegate_cleared", [])
            added = False
        elif action in ("post_add", "post_remove"):
            pairs = _m2m_pairs(instance, reverse, model, pk_set or ())
            added = action == "post_add"
        else:
            return
        for owner, related in pairs:
            describe(owner, related, added)

    return handler


def _cleared(through: type, instance: Any, reverse: bool) -> list[tuple[Any, Any]]:
    # The through model has one FK to each side; find the rows of `instance`.
    fks = [f for f in through._meta.fields if f.is_relation]
    own = next(f for f in fks if isinstance(instance, f.related_model))
    other = next(f for f in fks if f is not own)
    if own.related_model is other.related_model:  # pragma: no cover - no self-referencing m2m here
        return []
    rows = through.objects.filter(**{own.name: instance}).select_related(other.name)
    related = [getattr(row, other.name) for row in rows]
    return [(r, instance) for r in related] if reverse else [(instance, r) for r in related]


def _membership(user: Any, group: Group, added: bool) -> None:
    actor = _record("group_membership_added" if added else "group_membership_removed",
                    {"user": _name(user), "group": group.name})
    if added:
        privilege_gained(users=[user], target=None, privilege=f"group:{group.name}", granted_by=actor)


def _user_permission(user: Any, permission: Permission, added: bool) -> None:
    actor = _record("user_permission_added" if added else "user_permission_removed",
                    {"user": _name(user), "permission": _perm_name(permission)})
    if added:
        privilege_gained(users=[user], target=None, privilege=f"perm:{_perm_name(permission)}", granted_by=actor)


def _group_permission(group: Group, permission: Permission, added: bool) -> None:
    actor = _record("group_permission_added" if added else "group_permission_removed",
                    {"group": group.name, "permission": _perm_name(permission)})
    if added:
        privilege_gained(users=group.user_set.all(), target=None,
                         privilege=f"group:{group.name}:{_perm_name(permission)}", granted_by=actor)


# ---------------------------------------------------------------------------
# django-guardian rows written outside the permission services


def _object_permission(row: Any, added: bool) -> None:
    if service_is_writing():
        return
    target = row.content_object if row.content_type.model_class() is Target else None
    principal = {"user": _name(row.user)} if isinstance(row, UserObjectPermission) else {"group": row.group.name}
    payload = {**principal, "permission": _perm_name(row.permission), "object": f"{row.content_type.model}:{row.object_pk}"}
    actor = _record("object_permission_added" if added else "object_permission_removed", payload, target=target)
    if added:
        users = [row.user] if isinstance(row, UserObjectPermission) else row.group.user_set.all()
        privilege_gained(users=users, target=target, privilege=f"perm:{_perm_name(row.permission)}",
                         granted_by=actor)


def _object_permission_saved(sender: type, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if created and not raw:
        _object_permission(instance, True)


def _object_permission_deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    _object_permission(instance, False)


def connect() -> None:
    """Called once from ChangesConfig.ready()."""
    User = get_user_model()
    uid = "changegate_identity_audit"
    pre_save.connect(_user_pre_save, sender=User, dispatch_uid=f"{uid}_user_pre")
    post_save.connect(_user_post_save, sender=User, dispatch_uid=f"{uid}_user_post")
    post_delete.connect(_user_post_delete, sender=User, dispatch_uid=f"{uid}_user_del")
    pre_save.connect(_group_pre_save, sender=Group, dispatch_uid=f"{uid}_group_pre")
    post_save.connect(_group_post_save, sender=Group, dispatch_uid=f"{uid}_group_post")
    post_delete.connect(_group_post_delete, sender=Group, dispatch_uid=f"{uid}_group_del")
    m2m_changed.connect(_m2m_handler(_membership), sender=User.groups.through, dispatch_uid=f"{uid}_groups",
                        weak=False)
    m2m_changed.connect(_m2m_handler(_user_permission), sender=User.user_permissions.through,
                        dispatch_uid=f"{uid}_user_perms", weak=False)
    m2m_changed.connect(_m2m_handler(_group_permission), sender=Group.permissions.through,
                        dispatch_uid=f"{uid}_group_perms", weak=False)
    for model in (UserObjectPermission, GroupObjectPermission):
        post_save.connect(_object_permission_saved, sender=model, dispatch_uid=f"{uid}_{model.__name__}_add")
        post_delete.connect(_object_permission_deleted, sender=model, dispatch_uid=f"{uid}_{model.__name__}_del")
