"""The operator role (issue 9, holes 1 and 2): `is_staff` only opens the admin;
registering targets, editing policy, granting roles and cancelling someone
else's change need the operator role, and guardian's object-permissions page,
which let an operator give himself approve/emergency unaudited, is gone.

Admin posts go through a CSRF-checking client, as a browser would send them.
"""

from __future__ import annotations

import re
from functools import partial

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from approvals.policy import has_target_permission
from changes.models import AuditEvent, ChangeRequest, GrantRequest, Target
from changes.services import change_update
from tests.conftest import grant
from tests.factories import submitted

pytestmark = [pytest.mark.django_db, pytest.mark.named]
State = ChangeRequest.State


@pytest.fixture
def fresh_zone(module_zone: str) -> str:
    """Nothing here applies a change: one zone for the module, the database is flushed per test."""
    return module_zone


def with_perms(user, *codenames: str):
    user.is_staff = True
    user.save()
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="changes", codename__in=codenames))
    return type(user).objects.get(pk=user.pk)


def browser(user) -> Client:
    """A logged-in client that enforces CSRF, holding a token from a real page."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get(reverse("admin:index"))
    return client


def csrf(client: Client) -> str:
    return client.cookies["csrftoken"].value


pending = partial(submitted, title="Move www", reason="new lb")


# ---------------------------------------------------------------------------
# Hole 1: guardian's object-permissions page


def test_an_operator_cannot_tick_approve_and_emergency_for_himself_on_the_old_permissions_page(
        make_user, dns_target):
    # What an operator needed to edit policy in the admin before the operator role existed.
    mallory = with_perms(make_user("mallory"), "change_target", "view_target", "operate_targets")
    grant(mallory, "engineer", dns_target)  # she also proposes changes there
    client = browser(mallory)
    base = reverse("admin:changes_target_change", args=[dns_target.pk]).removesuffix("change/")
    response = client.post(f"{base}permissions/user-manage/{mallory.pk}/", {
        "csrfmiddlewaretoken": csrf(client), "permissions": ["approve_change", "emergency_change", "view_target"]})
    assert response.status_code == 404
    assert client.get(f"{base}permissions/").status_code == 404
    fresh = type(mallory).objects.get(pk=mallory.pk)
    assert not has_target_permission(fresh, "approve_change", dns_target)
    assert not has_target_permission(fresh, "emergency_change", dns_target)
    assert not AuditEvent.objects.filter(action="object_permission_added").exists()
    assert [e.payload["role"] for e in AuditEvent.objects.filter(action="permission_granted",
                                                                payload__user="mallory")] == ["engineer"]


def test_the_grants_page_makes_a_four_eyes_grant_a_request_a_second_operator_approves(
        make_user, operator, author, dns_target):
    mallory = with_perms(make_user("mallory"), "operate_targets")
    client = browser(mallory)
    add = reverse("admin:changes_grantrequest_add")
    assert client.get(add).status_code == 200
    # For himself: only a request, and not one he may decide.
    response = client.post(add, {"csrfmiddlewaretoken": csrf(client), "target": dns_target.pk,
                                 "role": "emergency", "user": mallory.pk, "reason": "on call tonight"})
    assert response.status_code == 302
    request = GrantRequest.objects.get()
    assert (request.role, request.user, request.requested_by, request.state) == (
        "emergency", mallory, mallory, GrantRequest.State.PENDING)
    assert not has_target_permission(type(mallory).objects.get(pk=mallory.pk), "emergency_change", dns_target)
    detail = client.get(reverse("admin:changes_grantrequest_change", args=[request.pk])).content.decode()
    assert "Approve grant" not in detail
    response = client.post(reverse("admin:changes_grantrequest_approve", args=[request.pk]),
                           {"csrfmiddlewaretoken": csrf(client)}, follow=True)
    assert "you requested this grant" in [str(m) for m in response.context["messages"]][0]
    assert GrantRequest.objects.get().state == GrantRequest.State.PENDING

    second = browser(operator)
    response = second.post(reverse("admin:changes_grantrequest_approve", args=[request.pk]),
                           {"csrfmiddlewaretoken": csrf(second), "comment": "ok"})
    assert response.status_code == 302
    assert has_target_permission(type(mallory).objects.get(pk=mallory.pk), "emergency_change", dns_target)
    event = AuditEvent.objects.filter(action="permission_granted").order_by("seq").last()
    assert (event.actor, event.origin, event.target) == (operator, "admin", dns_target)
    assert event.payload["requested_by"] == "mallory" and event.payload["request"] == request.pk


def test_the_grants_page_gives_lower_roles_at_once_and_refuses_non_operators(
        make_user, operator, plain_staff, author, dns_target):
    outsider = make_user("olga")
    client = browser(operator)
    response = client.post(reverse("admin:changes_grantrequest_add"), {
        "csrfmiddlewaretoken": csrf(client), "target": dns_target.pk, "role": "engineer", "user": outsider.pk})
    assert response.status_code == 302
    assert has_target_permission(outsider, "submit_change", dns_target)
    assert AuditEvent.objects.get(action="permission_granted", payload__user="olga").actor == operator

    staff_client = browser(plain_staff)
    assert staff_client.get(reverse("admin:changes_grantrequest_add")).status_code == 403
    response = staff_client.post(reverse("admin:changes_grantrequest_add"), {
        "csrfmiddlewaretoken": csrf(staff_client), "target": dns_target.pk, "role": "auditor", "user": outsider.pk})
    assert response.status_code == 403
    assert not has_target_permission(outsider, "export_audit", dns_target)


# ---------------------------------------------------------------------------
# Hole 2: staff is not an operator


def test_staff_without_the_operator_role_cannot_register_a_target_through_the_api(
        plain_staff, reviewer, operator, dns_target):
    body = {"name": "second-" + dns_target.name, "config": dict(dns_target.config)}
    for user in (plain_staff, reviewer):
        api = APIClient()
        api.force_authenticate(user)
        response = api.post("/api/v1/targets/", body, format="json")
        assert response.status_code == 403, response.content
    assert not Target.objects.filter(name=body["name"]).exists()
    api = APIClient()
    api.force_authenticate(operator)
    response = api.post("/api/v1/targets/", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["tsig_key_file"] == dns_target.config["tsig_key_file"]


def test_the_key_file_path_is_shown_to_operators_only(plain_staff, auditor, operator, dns_target):
    grant(plain_staff, "auditor", dns_target)
    for user, shown in ((plain_staff, False), (auditor, False), (operator, True)):
        api = APIClient()
        api.force_authenticate(user)
        grant(user, "auditor", dns_target)
        body = api.get(f"/api/v1/targets/{dns_target.pk}/").json()
        assert ("tsig_key_file" in body) is shown, user


def test_staff_with_change_target_cannot_edit_policy_in_the_admin(make_user, operator, dns_target):
    sam = with_perms(make_user("sam"), "change_target", "view_target")
    client = browser(sam)
    url = reverse("admin:changes_target_change", args=[dns_target.pk])
    response = client.post(url, {"csrfmiddlewaretoken": csrf(client), "required_approvals": 1,
                                 "approval_lifetime_seconds": 3600, "bake_seconds": 0, "bake_max_seconds": 3600,
                                 "frozen": "on"})
    assert response.status_code == 403
    assert not Target.objects.get(pk=dns_target.pk).frozen

    client = browser(operator)
    page = client.get(url)
    assert page.status_code == 200
    response = client.post(url, {"csrfmiddlewaretoken": csrf(client), "required_approvals": 2,
                                 "approval_lifetime_seconds": 3600, "bake_seconds": 0, "bake_max_seconds": 3600, "frozen": "on",
                                 "watch_interval_seconds": 30, "emergency_review_hours": 24, "oob_interval_seconds": 300})
    assert response.status_code == 302, re.findall(r'class="errorlist[^"]*"><li>([^<]*)', response.content.decode())
    assert Target.objects.get(pk=dns_target.pk).frozen
    assert AuditEvent.objects.filter(action__contains="policy", actor=operator).exists()


@pytest.mark.parametrize("who", ["reviewer", "auditor", "plain_staff"])
def test_nobody_but_the_author_set_or_an_operator_cancels_a_change(who, request, author, dns_target):
    actor = request.getfixturevalue(who)
    actor.is_staff = True  # every admin user is staff: that must not make them operators
    actor.save()
    grant(actor, "auditor", dns_target)  # sees the change
    change = pending(author, dns_target)
    api = APIClient()
    api.force_authenticate(actor)
    # `comment`: the body the API took before a reason was required.
    response = api.post(f"/api/v1/changes/{change.pk}/cancel/", {"comment": "mine now"}, format="json")
    assert response.status_code == 403, response.content
    assert ChangeRequest.objects.get(pk=change.pk).state == State.PENDING_APPROVAL
    assert not AuditEvent.objects.filter(action="change_cancelled").exists()


def test_a_cancel_needs_a_reason_and_records_it(author, operator, make_user, dns_target):
    api = APIClient()
    api.force_authenticate(author)
    change = pending(author, dns_target)
    response = api.post(f"/api/v1/changes/{change.pk}/cancel/", {}, format="json")
    assert response.status_code == 400 and "reason" in response.content.decode()
    assert ChangeRequest.objects.get(pk=change.pk).state == State.PENDING_APPROVAL
    # The old field name still works.
    response = api.post(f"/api/v1/changes/{change.pk}/cancel/", {"comment": "superseded by #2"}, format="json")
    assert response.status_code == 200, response.content
    event = AuditEvent.objects.get(action="change_cancelled")
    assert (event.actor, event.payload["reason"]) == (author, "superseded by #2")

    by_operator = pending(author, dns_target)
    api.force_authenticate(operator)
    grant(operator, "auditor", dns_target)
    response = api.post(f"/api/v1/changes/{by_operator.pk}/cancel/", {"reason": "zone retired"}, format="json")
    assert response.status_code == 200, response.content

    editor = make_user("erin")
    grant(editor, "engineer", dns_target)
    edited = change_update(actor=editor, change=pending(author, dns_target), title="Move www, edited")
    api.force_authenticate(editor)
    response = api.post(f"/api/v1/changes/{edited.pk}/cancel/", {"reason": "wrong address"}, format="json")
    assert response.status_code == 200, response.content


def test_the_admin_cancel_button_asks_for_a_reason(author, dns_target):
    author = with_perms(author, "view_changerequest", "add_changerequest")
    change = pending(author, dns_target)
    client = browser(author)
    page = client.get(reverse("admin:changes_changerequest_change", args=[change.pk])).content.decode()
    assert 'name="reason"' in page
    url = reverse("admin:changes_changerequest_cancel", args=[change.pk])
    response = client.post(url, {"csrfmiddlewaretoken": csrf(client)}, follow=True)
    assert "reason" in [str(m) for m in response.context["messages"]][0]
    assert ChangeRequest.objects.get(pk=change.pk).state == State.PENDING_APPROVAL
    client.post(url, {"csrfmiddlewaretoken": csrf(client), "reason": "not needed any more"})
    assert ChangeRequest.objects.get(pk=change.pk).state == State.CANCELLED
    assert AuditEvent.objects.get(action="change_cancelled").payload["reason"] == "not needed any more"
