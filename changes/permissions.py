"""Who may do what: the one permissions module.

Roles (DESIGN.md, Users):

- per target, held through django-guardian object permissions: engineer,
  reviewer, auditor, emergency (`ROLES`);
- model-wide: operator, the `changes.operate_targets` permission. Operators
  register targets, edit their policy, grant roles and cancel changes.

`is_staff` only lets a person into the admin; nothing here reads it.

Grants are four-eyes too: a role that lets a person approve or break glass
(`FOUR_EYES_ROLES`) is given only when a second operator approves a
`GrantRequest` (neither the requester nor the grantee). Lower roles an operator
grants directly, never to himself. The break-glass for the very first setup is
`manage.py grant --bootstrap --reason`, recorded as such.

Every grant, revoke and request is an audit event; every privilege a user gains
is a `PrivilegeGain` row, which `require_no_self_grant` reads: nobody approves a
change on a target where they, or the change's author set, gave them rights
within the target's approval lifetime, nor a change by the person who created
their account (or whose account they created).
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta
from functools import reduce
from operator import or_
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import BooleanField, Case, Exists, OuterRef, Q, Value, When
from django.utils import timezone
from guardian.models import GroupObjectPermission, UserObjectPermission
from guardian.shortcuts import assign_perm, remove_perm

from audit.chain import SYSTEM, RequestOrigin, audit_record
from changes.errors import InvalidTransition, NotPermitted, ValidationFailed
from changes.lifecycle import in_author_set
from changes.models import AccountOrigin, ChangeRequest, GrantRequest, PrivilegeGain, Target

PERMISSIONS = ("view_target", "submit_change", "approve_change", "emergency_change", "export_audit")

# What each role may do on a target, granted per target. The one table: the demo
# setup, `manage.py grant` and the tests read it from here too.
ROLES: dict[str, tuple[str, ...]] = {
    "engineer": ("view_target", "submit_change"),
    "reviewer": ("view_target", "approve_change"),
    "auditor": ("view_target", "export_audit"),
    "emergency": ("view_target", "emergency_change"),
}
# Roles whose grant is itself a four-eyes request: they let a person make a change happen.
FOUR_EYES_ROLES = frozenset({"reviewer", "emergency"})
FOUR_EYES_PERMISSIONS = frozenset({"approve_change", "emergency_change"})
OPERATOR_PERMISSION = "changes.operate_targets"

User = AbstractBaseUser | AnonymousUser | None


# ---------------------------------------------------------------------------
# Checks


def has_target_permission(user: User, perm: str, target: Target) -> bool:
    """Per-object permission on the target (directly or via a group, django-guardian).
    Model-wide grants do not count: access is given zone by zone."""
    if perm not in PERMISSIONS:
        raise ValueError(f"unknown target permission {perm}")
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return user.has_perm(f"changes.{perm}", target)


def require_target_permission(user: User, perm: str, target: Target) -> None:
    if not has_target_permission(user, perm, target):
        raise NotPermitted(f"you lack the {perm} permission on target {target.name}")


def is_operator(user: User) -> bool:
    """The operator role: the model-wide `changes.operate_targets` permission
    (superusers hold every permission). Never `is_staff`."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return user.has_perm(OPERATOR_PERMISSION)


def require_operator(user: User, doing: str) -> None:
    if not is_operator(user):
        raise NotPermitted(f"only operators may {doing}")


def may_change_privileges(*, actor: User, user: AbstractBaseUser | None = None, group: Group | None = None) -> bool:
    """Whether `actor` may change the superuser flag, groups or model-wide permissions
    of `user`, or the permissions of `group`: superusers only, and never their own
    account or a group they belong to (someone else must raise you)."""
    if actor is None or not actor.is_authenticated or not actor.is_active or not actor.is_superuser:
        return False
    if user is not None and user.pk == actor.pk:
        return False
    return not (group is not None and group.user_set.filter(pk=actor.pk).exists())


def can_cancel(user: User, change: ChangeRequest) -> bool:
    """The author, an editor, or an operator."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return in_author_set(user, change) or is_operator(user)  # type: ignore[arg-type]


def os_actor() -> str:
    """Who ran a command, as "os:user@host": commands have no signed-in user, and an
    audit event with an empty actor proves nothing."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (containers)
        import os

        name = f"uid{os.getuid()}"
    return f"os:{name}@{socket.gethostname()}"


