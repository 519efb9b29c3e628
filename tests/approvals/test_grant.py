"""`manage.py grant` and the grant services: roles per target for users and
groups, four-eyes for reviewer and emergency, audited with the actor."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError

from approvals.policy import ROLES, has_target_permission, target_role_grant
from changes.errors import InvalidTransition, NotPermitted, ValidationFailed
from changes.models import AuditEvent, GrantRequest, Origin
from changes.permissions import (
    FOUR_EYES_ROLES,
    grant_request_approve,
    grant_request_create,
    grant_request_reject,
    os_actor,
)
from changes.services import target_register

pytestmark = [pytest.mark.django_db, pytest.mark.named]


@pytest.fixture
def target(named_server, staff):
    # Nothing here reads or writes the zone: registration without the reachability check.
    return target_register(actor=staff, name="grants.test", check_reachable=False, config={
        "zone": "grants.test", "primary": named_server.primary, "tsig_key_file": str(named_server.key_file)})


def grant(*args: str) -> str:
    out = StringIO()
    call_command("grant", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def perms(who, target) -> set[str]:
    return {perm for perm in ("view_target", "submit_change", "approve_change", "emergency_change", "export_audit")
            if has_target_permission(who, perm, target)}


def test_the_role_table_is_the_one_the_brief_describes():
    assert {role: set(p) for role, p in ROLES.items()} == {
        "engineer": {"view_target", "submit_change"},
        "reviewer": {"view_target", "approve_change"},
        "auditor": {"view_target", "export_audit"},
        "emergency": {"view_target", "emergency_change"},
    }


def test_grant_and_revoke_a_role_for_a_user_with_audit_events_naming_the_os_user(author, target):
    out = grant("--user", "alice", "--role", "engineer", "--target", "grants.test")
    assert "Granted engineer on grants.test to user alice (view_target, submit_change)" in out
    assert perms(author, target) == {"view_target", "submit_change"}

    out = grant("--user", "alice", "--role", "engineer", "--target", str(target.pk), "--revoke")
    assert "Revoked engineer on grants.test from user alice" in out
    assert perms(author, target) == set()

    events = list(AuditEvent.objects.filter(action__startswith="permission_").order_by("seq"))
    assert [(e.action, e.origin, e.target_id, e.actor_id) for e in events] == [
        ("permission_granted", Origin.CLI, target.pk, None), ("permission_revoked", Origin.CLI, target.pk, None)]
    # A command has no signed-in user: the event names who ran it, never an empty actor.
    assert os_actor().startswith("os:") and "@" in os_actor()
    assert events[0].payload == {"role": "engineer", "user": "alice", "permissions": ["view_target", "submit_change"],
                                 "actor": os_actor()}
    assert events[1].payload["user"] == "alice" and events[1].payload["actor"] == os_actor()


def test_a_four_eyes_role_from_the_command_is_a_request_not_a_grant(reviewer, target):
    out = grant("--user", "bob", "--role", "reviewer", "--target", "grants.test", "--reason", "new on call")
    request = GrantRequest.objects.get()
    assert f"grant request #{request.pk}" in out and request.state == GrantRequest.State.PENDING
    assert request.requested_by is None and request.requested_by_label == os_actor()
    assert perms(reviewer, target) == set()
    event = AuditEvent.objects.get(action="grant_requested")
    assert event.payload["role"] == "reviewer" and event.payload["actor"] == os_actor()


def test_bootstrap_grants_a_four_eyes_role_at_once_recorded_as_such(reviewer, target):
    with pytest.raises(CommandError, match="reason"):
        grant("--user", "bob", "--role", "reviewer", "--target", "grants.test", "--bootstrap")
    assert perms(reviewer, target) == set()
    out = grant("--user", "bob", "--role", "reviewer", "--target", "grants.test", "--bootstrap",
                "--reason", "first setup, no second operator yet")
    assert "Granted reviewer on grants.test to user bob (view_target, approve_change)" in out
    assert perms(reviewer, target) == {"view_target", "approve_change"}
    event = AuditEvent.objects.get(action="permission_granted")
    assert event.payload["bootstrap"] is True and event.payload["reason"] == "first setup, no second operator yet"
    assert event.payload["actor"] == os_actor()


def test_a_group_role_reaches_its_members_and_only_on_that_target(reviewer, second_reviewer, target, staff,
                                                                   named_server):
    other = target_register(actor=staff, name="other.test", check_reachable=False, config={
        "zone": "other.test", "primary": named_server.primary, "tsig_key_file": str(named_server.key_file)})
    reviewers = Group.objects.create(name="reviewers")
    reviewer.groups.add(reviewers)
    grant("--group", "reviewers", "--role", "reviewer", "--target", "grants.test", "--bootstrap", "--reason", "setup")
    assert perms(reviewer, target) == {"view_target", "approve_change"}
    assert perms(second_reviewer, target) == set() and perms(reviewer, other) == set()
    event = AuditEvent.objects.get(action="permission_granted")
    assert event.payload == {"role": "reviewer", "group": "reviewers", "permissions": ["view_target", "approve_change"],
                             "actor": os_actor(), "bootstrap": True, "reason": "setup"}

    grant("--group", "reviewers", "--role", "reviewer", "--target", "grants.test", "--revoke")
    # A fresh user object: Django caches permissions on the instance.
    assert perms(type(reviewer).objects.get(pk=reviewer.pk), target) == set()
    assert AuditEvent.objects.get(action="permission_revoked").payload["group"] == "reviewers"


def test_revoking_one_role_keeps_what_another_held_role_still_gives(author, target):
    grant("--user", "alice", "--role", "engineer", "--target", "grants.test")
    grant("--user", "alice", "--role", "emergency", "--target", "grants.test", "--bootstrap", "--reason", "setup")
    out = grant("--user", "alice", "--role", "emergency", "--target", "grants.test", "--revoke")
    assert "(emergency_change)" in out
    assert perms(type(author).objects.get(pk=author.pk), target) == {"view_target", "submit_change"}


def test_granting_twice_is_harmless_and_says_so(auditor, target):
    grant("--user", "dave", "--role", "auditor", "--target", "grants.test")
    assert "already held" in grant("--user", "dave", "--role", "auditor", "--target", "grants.test")
    assert AuditEvent.objects.filter(action="permission_granted").count() == 2


def test_an_inactive_user_can_still_be_revoked(make_user, target):
    leaver = make_user("leaver")
    grant("--user", "leaver", "--role", "reviewer", "--target", "grants.test", "--bootstrap", "--reason", "setup")
    leaver.is_active = False
    leaver.save()
    grant("--user", "leaver", "--role", "reviewer", "--target", "grants.test", "--revoke")
    leaver.is_active = True
    leaver.save()
    assert perms(type(leaver).objects.get(pk=leaver.pk), target) == set()


@pytest.mark.parametrize(("args", "message"), [
    (["--user", "nobody", "--role", "reviewer", "--target", "grants.test"], "no user named 'nobody'"),
    (["--group", "nogroup", "--role", "reviewer", "--target", "grants.test"], "no group named 'nogroup'"),
    (["--user", "bob", "--role", "reviewer", "--target", "nowhere.test"], "no target named 'nowhere.test'"),
    (["--user", "bob", "--role", "reviewer", "--target", "99999"], "no target named '99999'"),
    (["--user", "bob", "--role", "king", "--target", "grants.test"], "unknown role 'king'; roles: engineer = "),
    (["--role", "reviewer", "--target", "grants.test"], "one of the arguments --user --group is required"),
    (["--user", "bob", "--group", "g", "--role", "reviewer", "--target", "grants.test"], "not allowed with"),
])
def test_bad_arguments_are_a_clear_command_error_and_change_nothing(args, message, reviewer, target):
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        grant(*args)
    assert perms(reviewer, target) == set()
    assert not AuditEvent.objects.filter(action__startswith="permission_").exists()


    assert not GrantRequest.objects.exists()


def test_being_staff_grants_nothing_and_lets_nobody_grant(plain_staff, reviewer, target):
    for role in ROLES:
        with pytest.raises(NotPermitted, match="only operators"):
            target_role_grant(actor=plain_staff, target=target, role=role, user=reviewer)
        with pytest.raises(NotPermitted, match="only operators"):
            grant_request_create(actor=plain_staff, target=target, role=role, user=reviewer, reason="r")
    assert perms(reviewer, target) == set()


def test_an_operator_grants_lower_roles_directly_but_never_to_himself(operator, author, target):
    assert target_role_grant(actor=operator, target=target, role="engineer", user=author) == [
        "view_target", "submit_change"]
    event = AuditEvent.objects.get(action="permission_granted")
    assert event.actor_id == operator.pk and "actor" not in event.payload
    with pytest.raises(NotPermitted, match="yourself"):
        target_role_grant(actor=operator, target=target, role="auditor", user=operator)
    assert perms(operator, target) == set()


@pytest.mark.parametrize("role", sorted(FOUR_EYES_ROLES))
def test_an_operator_cannot_grant_a_four_eyes_role_alone(role, operator, author, target):
    with pytest.raises(NotPermitted, match="second operator"):
        target_role_grant(actor=operator, target=target, role=role, user=author)
    assert perms(author, target) == set()


@pytest.fixture
def second_operator(make_user):
    from django.contrib.auth.models import Permission

    user = make_user("otto", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="operate_targets"))
    return type(user).objects.get(pk=user.pk)


def test_a_grant_request_needs_a_second_operator_neither_requester_nor_grantee(
        operator, second_operator, reviewer, target):
    request = grant_request_create(actor=operator, target=target, role="reviewer", user=reviewer, reason="on call")
    with pytest.raises(NotPermitted, match="you requested"):
        grant_request_approve(actor=operator, grant_request=request)
    assert perms(reviewer, target) == set()

    grant_request_approve(actor=second_operator, grant_request=request, comment="ok")
    assert perms(type(reviewer).objects.get(pk=reviewer.pk), target) == {"view_target", "approve_change"}
    request.refresh_from_db()
    assert (request.state, request.decided_by) == (GrantRequest.State.APPROVED, second_operator)
    event = AuditEvent.objects.get(action="permission_granted")
    assert event.actor_id == second_operator.pk
    assert event.payload == {"role": "reviewer", "user": "bob", "permissions": ["view_target", "approve_change"],
                             "request": request.pk, "requested_by": "operator", "reason": "on call"}
    with pytest.raises(InvalidTransition):
        grant_request_reject(actor=second_operator, grant_request=request, comment="too late")


def test_the_grantee_cannot_approve_his_own_grant_even_through_a_group(operator, second_operator, target):
    own = grant_request_create(actor=operator, target=target, role="emergency", user=second_operator, reason="r")
    with pytest.raises(NotPermitted, match="for you"):
        grant_request_approve(actor=second_operator, grant_request=own)
    oncall = Group.objects.create(name="oncall")
    second_operator.groups.add(oncall)
    via_group = grant_request_create(actor=operator, target=target, role="emergency", group=oncall, reason="r")
    with pytest.raises(NotPermitted, match="for you"):
        grant_request_approve(actor=second_operator, grant_request=via_group)
    assert perms(type(second_operator).objects.get(pk=second_operator.pk), target) == set()


def test_a_rejection_says_why_and_grants_nothing(operator, second_operator, reviewer, target):
    request = grant_request_create(actor=operator, target=target, role="reviewer", user=reviewer, reason="r")
    with pytest.raises(ValidationFailed, match="comment"):
        grant_request_reject(actor=second_operator, grant_request=request, comment=" ")
    grant_request_reject(actor=second_operator, grant_request=request, comment="not on call")
    assert perms(reviewer, target) == set()
    assert AuditEvent.objects.get(action="grant_request_rejected").payload["comment"] == "not on call"


def test_an_operator_may_bootstrap_only_while_nobody_holds_a_four_eyes_permission(
        operator, reviewer, second_reviewer, target):
    target_role_grant(actor=operator, target=target, role="reviewer", user=reviewer, bootstrap=True,
                      reason="first reviewer")
    assert perms(reviewer, target) == {"view_target", "approve_change"}
    with pytest.raises(NotPermitted, match="first setup"):
        target_role_grant(actor=operator, target=target, role="reviewer", user=second_reviewer, bootstrap=True,
                          reason="and another")
    assert perms(second_reviewer, target) == set()
