"""Reads, filtered by what the user may see. Something you may not see does not
exist for you: 404, never 403."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import Http404
from django.utils import timezone
from guardian.shortcuts import get_objects_for_user

from adapters import Plan, RRKey, RRValue
from approvals.models import Approval
from changes.adapters import adapter_for
from changes.errors import ValidationFailed
from changes.kinds import kind_of, target_unavailable_on_adapter_error
from changes.models import AuditEvent, ChangeComment, ChangeRequest, Execution, Target
from changes.permissions import is_operator, self_grant_conditions

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


def targets_reviewable(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Target]:
    """Targets where `user` holds approve_change (directly or through a group): where
    they may review changes at all. Who may review one change is the policy's word."""
    if not user.is_authenticated or not user.is_active:
        return Target.objects.none()
    return get_objects_for_user(user, "changes.approve_change", klass=Target, accept_global_perms=False)


def changes_visible(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[ChangeRequest]:
    return (
        ChangeRequest.objects.filter(target__in=targets_visible(user=user))
        .select_related("target", "author")
        .prefetch_related("editors")
    )


def changes_reviewable_by(*, user: AbstractBaseUser | AnonymousUser, now: datetime | None = None,
                          within: QuerySet[ChangeRequest] | None = None) -> QuerySet[ChangeRequest]:
    """Changes (in any state) `user` is someone who may review: the queryset form of
    permissions.can_review, for a whole list in one query. Not in the author set,
    approve_change on the target (guardian, directly or through a group; superusers
    hold it everywhere), and the self-grant rule (permissions.self_grant_conditions,
    shared with the policy). can_review and this must agree:
    tests/changes/test_query_counts.py checks them on a generated population.
    `within` narrows a list already filtered (the admin's, the API's) with the same
    conditions, instead of a `pk IN (...)` over a second copy of the list."""
    if not user.is_authenticated or not user.is_active:
        return ChangeRequest.objects.none()
    # Read first (one statement, a row per target): the self-grant windows need the lifetimes, and with a list
    # of ids the planner reads those targets' pending changes through the (target, state) index; with
    # `IN (subquery)` SQLite scanned every stored change instead (100,000 of them: 60-130 ms per count).
    targets = dict(targets_reviewable(user=user).order_by().values_list("pk", "approval_lifetime_seconds"))
    self_granted, account_origin = self_grant_conditions(user.pk, now=now or timezone.now(), targets=targets)
    edited = ChangeRequest.editors.through.objects.filter(changerequest_id=OuterRef("pk"), user_id=user.pk)
    # approve_change implies visibility (VISIBLE_WITH), so the reviewable targets suffice.
    changes = within if within is not None else ChangeRequest.objects.select_related("target", "author")
    return (
        changes.filter(target_id__in=sorted(targets))
        .exclude(author_id=user.pk)
        .filter(~Exists(edited), ~self_granted, ~account_origin)
    )


def changes_reviewable(*, user: AbstractBaseUser | AnonymousUser,
                       within: QuerySet[ChangeRequest] | None = None) -> QuerySet[ChangeRequest]:
    """Pending changes waiting for `user`'s review: reviewable by them
    (changes_reviewable_by, `within` as there) and not yet approved by them on the current plan."""
    now = timezone.now()
    mine_valid = Approval.objects.filter(
        change=OuterRef("pk"), approver_id=user.pk, invalidated_at__isnull=True,
        fingerprint=OuterRef("fingerprint"), expires_at__gt=now,
    )
    return (changes_reviewable_by(user=user, now=now, within=within)
            .filter(state=ChangeRequest.State.PENDING_APPROVAL).exclude(Exists(mine_valid)))


def target_ref_q(ref: Any, *, via: str = "") -> Q:
    """The one reading of a target reference (API paths, filters, the CLI): digits are
    an id, anything else a name. `via` prefixes the lookups ("target__" from a change).
    A reference holding NUL names no target (PostgreSQL refuses NUL in text)."""
    text = str(ref).strip()
    if "\x00" in text:
        return Q(pk__in=[])
    # isascii: "²".isdigit() is True but int("²") fails. `pk` through the relation
    # (target__pk, not target_id) turns an id past the 64-bit range into no rows
    # instead of an OverflowError.
    if text.isascii() and text.isdigit():
        return Q(**{f"{via}pk": int(text)})
    return Q(**{f"{via}name": text})


def access_target(*, user: AbstractBaseUser | AnonymousUser, ref: Any) -> Target:
    """A target by id or name, if the user may see it; Http404 otherwise."""
    target = targets_visible(user=user).filter(target_ref_q(ref)).first()
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
    return kind_of(change.target).diff(plan) if plan else ""


def change_events(change: ChangeRequest) -> QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(change=change).order_by("seq")


def change_comments(change: ChangeRequest) -> QuerySet[ChangeComment]:
    """The discussion on a change, oldest first (who may read it: whoever may see the change, `access_change`)."""
    return ChangeComment.objects.filter(change=change).select_related("author").order_by("pk")


def change_executions(change: ChangeRequest) -> QuerySet[Execution]:
    """Every attempt at applying the change, oldest first (the last is the latest)."""
    return Execution.objects.filter(change=change).order_by("pk")


def change_live_drift(change: ChangeRequest) -> list[dict[str, Any]]:
    """What the live zone holds now at every key of the plan, next to the `before`
    the plan was read with: {"name", "type", "before", "live", "matches"} per step,
    values as RRValue or None. Raises TargetUnavailable when the zone cannot be read."""
    plan = change_plan_of(change)
    if plan is None or not plan.steps:
        return []
    with target_unavailable_on_adapter_error(change.target):
        adapter = adapter_for(change.target)
        try:
            live = adapter.read(plan.keys())
        finally:
            adapter.close()
    return [
        {"name": step.key.name, "type": step.key.rdtype, "before": step.before, "live": live.get(step.key),
         "matches": live.get(step.key) == step.before}
        for step in plan.steps
    ]


def target_read_live(*, target: Target, name: Any, rdtype: Any) -> tuple[RRKey, RRValue | None]:
    """The live RRset at (name, rdtype) of a DNS target, read from its primary.
    `name` is relative to the zone unless absolute. Raises ValidationFailed naming
    `name` or `type`, TargetUnavailable when the zone cannot be read."""
    key, key_errors = kind_of(target).parse_key(target.config, name, rdtype)
    if key is None:
        raise ValidationFailed([{"index": None, "field": field, "message": message} for field, message in key_errors])
    with target_unavailable_on_adapter_error(target):
        adapter = adapter_for(target)
        try:
            return key, adapter.read([key])[key]
        finally:
            adapter.close()


def changes_emergency_unreviewed(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[ChangeRequest]:
    """Break-glass changes still waiting for their after-the-fact review, oldest first."""
    return changes_visible(user=user).filter(emergency=True, emergency_reviewed_at__isnull=True).order_by("emergency_at")


def emergency_overdue(change: ChangeRequest, *, now: datetime | None = None) -> bool:
    """Unreviewed for longer than its target allows."""
    if not change.emergency or change.emergency_reviewed_at is not None or change.emergency_at is None:
        return False
    return change.emergency_at + timedelta(hours=change.target.emergency_review_hours) < (now or timezone.now())


def out_of_band_changes(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[AuditEvent]:
    """Out-of-band changes ("changes on the system with no change request") on the
    targets whose audit log `user` may export, newest first."""
    if not user.is_authenticated or not user.is_active:
        return AuditEvent.objects.none()
    auditable = get_objects_for_user(user, "changes.export_audit", klass=Target, accept_global_perms=False)
    return AuditEvent.objects.filter(action="out_of_band_change", target__in=auditable).order_by("-seq")


def target_config_for(target: Target, *, user: Any) -> dict[str, Any]:
    """A target's config as it may leave the server for `user`. Where secrets live is
    the kind's to say (DNS: the TSIG key file; nftables: the SSH key file): those
    fields go to operators only, as paths; nobody ever gets a key, since no surface
    opens the file."""
    config = dict(target.config)
    if not is_operator(user):
        for field in kind_of(target).secret_fields:
            config.pop(field, None)
    return config