def actor_fields(actor: AbstractBaseUser | None) -> dict[str, str]:
    """Payload naming a command's OS user when there is no signed-in actor."""
    return {} if actor is not None else {"actor": os_actor()}


# ---------------------------------------------------------------------------
# The self-grant rule


def _self_grant_windows(approver_id: Any, *, now: datetime,
                        targets: dict[int, int]) -> dict[int, frozenset[int] | None]:
    """Who gave `approver_id` rights reaching each of `targets` ({target id: its approval lifetime in seconds})
    within that lifetime before `now`: None where he granted or requested them himself, else the ids of the
    people who did (targets with neither are left out). One statement: his gains since the longest of the
    lifetimes (a handful of rows). The window is decided here, per target, so that no query does date
    arithmetic per change row (on SQLite a Python function call per row: 5,000 per count of the queue)."""
    if not targets:
        return {}
    gains = list(PrivilegeGain.objects.filter(
        Q(target_id__in=sorted(targets)) | Q(target__isnull=True), user_id=approver_id,
        at__gte=now - timedelta(seconds=max(targets.values())),
    ).values_list("target_id", "granted_by_id", "requested_by_id", "at"))
    windows: dict[int, frozenset[int] | None] = {}
    for target_id, lifetime in targets.items():
        since, people = now - timedelta(seconds=lifetime), set()
        for reaching, granted_by, requested_by, at in gains:
            if at < since or reaching not in (None, target_id):
                continue
            if approver_id in (granted_by, requested_by):
                windows[target_id] = None
                break
            people.update(person for person in (granted_by, requested_by) if person is not None)
        else:
            if people:
                windows[target_id] = frozenset(people)
    return windows


def self_grant_conditions(approver_id: Any, *, now: datetime, targets: dict[int, int]) -> tuple[Q, Q]:
    """The self-grant rule, once: two conditions on rows of changes on `targets` ({target id: its approval
    lifetime in seconds}), true when `approver_id` may not approve the change (gained rights, account origin);
    asked of one change (require_no_self_grant) or of a list (the queue). Reads the approver's recent gains first
    (one statement, _self_grant_windows); the conditions then compare a change's columns with constants and with
    subqueries that do not depend on the row (its editors aside): no date arithmetic per change."""

    def by_any_of(*people: Any) -> Q:  # the change's author set meets `people` (id lists or one-column subqueries)
        editors = ChangeRequest.editors.through.objects.filter(changerequest_id=OuterRef("pk"))
        return (reduce(or_, [Q(author_id__in=some) for some in people])
                | Q(Exists(editors.filter(reduce(or_, [Q(user_id__in=some) for some in people])))))

    gained = Q(pk__in=[])  # nothing
    grouped: dict[frozenset[int] | None, list[int]] = {}
    for target_id, people in _self_grant_windows(approver_id, now=now, targets=targets).items():
        grouped.setdefault(people, []).append(target_id)
    for people, target_ids in grouped.items():
        gained |= Q(target_id__in=sorted(target_ids)) & (Q() if people is None else by_any_of(sorted(people)))
    # Who created his account, and whose accounts he created (not null: NOT IN over a NULL is never true).
    origins = AccountOrigin.objects.filter(created_by__isnull=False)
    return gained, by_any_of(origins.filter(user_id=approver_id).values("created_by_id"),
                             origins.filter(created_by_id=approver_id).values("user_id"))


def require_no_self_grant(*, approver: AbstractBaseUser, change: ChangeRequest, now: datetime | None = None) -> None:
    """Refuse (NotPermitted) when `approver` gained a privilege reaching `change.target` within the target's
    approval lifetime, granted or requested by himself or the change's author set, or when his account and an
    author's were created one by the other. Every approval path (approve, break-glass) calls this."""
    gained, origin = self_grant_conditions(approver.pk, now=now or timezone.now(),
                                           targets={change.target_id: change.target.approval_lifetime_seconds})
    # Asked of the stored row (one statement after the gains); a change not stored cannot be approved either.
    self_granted, puppet = ChangeRequest.objects.filter(pk=change.pk).values_list(
        Case(When(gained, then=Value(True)), default=Value(False), output_field=BooleanField()),
        Case(When(origin, then=Value(True)), default=Value(False), output_field=BooleanField()),
    ).first() or (True, True)
    if self_granted:
        raise NotPermitted(f"you received rights reaching target {change.target.name} from yourself or from the "
                           f"author of change #{change.pk} within the approval lifetime; someone else must approve it")
    if puppet:
        raise NotPermitted(f"your account and the account of an author of change #{change.pk} were created one by "
                           "the other; someone else must approve it")


