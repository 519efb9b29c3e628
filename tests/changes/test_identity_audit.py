"""Who is who, and who gave whom what (issue 9, hole 5).

Every user, group, membership and permission change - in Django's own User and
Group admin pages, in commands, in a shell - is an audit event naming the actor
(for commands: the OS user and host), and a person never approves a change when
they, or the change's author, gave them their rights within the approval
lifetime, nor when one of the two created the other's account.
"""

from __future__ import annotations

import json
from datetime import timedelta
from functools import partial
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from approvals.models import Approval
from changes.models import AccountOrigin, AuditEvent, ChangeRequest, PrivilegeGain
from changes.permissions import grant_request_approve, grant_request_create, os_actor
from changes.services import target_update_policy
from tests.conftest import grant
from tests.factories import submitted

pytestmark = [pytest.mark.django_db, pytest.mark.named]
State = ChangeRequest.State
PASSWORD = "Correct-Horse-Battery-9"


@pytest.fixture
def fresh_zone(module_zone: str) -> str:
    """Nothing here applies a change: one zone for the module."""
    return module_zone


@pytest.fixture
def root(make_user):
    return make_user("root", is_staff=True, is_superuser=True)


def browser(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get(reverse("admin:index"))
    return client


def post(client: Client, url: str, data: dict) -> object:
    return client.post(url, {"csrfmiddlewaretoken": client.cookies["csrftoken"].value, **data})


def user_form(user, **changes) -> dict:
    """The admin user change form as the page would post it back."""
    data = {"username": user.username, "first_name": "", "last_name": "", "email": "",
            "is_active": "on", "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00",
            "groups": [g.pk for g in user.groups.all()],
            "user_permissions": [p.pk for p in user.user_permissions.all()]}
    if user.is_staff:
        data["is_staff"] = "on"
    if user.is_superuser:
        data["is_superuser"] = "on"
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


pending = partial(submitted, title="Move www", reason="new lb")


def approve_over_api(user, change: ChangeRequest):
    api = APIClient()
    api.force_authenticate(type(user).objects.get(pk=user.pk))
    return api.post(f"/api/v1/changes/{change.pk}/approve/", {"fingerprint": change.fingerprint}, format="json")


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def test_a_superuser_cannot_approve_his_own_change_with_a_second_account_he_made(root, dns_target):
    client = browser(root)
    response = post(client, reverse("admin:auth_user_add"),
                    {"username": "root2", "password1": PASSWORD, "password2": PASSWORD, "usable_password": "true"})
    assert response.status_code == 302, response.content.decode()[:2000]
    root2 = get_user_model().objects.get(username="root2")
    response = post(client, reverse("admin:auth_user_change", args=[root2.pk]),
                    user_form(root2, is_staff="on", is_superuser="on"))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert get_user_model().objects.get(pk=root2.pk).is_superuser

    created = events("user_created")[-1]
    assert (created.actor, created.origin, created.payload["user"]) == (root, "admin", "root2")
    assert AccountOrigin.objects.get(user=root2).created_by == root
    flags = {(e.payload["field"], e.payload["before"], e.payload["after"]) for e in events("user_changed")
             if e.payload["user"] == "root2" and e.payload["field"] != "password"}
    assert ("is_superuser", False, True) in flags and ("is_staff", False, True) in flags
    assert all(e.actor == root for e in events("user_changed"))

    change = pending(root, dns_target)
    response = approve_over_api(root2, change)
    assert response.status_code == 403, response.content
    assert not Approval.objects.filter(change=change).exists()
    assert ChangeRequest.objects.get(pk=change.pk).state == State.PENDING_APPROVAL


def test_whoever_the_author_puts_in_a_reviewer_group_cannot_approve_the_authors_change(
        root, reviewer, second_reviewer, dns_target):
    reviewers = Group.objects.create(name="reviewers")
    grant(reviewers, "reviewer", dns_target)
    client = browser(root)
    response = post(client, reverse("admin:auth_user_change", args=[reviewer.pk]),
                    user_form(reviewer, groups=[reviewers.pk]))
    assert response.status_code == 302, response.content.decode()[:2000]
    member = events("group_membership_added")[-1]
    assert (member.actor, member.payload) == (root, {"user": "bob", "group": "reviewers"})

    change = pending(root, dns_target)
    assert approve_over_api(reviewer, change).status_code == 403
    # carol got her rights from someone else: she may.
    assert approve_over_api(second_reviewer, change).status_code == 200


def test_the_rule_lapses_with_the_approval_lifetime(root, operator, reviewer, dns_target):
    target = target_update_policy(actor=operator, target=dns_target, approval_lifetime_seconds=60)
    reviewers = Group.objects.create(name="reviewers")
    grant(reviewers, "reviewer", target)
    client = browser(root)
    post(client, reverse("admin:auth_user_change", args=[reviewer.pk]), user_form(reviewer, groups=[reviewers.pk]))
    change = pending(root, target)
    assert approve_over_api(reviewer, change).status_code == 403
    # An hour later (the gain is dated back rather than the test waiting for it).
    PrivilegeGain.objects.filter(user=reviewer).update(at=timezone.now() - timedelta(hours=1))
    assert approve_over_api(reviewer, change).status_code == 200


def test_an_operator_who_asked_for_emergency_himself_cannot_break_glass_within_the_lifetime(
        operator, make_user, dns_target):
    otto = make_user("otto", is_staff=True)
    otto.user_permissions.add(Permission.objects.get(codename="operate_targets"))
    grant(operator, "engineer", dns_target)
    request = grant_request_create(actor=operator, target=dns_target, role="emergency", user=operator, reason="r")
    grant_request_approve(actor=type(otto).objects.get(pk=otto.pk), grant_request=request)
    change = pending(operator, dns_target)
    api = APIClient()
    api.force_authenticate(type(operator).objects.get(pk=operator.pk))
    response = api.post(f"/api/v1/changes/{change.pk}/emergency/", {"reason": "outage"}, format="json")
    assert response.status_code == 403, response.content
    assert ChangeRequest.objects.get(pk=change.pk).state == State.PENDING_APPROVAL


def test_group_pages_are_audited_with_the_actor(root, make_user):
    client = browser(root)
    perm = Permission.objects.get(codename="operate_targets")
    response = post(client, reverse("admin:auth_group_add"), {"name": "operators", "permissions": [perm.pk]})
    assert response.status_code == 302, response.content.decode()[:2000]
    group = Group.objects.get(name="operators")
    assert [(e.actor, e.payload) for e in events("group_created")] == [(root, {"group": "operators"})]
    assert [(e.actor, e.payload) for e in events("group_permission_added")] == [
        (root, {"group": "operators", "permission": "changes.operate_targets"})]
    post(client, reverse("admin:auth_group_change", args=[group.pk]), {"name": "ops", "permissions": []})
    assert [(e.actor, e.payload) for e in events("group_permission_removed")] == [
        (root, {"group": "ops", "permission": "changes.operate_targets"})]
    assert events("group_changed")[0].payload == {"group": "ops", "field": "name", "before": "operators",
                                                  "after": "ops"}


def test_staff_who_may_change_users_cannot_raise_their_own_privileges(make_user, root):
    helpdesk = make_user("helpdesk", is_staff=True)
    helpdesk.user_permissions.add(*Permission.objects.filter(codename__in=["change_user", "view_user"]))
    client = browser(helpdesk)
    perm = Permission.objects.get(codename="operate_targets")
    post(client, reverse("admin:auth_user_change", args=[helpdesk.pk]),
         user_form(helpdesk, is_superuser="on", user_permissions=[perm.pk]))
    fresh = get_user_model().objects.get(pk=helpdesk.pk)
    assert not fresh.is_superuser and not fresh.user_permissions.filter(codename="operate_targets").exists()
    other = make_user("frank")
    post(client, reverse("admin:auth_user_change", args=[other.pk]), user_form(other, is_superuser="on"))
    assert not get_user_model().objects.get(pk=other.pk).is_superuser


def test_commands_and_shell_writes_are_audited_with_the_os_user_and_no_password_hash(monkeypatch, make_user,
                                                                                    dns_target):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    call_command("createsuperuser", "--noinput", "--username", "boss", "--email", "boss@example.net",
                 stdout=StringIO())
    boss = get_user_model().objects.get(username="boss")
    created = [e for e in events("user_created") if e.payload["user"] == "boss"]
    assert [(e.actor, e.origin, e.payload) for e in created] == [
        (None, "cli", {"user": "boss", "is_active": True, "is_staff": True, "is_superuser": True,
                       "actor": os_actor()})]
    assert AccountOrigin.objects.get(user=boss).created_by_label == os_actor()

    boss.set_password("Another-Secret-Phrase-2")
    boss.save()
    changed = events("user_changed")[-1]
    assert changed.payload == {"user": "boss", "field": "password", "changed": True, "actor": os_actor()}

    mallory = make_user("mallory")
    assign_perm("changes.approve_change", mallory, dns_target)  # a shell, around the grant service
    added = events("object_permission_added")[-1]
    assert added.target == dns_target and added.payload["user"] == "mallory"
    assert added.payload["permission"] == "changes.approve_change" and added.payload["actor"] == os_actor()

    dump = json.dumps([e.payload for e in AuditEvent.objects.all()])
    for user in get_user_model().objects.all():
        assert user.password not in dump and user.password.split("$")[-1] not in dump
