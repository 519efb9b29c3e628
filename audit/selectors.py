"""Who may read and who may export which audit events: the one rule, used by the
audit admin, the API and the export. Events of a target follow the target's
permissions; events without a target (system-wide: identity changes, grants,
checkpoints) are for superusers and the shell only."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q, QuerySet
from guardian.shortcuts import get_objects_for_user

from changes.errors import NotPermitted
from changes.models import AuditEvent, Target
from changes.selectors import targets_visible

UserLike = AbstractBaseUser | AnonymousUser


def _sees_everything(user: UserLike | None) -> bool:
    return user is None or (user.is_authenticated and user.is_active and user.is_superuser)


def events_visible(*, user: UserLike | None) -> QuerySet[AuditEvent]:
    """Events `user` may read (the audit admin): those of every target the user can
    see (any role on it). `user=None` is the operator at the shell: all."""
    if _sees_everything(user):
        return AuditEvent.objects.all()
    return AuditEvent.objects.filter(target__in=targets_visible(user=user))



def targets_exportable(*, user: UserLike | None) -> QuerySet[Target]:
    """Targets whose events `user` may export (export_audit, per target; superusers
    all). `user=None` is the operator at the shell (management command): all."""
    if user is None:
        return Target.objects.all()
    if not user.is_authenticated or not user.is_active:
        return Target.objects.none()
    return get_objects_for_user(user, "changes.export_audit", klass=Target, accept_global_perms=False)


def export_scope(*, user: UserLike | None) -> Q:
    """The condition on AuditEvent rows `user` may export: an empty Q() for whoever
    may export everything. The export also uses it as a column (which events of the
    range it writes whole, which as withheld links). Events without a target
    (system-wide) only for superusers and the shell. Raises NotPermitted when the
    user may export nothing at all."""
    if _sees_everything(user):
        return Q()
    # The id list is small (targets, not events) and keeps the export query a
    # plain `target_id IN (...)` the planner can combine with the seq index.
    target_ids = list(targets_exportable(user=user).values_list("pk", flat=True))
    if not target_ids:
        raise NotPermitted("you lack the export_audit permission on every target")
    return Q(target_id__in=target_ids)


def events_exportable(*, user: UserLike | None) -> QuerySet[AuditEvent]:
    """Every event `user` may export (`export_scope`). Raises NotPermitted when the
    user may export nothing at all."""
    return AuditEvent.objects.filter(export_scope(user=user))