# ---------------------------------------------------------------------------
# Grants. The identity signals (audit.identity) record raw permission
# rows; the services below write their own, richer events and say so here.

_service_writing: ContextVar[bool] = ContextVar("changegate_permission_service_writing", default=False)


def service_is_writing() -> bool:
    """True while a service in this module writes guardian rows it audits itself."""
    return _service_writing.get()


@contextmanager
def _writing() -> Iterator[None]:
    token = _service_writing.set(True)
    try:
        yield
    finally:
        _service_writing.reset(token)


def target_role_grant(
    *, actor: AbstractBaseUser | None, target: Target, role: str, user: AbstractBaseUser | None = None,
    group: Group | None = None, origin: RequestOrigin = SYSTEM, reason: str = "", bootstrap: bool = False,
) -> list[str]:
    """Give `user` or `group` the permissions of `role` on `target` directly; audited
    as permission_granted. Operators only (actor None = a management command), never
    to themselves. Roles in FOUR_EYES_ROLES need a `GrantRequest` approved by a
    second operator instead, except with `bootstrap` (a written reason required):
    allowed for a command, or for an operator while nobody anywhere holds a
    four-eyes permission yet (the very first setup). Returns the permissions that
    were not held before."""
    _check_role_request(role, user, group)
    if actor is not None:
        require_operator(actor, "grant roles")
        if _is_principal(actor, user, group):
            raise NotPermitted("you cannot grant a role to yourself; ask another operator")
    if bootstrap:
        if not isinstance(reason, str) or not reason.strip():
            raise ValidationFailed([{"index": None, "field": "reason", "message": "say why a bootstrap grant is needed"}])
        if actor is not None and _four_eyes_grants_exist():
            raise NotPermitted("bootstrap grants are only for the first setup; someone already holds "
                               "approve_change or emergency_change: request the grant instead")
    elif role in FOUR_EYES_ROLES:
        raise NotPermitted(f"granting {role} is a request a second operator must approve (a grant request)")
    with transaction.atomic():
        added = _assign(target=target, role=role, user=user, group=group, granted_by=actor, requested_by=actor)
        payload: dict[str, Any] = {"role": role, **_principal(user, group), "permissions": added,
                                   **actor_fields(actor)}
        if bootstrap:
            payload.update(bootstrap=True, reason=reason.strip())
        elif reason:
            payload["reason"] = str(reason).strip()
        audit_record(actor=actor, origin=origin, action="permission_granted", target=target, payload=payload)
    return added


# Model-wide permissions that only open admin pages (list and add change requests,
# read the audit log); what a person may do to a target is always a target role.
ADMIN_PAGE_PERMISSIONS = frozenset({"add_changerequest", "view_changerequest", "view_auditevent"})


def admin_pages_grant(
    *, actor: AbstractBaseUser | None, group: Group, codenames: Iterable[str], origin: RequestOrigin = SYSTEM,
    reason: str = "",
) -> list[str]:
    """Let `group` open admin pages (ADMIN_PAGE_PERMISSIONS only); audited as
    admin_pages_granted. Operators only (actor None = a command). Returns the
    permissions that were not held before."""
    wanted = sorted(set(codenames))
    if unknown := [name for name in wanted if name not in ADMIN_PAGE_PERMISSIONS]:
        raise ValidationFailed([{"index": None, "field": "codenames",
                                 "message": f"not an admin-page permission: {', '.join(unknown)}"}])
    if actor is not None:
        require_operator(actor, "grant admin pages")
        if _is_principal(actor, None, group):
            raise NotPermitted("you cannot grant admin pages to a group you belong to; ask another operator")
    with transaction.atomic(), _writing():
        held = set(group.permissions.filter(content_type__app_label="changes").values_list("codename", flat=True))
        added = [name for name in wanted if name not in held]
        for name in added:
            assign_perm(f"changes.{name}", group)
        if added:
            audit_record(actor=actor, origin=origin, action="admin_pages_granted",
                         payload={"group": group.name, "permissions": added, "reason": reason.strip(),
                                  **actor_fields(actor)})
    return added


