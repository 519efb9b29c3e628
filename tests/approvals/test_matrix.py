"""Two matrices, each generated from one table (real named).

(a) Self-approval: the author, a co-editor who also holds reviewer rights, a
    superuser who wrote the change, and an engineer without approve_change try to
    approve through every entry point (API, admin button, admin bulk action, CLI,
    the policy itself). None of them succeeds.
(b) Permissions: role x API endpoint x own/other target -> expected status class.
    A new API route fails `test_every_api_route_is_in_the_permission_table` until
    it gets its row.

Nothing here applies a change, so the module shares two spare zones (own and
other target) instead of using up one per case; the database is flushed per test.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.urls import URLPattern, get_resolver, resolve, reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from approvals.models import Approval
from approvals.policy import can_review, change_approve
from changegate_cli import main as cli
from changes.errors import NotPermitted
from changes.models import ChangeRequest
from changes.selectors import changes_reviewable
from changes.services import change_create, change_submit, change_update
from tests import conftest
from tests.conftest import grant
from tests.factories import WWW

pytestmark = [pytest.mark.django_db, pytest.mark.named]
State = ChangeRequest.State


@pytest.fixture(scope="module")
def other_zone(named_server) -> str:
    """`other_target`'s zone, one for the module: nothing here reads or writes it."""
    return conftest.spare_zone()


@pytest.fixture
def fresh_zone(module_zone: str) -> str:
    """`dns_target` (the "own" target) on this module's zone."""
    return module_zone


def new_change(author, target, state: str) -> ChangeRequest:
    change = change_create(actor=author, target=target, title="Move www", reason="new lb", items=WWW)
    return change_submit(actor=author, change=change) if state == State.PENDING_APPROVAL else change


def nothing_approved(change: ChangeRequest) -> None:
    assert not Approval.objects.filter(change_id=change.pk).exists()
    assert ChangeRequest.objects.get(pk=change.pk).state == State.PENDING_APPROVAL


# ---------------------------------------------------------------------------
# (a) The self-approval matrix

ACTORS = ("author", "co_editor", "superuser_author", "engineer")
CHANNELS = ("api", "admin_button", "admin_bulk", "cli", "policy")


def refusal(who: str) -> str:
    """What the server says when `who` tries to approve the change."""
    return "you lack the approve_change permission" if who == "engineer" else "someone else must approve it"


def self_approval_setup(who: str, author, make_user, target) -> tuple[Any, ChangeRequest]:
    """The actor and a pending change they must not be able to approve."""
    if who == "author":
        return author, new_change(author, target, State.PENDING_APPROVAL)
    if who == "superuser_author":
        root = make_user("root", is_staff=True, is_superuser=True)
        return root, new_change(root, target, State.PENDING_APPROVAL)
    change = new_change(author, target, State.PENDING_APPROVAL)
    actor = make_user("erin" if who == "co_editor" else "eve")
    grant(actor, "engineer", target)
    if who == "co_editor":
        grant(actor, "reviewer", target)
        change = change_update(actor=actor, change=change, title="Move www, edited")
    return actor, change


def as_admin_user(user):
    user.is_staff = True
    user.save()
    user.user_permissions.add(Permission.objects.get(codename="view_changerequest"))
    return user


# Real commits for the CLI channel only: the live_server thread reads the change
# through its own connection.
@pytest.mark.parametrize("channel", [
    pytest.param(c, marks=pytest.mark.django_db(transaction=True)) if c == "cli" else c for c in CHANNELS])
