"""`manage.py grant`: roles per target for users and groups, audited."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError

from approvals.policy import ROLES, has_target_permission, target_role_grant
from changes.errors import NotPermitted
from changes.models import AuditEvent, Origin
from changes.services import target_register

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.named]


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


def test_grant_and_revoke_a_role_for_a_user_with_audit_events(reviewer, target):
    out = grant("--user", "bob", "--role", "reviewer", "--target", "grants.test")
    assert "Granted reviewer on grants.test to user bob (view_target, approve_change)" in out
    assert perms(reviewer, target) == {"view_target", "approve_change"}

    out = grant("--user", "bob", "--role", "reviewer", "--target", str(target.pk), "--revoke")
    assert "Revoked reviewer on grants.test from user bob" in out
    assert perms(reviewer, target) == set()

    events = list(AuditEvent.objects.filter(action__startswith="permission_").order_by("seq"))
    assert [(e.action, e.origin, e.target_id, e.actor_id) for e in events] == [
        ("permission_granted", Origin.CLI, target.pk, None), ("permission_revoked", Origin.CLI, target.pk, None)]
    assert events[0].payload == {"role": "reviewer", "user": "bob", "permissions": ["view_target", "approve_change"]}
    assert events[1].payload["user"] == "bob" and events[1].payload["role"] == "reviewer"


def test_a_group_role_reaches_its_members_and_only_on_that_target(reviewer, second_reviewer, target, staff,
                                                                   named_server):
    other = target_register(actor=staff, name="other.test", check_reachable=False, config={
        "zone": "other.test", "primary": named_server.primary, "tsig_key_file": str(named_server.key_file)})
    reviewers = Group.objects.create(name="reviewers")
    reviewer.groups.add(reviewers)
    grant("--group", "reviewers", "--role", "reviewer", "--target", "grants.test")
    assert perms(reviewer, target) == {"view_target", "approve_change"}
    assert perms(second_reviewer, target) == set() and perms(reviewer, other) == set()
    event = AuditEvent.objects.get(action="permission_granted")
    assert event.payload == {"role": "reviewer", "group": "reviewers", "permissions": ["view_target", "approve_change"]}

    grant("--group", "reviewers", "--role", "reviewer", "--target", "grants.test", "--revoke")
    # A fresh user object: Django caches permissions on the instance.
    assert perms(type(reviewer).objects.get(pk=reviewer.pk), target) == set()
    assert AuditEvent.objects.get(action="permission_revoked").payload["group"] == "reviewers"


def test_revoking_one_role_keeps_what_another_held_role_still_gives(author, target):
    grant("--user", "alice", "--role", "engineer", "--target", "grants.test")
    grant("--user", "alice", "--role", "emergency", "--target", "grants.test")
    out = grant("--user", "alice", "--role", "emergency", "--target", "grants.test", "--revoke")
    assert "(emergency_change)" in out
    assert perms(type(author).objects.get(pk=author.pk), target) == {"view_target", "submit_change"}


def test_granting_twice_is_harmless_and_says_so(auditor, target):
    grant("--user", "dave", "--role", "auditor", "--target", "grants.test")
    assert "already held" in grant("--user", "dave", "--role", "auditor", "--target", "grants.test")
    assert AuditEvent.objects.filter(action="permission_granted").count() == 2


def test_an_inactive_user_can_still_be_revoked(make_user, target):
    leaver = make_user("leaver")
    grant("--user", "leaver", "--role", "reviewer", "--target", "grants.test")
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


def test_only_superusers_grant_through_the_policy(reviewer, staff, target):
    with pytest.raises(NotPermitted):
        target_role_grant(actor=staff, target=target, role="reviewer", user=staff)
    assert perms(staff, target) == set()