def target_role_revoke(
    *, actor: AbstractBaseUser | None, target: Target, role: str, user: AbstractBaseUser | None = None,
    group: Group | None = None, origin: RequestOrigin = SYSTEM,
) -> list[str]:
    """Take `role` on `target` away from `user` or `group`; audited as
    permission_revoked. Operators only (actor None = a command); taking rights away
    needs no second person. A permission another role still held there also gives
    stays (revoking reviewer from someone who is also an engineer keeps
    view_target). Returns the permissions removed."""
    _check_role_request(role, user, group)
    if actor is not None:
        require_operator(actor, "revoke roles")
    with transaction.atomic(), _writing():
        held = _direct_perms(target, user, group)
        kept = {perm for other, perms in ROLES.items() if other != role and set(perms) <= held for perm in perms}
        removed = [perm for perm in ROLES[role] if perm in held and perm not in kept]
        for perm in removed:
            remove_perm(f"changes.{perm}", user or group, target)
        audit_record(actor=actor, origin=origin, action="permission_revoked", target=target,
                     payload={"role": role, **_principal(user, group), "permissions": removed, **actor_fields(actor)})
    return removed


def grant_request_create(
    *, actor: AbstractBaseUser | None, target: Target, role: str, reason: Any, user: AbstractBaseUser | None = None,
    group: Group | None = None, origin: RequestOrigin = SYSTEM,
) -> GrantRequest:
    """Ask for `role` on `target` for a user or a group; a second operator decides
    (`grant_request_approve`). Operators only (actor None = a command)."""
    _check_role_request(role, user, group)
    if actor is not None:
        require_operator(actor, "request grants")
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationFailed([{"index": None, "field": "reason", "message": "say why the grant is needed"}])
    with transaction.atomic():
        request = GrantRequest.objects.create(
            target=target, role=role, user=user, group=group, reason=reason.strip(), requested_by=actor,
            requested_by_label="" if actor is not None else os_actor(),
        )
        audit_record(actor=actor, origin=origin, action="grant_requested", target=target,
                     payload={"request": request.pk, "role": role, **_principal(user, group),
                              "reason": request.reason, **actor_fields(actor)})
    return request


def grant_request_approve(
    *, actor: AbstractBaseUser, grant_request: GrantRequest, origin: RequestOrigin = SYSTEM, comment: str = "",
) -> GrantRequest:
    """Second operator's yes: the role is granted in this transaction. Refused for
    the requester and for the grantee (or a member of the grantee group)."""
    with transaction.atomic():
        locked = _lock_request(actor, grant_request, "approve")
        added = _assign(target=locked.target, role=locked.role, user=locked.user, group=locked.group,
                        granted_by=actor, requested_by=locked.requested_by)
        locked.state, locked.decided_by, locked.decided_at = GrantRequest.State.APPROVED, actor, timezone.now()
        locked.decision_comment = str(comment or "").strip()
        locked.save(update_fields=["state", "decided_by", "decided_at", "decision_comment"])
        audit_record(actor=actor, origin=origin, action="permission_granted", target=locked.target,
                     payload={"role": locked.role, **_principal(locked.user, locked.group), "permissions": added,
                              "request": locked.pk, "requested_by": _requester(locked), "reason": locked.reason})
    return locked


def grant_request_reject(
    *, actor: AbstractBaseUser, grant_request: GrantRequest, comment: Any, origin: RequestOrigin = SYSTEM,
) -> GrantRequest:
    """Second operator's no, with a required comment."""
    if not isinstance(comment, str) or not comment.strip():
        raise ValidationFailed([{"index": None, "field": "comment", "message": "say why the grant is refused"}])
    with transaction.atomic():
        locked = _lock_request(actor, grant_request, "reject")
        locked.state, locked.decided_by, locked.decided_at = GrantRequest.State.REJECTED, actor, timezone.now()
        locked.decision_comment = comment.strip()
        locked.save(update_fields=["state", "decided_by", "decided_at", "decision_comment"])
        audit_record(actor=actor, origin=origin, action="grant_request_rejected", target=locked.target,
                     payload={"request": locked.pk, "role": locked.role, **_principal(locked.user, locked.group),
                              "comment": locked.decision_comment, "requested_by": _requester(locked)})
    return locked