@pytest.mark.parametrize("who", ACTORS)
def test_nobody_approves_a_change_they_wrote_edited_or_may_not_approve(
        who, channel, request, author, make_user, dns_target, client, monkeypatch, tmp_path, capsys):
    actor, change = self_approval_setup(who, author, make_user, dns_target)
    assert not can_review(actor, change)
    fingerprint = change.fingerprint

    if channel == "api":
        api = APIClient()
        api.force_authenticate(actor)
        response = api.post(f"/api/v1/changes/{change.pk}/approve/", {"fingerprint": fingerprint}, format="json")
        assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    elif channel == "admin_button":
        client.force_login(as_admin_user(actor))
        page = client.get(reverse("admin:changes_changerequest_change", args=[change.pk])).content.decode()
        assert 'value="Approve"' not in page
        response = client.post(reverse("admin:changes_changerequest_approve", args=[change.pk]),
                               {"fingerprint": fingerprint}, follow=True)
        (message,) = [str(m) for m in response.context["messages"]]
        assert response.status_code == 200 and refusal(who) in message, message
    elif channel == "admin_bulk":
        client.force_login(as_admin_user(actor))
        selected = {"action": "approve_selected", "_selected_action": [change.pk], "index": "0"}
        response = client.post(reverse("admin:changes_changerequest_changelist"), selected, follow=True)
        if who in ("author", "engineer"):  # no approve_change anywhere: the action is not even offered
            assert response.status_code == 200 and "Approve the selected changes" not in response.content.decode()
        else:  # the confirmation page, then its confirming POST with the fingerprint it showed
            assert fingerprint in response.content.decode()
            response = client.post(reverse("admin:changes_changerequest_changelist"), {
                **selected, "post": "yes", f"fingerprint_{change.pk}": fingerprint}, follow=True)
            (message,) = [str(m) for m in response.context["messages"]]
            assert message.startswith(f"Change #{change.pk} not approved: ")
    elif channel == "cli":
        live_server = request.getfixturevalue("live_server")
        for var in ("CHANGEGATE_USER", "CHANGEGATE_PROFILE"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
        monkeypatch.setenv("CHANGEGATE_URL", live_server.url)
        monkeypatch.setenv("CHANGEGATE_TOKEN", Token.objects.create(user=actor).key)
        capsys.readouterr()
        code = cli.main(["approve", str(change.pk), "--yes", "--fingerprint", fingerprint])
        assert code == cli.EXIT_REFUSED
        # The server's refusal, not any error (a bad token or a 404 also exit 1).
        err = capsys.readouterr().err
        assert err.startswith("error: ") and refusal(who) in err, err
    else:
        with pytest.raises(NotPermitted):
            change_approve(actor=actor, change=change, fingerprint=fingerprint)

    nothing_approved(change)


# ---------------------------------------------------------------------------
# (b) The permission matrix

# name: (method, path, the state of the change it acts on or None, body). {target},
# {change}, {fingerprint} and the target's config ({zone}, {primary}, {key_file})
# are filled in per case.
ENDPOINTS: dict[str, tuple[str, str, str | None, dict[str, Any] | None]] = {
    "targets_list": ("get", "/api/v1/targets/", None, None),
    "target_register": ("post", "/api/v1/targets/", None, {"name": "again-{zone}", "config": {
        "zone": "{zone}", "primary": "{primary}", "tsig_key_file": "{key_file}"}}),
    "target_detail": ("get", "/api/v1/targets/{target}/", None, None),
    "target_live": ("get", "/api/v1/targets/{target}/live/?name=www&type=A", None, None),
    "changes_list": ("get", "/api/v1/changes/?target={target}", State.PENDING_APPROVAL, None),
    "change_create": ("post", "/api/v1/changes/", None,
                      {"target": "{target}", "title": "t", "reason": "r", "items": WWW}),
    "change_detail": ("get", "/api/v1/changes/{change}/", State.PENDING_APPROVAL, None),
    "change_edit": ("patch", "/api/v1/changes/{change}/", State.PENDING_APPROVAL, {"title": "edited"}),
    "change_plan": ("post", "/api/v1/changes/{change}/plan/", State.PENDING_APPROVAL, None),
    "change_submit": ("post", "/api/v1/changes/{change}/submit/", State.DRAFT, None),
    "change_cancel": ("post", "/api/v1/changes/{change}/cancel/", State.PENDING_APPROVAL, {"reason": "obsolete"}),
    "change_approve": ("post", "/api/v1/changes/{change}/approve/", State.PENDING_APPROVAL,
                       {"fingerprint": "{fingerprint}"}),
    "change_approve_draft": ("post", "/api/v1/changes/{change}/approve/", State.DRAFT,
                             {"fingerprint": "{fingerprint}"}),
    "change_reject": ("post", "/api/v1/changes/{change}/reject/", State.PENDING_APPROVAL, {"comment": "no"}),
    "change_emergency": ("post", "/api/v1/changes/{change}/emergency/", State.PENDING_APPROVAL, {"reason": "outage"}),
    "change_emergency_review": ("post", "/api/v1/changes/{change}/emergency-review/", State.PENDING_APPROVAL,
                                {"comment": "checked"}),
    "emergency_queue": ("get", "/api/v1/emergency-queue/", State.PENDING_APPROVAL, None),
    "change_rollback": ("post", "/api/v1/changes/{change}/rollback/", State.PENDING_APPROVAL, {"reason": "undo"}),
    "change_revert": ("post", "/api/v1/changes/{change}/revert/", State.PENDING_APPROVAL, {"reason": "undo"}),
    "change_evidence": ("get", "/api/v1/changes/{change}/evidence/", State.PENDING_APPROVAL, None),
    "change_comments": ("get", "/api/v1/changes/{change}/comments/", State.PENDING_APPROVAL, None),
    "change_comment_add": ("post", "/api/v1/changes/{change}/comments/", State.PENDING_APPROVAL,
                           {"body": "is the TTL right?"}),
    "audit_export": ("get", "/api/v1/audit/export/?format=csv&target={target}", State.PENDING_APPROVAL, None),
}

# endpoint -> expected status class per role, as "on the own target/on the other
# target". "in"/"out": 200, and the object is / is not in the list. The author is
# the engineer who wrote the change; "engineer" is another engineer on the same
# target. Staff may open the admin and hold nothing else: being staff gives
# nothing anywhere. The operator holds the operator role and no role on either
# target: he registers targets (the own or the other zone once more, under a new
# name), and sees no change (404 before any other answer).
ROLES = ("author", "engineer", "reviewer", "auditor", "outsider", "staff", "operator")
EXPECTED: dict[str, tuple[str, ...]] = {
    #                        author     engineer   reviewer   auditor    outsider   staff      operator
    "targets_list":         ("in/out",  "in/out",  "in/out",  "in/out",  "out/out", "out/out", "out/out"),
    "target_register":      ("403/403", "403/403", "403/403", "403/403", "403/403", "403/403", "2xx/2xx"),
    "target_detail":        ("2xx/404", "2xx/404", "2xx/404", "2xx/404", "404/404", "404/404", "404/404"),
    "target_live":          ("2xx/404", "2xx/404", "2xx/404", "2xx/404", "404/404", "404/404", "404/404"),
    "changes_list":         ("in/out",  "in/out",  "in/out",  "in/out",  "out/out", "out/out", "out/out"),
    "change_create":        ("2xx/400", "2xx/400", "403/400", "403/400", "400/400", "400/400", "400/400"),
    "change_detail":        ("2xx/404", "2xx/404", "2xx/404", "2xx/404", "404/404", "404/404", "404/404"),
    "change_edit":          ("2xx/404", "2xx/404", "403/404", "403/404", "404/404", "404/404", "404/404"),
    "change_plan":          ("2xx/404", "2xx/404", "2xx/404", "403/404", "404/404", "404/404", "404/404"),
    "change_submit":        ("2xx/404", "403/404", "403/404", "403/404", "404/404", "404/404", "404/404"),
    # The author, an editor or an operator, with a reason.
    "change_cancel":        ("2xx/404", "403/404", "403/404", "403/404", "404/404", "404/404", "404/404"),
    "change_approve":       ("403/404", "403/404", "2xx/404", "403/404", "404/404", "404/404", "404/404"),
    "change_approve_draft": ("403/404", "403/404", "409/404", "403/404", "404/404", "404/404", "404/404"),
    "change_reject":        ("403/404", "403/404", "2xx/404", "403/404", "404/404", "404/404", "404/404"),
    # Nobody here holds emergency_change; the reviewer may review, but this change is no emergency.
    "change_emergency":     ("403/404", "403/404", "403/404", "403/404", "404/404", "404/404", "404/404"),
    "change_emergency_review": ("403/404", "403/404", "409/404", "403/404", "404/404", "404/404", "404/404"),
    "emergency_queue":      ("out/out", "out/out", "out/out", "out/out", "out/out", "out/out", "out/out"),
    # Only applied changes can be rolled back; proposing one needs submit_change.
    "change_rollback":      ("409/404", "409/404", "403/404", "403/404", "404/404", "404/404", "404/404"),
    # The one-person revert: only the author or an approver whose approval counted (nobody
    # approved this pending change), and only an applied change inside its watch window.
    "change_revert":        ("409/404", "403/404", "403/404", "403/404", "404/404", "404/404", "404/404"),
    "change_evidence":      ("2xx/404", "2xx/404", "2xx/404", "2xx/404", "404/404", "404/404", "404/404"),
    # The discussion: whoever may see the change reads it and takes part in it.
    "change_comments":      ("2xx/404", "2xx/404", "2xx/404", "2xx/404", "404/404", "404/404", "404/404"),
    "change_comment_add":   ("2xx/404", "2xx/404", "2xx/404", "2xx/404", "404/404", "404/404", "404/404"),
    # Only export_audit exports (403 for whoever holds it on no target); naming a target
    # you may not export is a bad filter (400), whether it exists or not.
    "audit_export":         ("403/403", "403/403", "403/403", "2xx/400", "403/403", "403/403", "403/403"),
}

CASES = [
    pytest.param(role, endpoint, where, cells[column].split("/")[0 if where == "own" else 1],
                 id=f"{role}-{endpoint}-{where}")
    for endpoint, cells in EXPECTED.items()
    for column, role in enumerate(ROLES)
    for where in ("own", "other")
]


def status_class(code: int) -> str:
    return "2xx" if 200 <= code < 300 else str(code)


def fill(value: Any, values: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return value.format(**values)
    if isinstance(value, dict):
        return {key: fill(item, values) for key, item in value.items()}
    return value


def test_the_table_covers_every_role_and_endpoint():
    assert set(EXPECTED) == set(ENDPOINTS)
    assert all(len(cells) == len(ROLES) for cells in EXPECTED.values())


@pytest.mark.parametrize(("role", "endpoint", "where", "expected"), CASES)
def test_permission_matrix(role, endpoint, where, expected, author, reviewer, auditor, outsider, plain_staff, operator,
                           make_user, dns_target, other_target, olivia):
    personas = {"author": author, "reviewer": reviewer, "auditor": auditor, "outsider": outsider,
                "staff": plain_staff, "operator": operator}
    actor = personas.get(role)
    if role == "engineer":
        actor = make_user("eve")
        grant(actor, "engineer", dns_target)
    target = dns_target if where == "own" else other_target
    method, path, state, body = ENDPOINTS[endpoint]
    change = None
    if state is not None:
        change = new_change(author if where == "own" else olivia, target, state)
    values = {"target": target.pk, "change": change.pk if change else "",
              "fingerprint": change.fingerprint if change else "",
              **target.config, "key_file": target.config["tsig_key_file"]}
    api = APIClient()
    api.force_authenticate(actor)
    data = fill(body, values)
    response = getattr(api, method)(fill(path, values), data=json.dumps(data) if data is not None else None,
                                    content_type="application/json")

    if expected in ("in", "out"):
        assert response.status_code == 200, response.content
        ids = {row["id"] for row in response.json()["results"]}
        assert ("in" if (change or target).pk in ids else "out") == expected, (role, endpoint, where)
    else:
        assert status_class(response.status_code) == expected, (role, endpoint, where, response.content)


def api_routes() -> set[tuple[str, str]]:
    """(route name, method) of every API v1 view."""
    routes = set()
    for pattern in get_resolver("changes.urls").url_patterns:
        assert isinstance(pattern, URLPattern)
        view = pattern.callback.cls  # type: ignore[attr-defined]
        for method in ("get", "post", "patch", "put", "delete"):
            if hasattr(view, method):
                routes.add((pattern.name, method))
    return routes


def test_every_api_route_is_in_the_permission_table():
    exercised = {
        (resolve(path.split("?")[0].format(target=1, change=1, zone="z")).url_name, method)
        for method, path, _state, _body in ENDPOINTS.values()
    }
    assert api_routes() == exercised


# ---------------------------------------------------------------------------
# The selector and the button helper agree with the policy


def test_waiting_for_review_is_exactly_what_the_policy_would_accept(
        author, reviewer, second_reviewer, auditor, outsider, make_user, dns_target):
    grant(reviewer, "engineer", dns_target)
    changes = [new_change(author, dns_target, State.PENDING_APPROVAL),
               new_change(reviewer, dns_target, State.PENDING_APPROVAL),
               new_change(author, dns_target, State.DRAFT)]
    root = make_user("root", is_staff=True, is_superuser=True)
    for user in (author, reviewer, second_reviewer, auditor, outsider, root):
        waiting = set(changes_reviewable(user=user).values_list("pk", flat=True))
        accepted = {c.pk for c in changes if c.state == State.PENDING_APPROVAL and can_review(user, c)}
        assert waiting == accepted, user
    waiting_for_carol = set(changes_reviewable(user=second_reviewer).values_list("pk", flat=True))
    assert waiting_for_carol == {changes[0].pk, changes[1].pk}


# ---------------------------------------------------------------------------
# (c) Admin pages that change users, groups or permissions: role x page ->
# "403"/"404" (refused at the door), "refused" (the page answered but the
# privilege did not change), "requested" (a grant request waits for a second
# operator), "done" (changed, and an audit event names the actor).

ADMIN_ROLES = ("operator", "staff", "superuser", "helpdesk", "reviewer")
ADMIN_EXPECTED: dict[str, tuple[str, ...]] = {
    #                         operator     staff   superuser    helpdesk   reviewer
    "user_add":              ("403",       "403",  "done",      "done",    "403"),
    "user_make_superuser":   ("403",       "403",  "done",      "refused", "403"),
    "user_add_to_group":     ("403",       "403",  "done",      "refused", "403"),
    "group_add_permission":  ("403",       "403",  "done",      "refused", "403"),
    "grants_engineer":       ("done",      "403",  "done",      "403",     "403"),
    "grants_reviewer":       ("requested", "403",  "requested", "403",     "403"),
    "grants_approve":        ("done",      "403",  "done",      "403",     "403"),
    "target_object_perms":   ("404",       "404",  "404",       "404",     "404"),
}
HELPDESK_PERMS = ("add_user", "change_user", "view_user", "add_group", "change_group", "view_group")
PASSWORD = "Correct-Horse-Battery-9"


def test_the_admin_table_covers_every_role():
    assert all(len(cells) == len(ADMIN_ROLES) for cells in ADMIN_EXPECTED.values())


def admin_persona(role: str, request, make_user, target):
    from django.contrib.auth.models import Permission as P

    if role == "operator":
        return request.getfixturevalue("operator")
    if role == "staff":
        return request.getfixturevalue("plain_staff")
    if role == "superuser":
        return make_user("root", is_staff=True, is_superuser=True)
    if role == "helpdesk":
        user = make_user("helpdesk", is_staff=True)
        user.user_permissions.add(*P.objects.filter(content_type__app_label="auth", codename__in=HELPDESK_PERMS))
        return type(user).objects.get(pk=user.pk)
    user = request.getfixturevalue("reviewer")
    user.is_staff = True
    user.save()
    return user


@pytest.mark.parametrize(("role", "page", "expected"), [
    pytest.param(role, page, cells[i], id=f"{role}-{page}")
    for page, cells in ADMIN_EXPECTED.items() for i, role in enumerate(ADMIN_ROLES)
])
def test_admin_identity_pages(role, page, expected, request, make_user, dns_target):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.contrib.auth.models import Permission as P
    from django.test import Client
    from guardian.models import UserObjectPermission

    from approvals.policy import has_target_permission
    from changes.models import AuditEvent, GrantRequest
    from changes.permissions import grant_request_create

    actor = admin_persona(role, request, make_user, dns_target)
    frank = make_user("frank")
    reviewers = Group.objects.create(name="reviewers")
    otto = make_user("otto", is_staff=True)
    otto.user_permissions.add(P.objects.get(codename="operate_targets"))
    operate = P.objects.get(codename="operate_targets")
    form = {"username": "frank", "first_name": "", "last_name": "", "email": "", "is_active": "on",
            "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"}
    admin_target = reverse("admin:changes_target_change", args=[dns_target.pk]).removesuffix("change/")
    pages: dict[str, tuple[str, dict[str, Any]]] = {
        "user_add": (reverse("admin:auth_user_add"), {"username": "newbie", "password1": PASSWORD,
                                                      "password2": PASSWORD, "usable_password": "true"}),
        "user_make_superuser": (reverse("admin:auth_user_change", args=[frank.pk]),
                                {**form, "is_staff": "on", "is_superuser": "on"}),
        "user_add_to_group": (reverse("admin:auth_user_change", args=[frank.pk]), {**form, "groups": [reviewers.pk]}),
        "group_add_permission": (reverse("admin:auth_group_add"), {"name": "ops", "permissions": [operate.pk]}),
        "grants_engineer": (reverse("admin:changes_grantrequest_add"),
                            {"target": dns_target.pk, "role": "engineer", "user": frank.pk}),
        "grants_reviewer": (reverse("admin:changes_grantrequest_add"),
                            {"target": dns_target.pk, "role": "reviewer", "user": frank.pk, "reason": "on call"}),
        "grants_approve": ("", {}),
        "target_object_perms": (f"{admin_target}permissions/user-manage/{actor.pk}/",
                                {"permissions": ["approve_change", "emergency_change"]}),
    }
    url, data = pages[page]
    if page == "grants_approve":
        pending = grant_request_create(actor=type(otto).objects.get(pk=otto.pk), target=dns_target, role="reviewer",
                                       user=frank, reason="on call")
        url = reverse("admin:changes_grantrequest_approve", args=[pending.pk])
    seq_before = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    def own_rows() -> set[str]:
        return set(UserObjectPermission.objects.filter(user=actor, object_pk=str(dns_target.pk))
                   .values_list("permission__codename", flat=True))

    rows_before = own_rows()

    client = Client(enforce_csrf_checks=True)
    client.force_login(actor)
    client.get(reverse("admin:index"))
    response = client.post(url, {"csrfmiddlewaretoken": client.cookies["csrftoken"].value, **data})

    frank = get_user_model().objects.get(pk=frank.pk)
    happened = {
        "user_add": lambda: get_user_model().objects.filter(username="newbie").exists(),
        "user_make_superuser": lambda: frank.is_superuser,
        "user_add_to_group": lambda: frank.groups.filter(pk=reviewers.pk).exists(),
        "group_add_permission": lambda: Group.objects.filter(name="ops", permissions=operate).exists(),
        "grants_engineer": lambda: has_target_permission(frank, "submit_change", dns_target),
        "grants_reviewer": lambda: has_target_permission(frank, "approve_change", dns_target),
        "grants_approve": lambda: has_target_permission(frank, "approve_change", dns_target),
        # New rows for the actor himself (a reviewer already holds approve_change).
        "target_object_perms": lambda: own_rows() != rows_before,
    }[page]()
    new_events = AuditEvent.objects.filter(seq__gt=seq_before)
    if expected in ("403", "404"):
        assert status_class(response.status_code) == expected, (role, page, response.status_code)
        assert not happened
    elif expected == "refused":
        assert response.status_code in (200, 302) and not happened, (role, page)
    elif expected == "requested":
        assert response.status_code == 302 and not happened
        assert GrantRequest.objects.filter(user=frank, state=GrantRequest.State.PENDING, requested_by=actor).exists()
        assert new_events.filter(action="grant_requested", actor=actor).exists()
    else:
        assert response.status_code == 302 and happened, (role, page, response.status_code)
        assert new_events.filter(actor=actor).exclude(action__in=["change_created"]).exists(), (role, page)