def _lock_request(actor: AbstractBaseUser, grant_request: GrantRequest, verb: str) -> GrantRequest:
    require_operator(actor, f"{verb} grant requests")
    # The row lock makes two operators deciding at once take turns: one decides,
    # the other sees a decided request.
    # of=("self",): PostgreSQL cannot lock the nullable side of the user/group outer joins.
    locked = GrantRequest.objects.select_for_update(of=("self",)).select_related("target", "user", "group").get(
        pk=grant_request.pk)
    if locked.requested_by_id == actor.pk:
        raise NotPermitted("you requested this grant; another operator must decide it")
    if _is_principal(actor, locked.user, locked.group):
        raise NotPermitted("this grant is for you; another operator must decide it")
    if locked.state != GrantRequest.State.PENDING:
        raise InvalidTransition(f"grant request #{locked.pk} is already {locked.state}")
    return locked


def _assign(*, target: Target, role: str, user: AbstractBaseUser | None, group: Group | None,
            granted_by: AbstractBaseUser | None, requested_by: AbstractBaseUser | None) -> list[str]:
    """Write the guardian rows and one PrivilegeGain per person reached; inside the caller's transaction."""
    with _writing():
        held = _direct_perms(target, user, group)
        added = [perm for perm in ROLES[role] if perm not in held]
        for perm in added:
            assign_perm(f"changes.{perm}", user or group, target)
    privilege_gained(users=[user] if user is not None else group.user_set.all(),  # type: ignore[union-attr]
                     target=target, privilege=f"role:{role}", granted_by=granted_by, requested_by=requested_by)
    return added


def privilege_gained(*, users: Iterable[AbstractBaseUser], target: Target | None, privilege: str,
                     granted_by: AbstractBaseUser | None, requested_by: AbstractBaseUser | None = None) -> None:
    """Record that each of `users` gained `privilege` (target None: on every target)."""
    now = timezone.now()
    PrivilegeGain.objects.bulk_create([
        PrivilegeGain(user_id=u.pk, target=target, privilege=privilege[:200], at=now,
                      granted_by_id=getattr(granted_by, "pk", None), requested_by_id=getattr(requested_by, "pk", None))
        for u in users
    ])


def _check_role_request(role: str, user: Any, group: Any) -> None:
    errors = []
    if role not in ROLES:
        errors.append({"index": None, "field": "role", "message": f"unknown role {role!r}; one of {', '.join(ROLES)}"})
    if (user is None) == (group is None):
        errors.append({"index": None, "field": "user", "message": "give either a user or a group"})
    if errors:
        raise ValidationFailed(errors)


def _is_principal(actor: AbstractBaseUser, user: AbstractBaseUser | None, group: Group | None) -> bool:
    if user is not None:
        return user.pk == actor.pk
    return group is not None and group.user_set.filter(pk=actor.pk).exists()


def _four_eyes_grants_exist() -> bool:
    target_type = ContentType.objects.get_for_model(Target)
    for model in (UserObjectPermission, GroupObjectPermission):
        if model.objects.filter(content_type=target_type, permission__codename__in=FOUR_EYES_PERMISSIONS).exists():
            return True
    return False


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


def _requester(request: GrantRequest) -> str:
    return request.requested_by.get_username() if request.requested_by is not None else request.requested_by_label


# ---------------------------------------------------------------------------
# Who may review a change (the person; approvals.policy decides the rest)


def require_reviewer(actor: AbstractBaseUser, change: ChangeRequest, verb: str) -> None:
    # The author set never reviews its own change, whatever its role: superusers too.
    if in_author_set(actor, change):
        raise NotPermitted(f"you wrote or edited change #{change.pk}; someone else must {verb} it")
    require_target_permission(actor, "approve_change", change.target)


def can_review(user: AbstractBaseUser | AnonymousUser | None, change: ChangeRequest) -> bool:
    """Whether `user` is someone who may approve or reject `change`: the same checks
    change_approve and change_reject make about the person (not in the author set,
    approve_change on the target). Entry points use it to decide what to offer; the
    policy functions still refuse on their own."""
    if user is None or not user.is_authenticated:
        return False
    try:
        require_reviewer(user, change, "review")  # type: ignore[arg-type]
        require_no_self_grant(approver=user, change=change)  # type: ignore[arg-type]
    except NotPermitted:
        return False
    return True
