"""The admin as an adapter: every write goes through a service, every page is
filtered by what the user may see, against a real named."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from changes.models import AuditEvent, ChangeRequest, Origin, Target
from changes.services import change_create, change_submit, target_register
from tests.conftest import grant

pytestmark = [pytest.mark.django_db, pytest.mark.named]
State = ChangeRequest.State

ADD_CHANGE = "admin:changes_changerequest_add"
# The model permissions the `engineers` group needs for the admin pages; what a
# user may do to a given target still comes from guardian, per object.
ENGINEER_PERMS = ("add_changerequest", "view_changerequest")


@pytest.fixture
def fresh_zone(module_zone: str) -> str:
    """One spare zone for the whole module: these tests plan against the zone but
    never write to it, and the database (with the target row) is flushed per test."""
    return module_zone


def staff_with(user, *codenames: str):
    user.is_staff = True
    user.save()
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="changes", codename__in=codenames))
    return user


def change_url(change: ChangeRequest) -> str:
    return reverse("admin:changes_changerequest_change", args=[change.pk])


def propose(client, target: Target, patch: str, **extra):
    data = {"target": target.pk, "title": "Move www", "reason": "new load balancer", "patch": patch, **extra}
    return client.post(reverse(ADD_CHANGE), data)


def row(css: str, sign: str, line: str) -> str:
    return f'<tr class="{css}"><td class="cg-sign">{sign}</td><td class="cg-line"><code>{line}</code></td></tr>'


def test_engineer_proposes_a_change_in_the_admin_and_the_change_page_shows_the_diff(client, author, dns_target):
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    page = client.get(reverse(ADD_CHANGE))
    assert page.status_code == 200
    assert dns_target.name in page.content.decode() and "upsert: the RRset becomes exactly" in page.content.decode()

    response = client.post(reverse(ADD_CHANGE), {
        "target": dns_target.pk, "title": "Move www", "reason": "new load balancer",
        "patch": "= www 300 IN A 192.0.2.99\n",
    }, HTTP_USER_AGENT="pytest-browser")
    change = ChangeRequest.objects.get()
    assert response.status_code == 302 and response["Location"] == change_url(change)
    assert (change.author, change.state, change.title) == (author, State.DRAFT, "Move www")
    event = AuditEvent.objects.get(change=change, action="change_created")
    assert (event.origin, event.user_agent, event.actor) == (Origin.ADMIN, "pytest-browser", author)

    html = client.get(change_url(change)).content.decode()
    www = f"www.{dns_target.name}."
    assert row("cg-del", "-", f"{www} 300 IN A 192.0.2.10") in html
    assert row("cg-del", "-", f"{www} 300 IN A 192.0.2.11") in html
    assert row("cg-add", "+", f"{www} 300 IN A 192.0.2.99") in html
    assert change.fingerprint in html and "new load balancer" in html and "change_created" in html
    assert "Submit for approval" in html

    listing = client.get(reverse("admin:changes_changerequest_changelist")).content.decode()
    assert "Move www" in listing


def test_the_change_list_rows_are_the_cells_django_renders(client, author, dns_target):
    """The change list renders its rows itself (ChangeRequestList.result_rows: per column
    once what Django works out per cell): the same cells, links, filters kept and escaping."""
    from django.contrib.admin import ModelAdmin, site
    from django.contrib.admin.templatetags.admin_list import results

    change = change_create(actor=author, target=dns_target, title="Move <www> & co", reason="lb",
                           patch="= www 300 IN A 192.0.2.99\n")
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    url = reverse("admin:changes_changerequest_changelist")
    for query in ({}, {"state__exact": State.DRAFT, "o": "2"}):
        cl = client.get(url, query).context["cl"]
        assert ["".join(row) for row in cl.result_rows()] == ["".join(row) for row in results(cl)] != []
    change_admin = site._registry[ChangeRequest]
    assert change_admin.action_checkbox(change) == ModelAdmin.action_checkbox(change_admin, change)


def test_bad_patch_line_is_a_form_error_naming_the_line_and_stores_nothing(client, author, dns_target):
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    before = (ChangeRequest.objects.count(), AuditEvent.objects.count())

    response = propose(client, dns_target, "# comment\n+ ok 60 A 192.0.2.1\n+ bad 60 A 999.0.0.1\n")
    assert response.status_code == 200
    (message,) = response.context["form"].errors["patch"]
    assert message.startswith("line 3: records[0]: ")

    response = propose(client, dns_target, "+ ok 60 A 192.0.2.1\nthis is not a record\n")
    assert response.context["form"].errors["patch"][0].startswith("line 2: ")

    response = propose(client, dns_target, "+ ok 60 A 192.0.2.1\n", reason="  ")
    assert response.context["form"].errors["reason"] == ["reason is required: say why the change is needed"]
    assert "Please correct the errors below." in response.content.decode()
    assert (ChangeRequest.objects.count(), AuditEvent.objects.count()) == before


def test_target_choice_is_limited_to_targets_the_engineer_can_see(client, author, staff, dns_target):
    hidden = target_register(actor=staff, name="hidden-zone", config=dict(dns_target.config), check_reachable=False)
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    page = client.get(reverse(ADD_CHANGE)).content.decode()
    assert dns_target.name in page and "hidden-zone" not in page

    response = propose(client, hidden, "= www 300 IN A 192.0.2.99\n")
    assert response.status_code == 200 and "target" in response.context["form"].errors
    assert not ChangeRequest.objects.exists()


def test_engineer_without_submit_permission_gets_a_form_error_not_a_500(client, reviewer, dns_target):
    # The reviewer sees the target (approve_change) but may not propose on it.
    client.force_login(staff_with(reviewer, *ENGINEER_PERMS))
    response = propose(client, dns_target, "= www 300 IN A 192.0.2.99\n")
    assert response.status_code == 200
    assert "submit_change" in response.context["form"].errors["target"][0]
    assert not ChangeRequest.objects.exists()


def test_posting_the_change_page_cannot_change_state_or_plan(client, author, dns_target, make_user):
    change = change_create(actor=author, target=dns_target, title="Move www", reason="lb",
                           patch="= www 300 IN A 192.0.2.99\n")
    users = (staff_with(author, *ENGINEER_PERMS, "change_changerequest"),
             make_user("root", is_staff=True, is_superuser=True))
    events = AuditEvent.objects.count()  # after the users: their creation is audited too
    for user in users:
        client.force_login(user)
        response = client.post(change_url(change), {
            "state": State.APPROVED, "fingerprint": "0" * 64, "plan": "{}", "title": "hijacked",
            "_save": "Save",
        })
        assert response.status_code == 405
    fresh = ChangeRequest.objects.get(pk=change.pk)
    assert (fresh.state, fresh.fingerprint, fresh.plan, fresh.title) == (
        State.DRAFT, change.fingerprint, change.plan, "Move www")
    assert AuditEvent.objects.count() == events
    assert client.post(reverse("admin:changes_changerequest_delete", args=[change.pk])).status_code == 403


def test_outsider_staff_cannot_see_a_change_on_a_target_they_cannot_see(client, author, outsider, dns_target):
    change = change_create(actor=author, target=dns_target, title="Secret move", reason="lb",
                           patch="= www 300 IN A 192.0.2.99\n")
    client.force_login(staff_with(outsider, *ENGINEER_PERMS))
    assert client.get(change_url(change)).status_code == 404
    assert "Secret move" not in client.get(reverse("admin:changes_changerequest_changelist")).content.decode()
    for action in ("submit", "cancel", "replan"):
        url = reverse(f"admin:changes_changerequest_{action}", args=[change.pk])
        assert client.post(url).status_code == 404
    assert ChangeRequest.objects.get(pk=change.pk).state == State.DRAFT


def test_buttons_call_the_services_and_a_refusal_is_a_message(client, author, reviewer, dns_target):
    change = change_create(actor=author, target=dns_target, title="Move www", reason="lb",
                           patch="= www 300 IN A 192.0.2.99\n")
    client.force_login(staff_with(reviewer, "view_changerequest"))
    response = client.post(reverse("admin:changes_changerequest_submit", args=[change.pk]), follow=True)
    assert response.status_code == 200
    # The admin capitalizes messages.
    assert "only the author or an editor of a change may submit it" in response.content.decode().lower()
    assert ChangeRequest.objects.get(pk=change.pk).state == State.DRAFT

    client.force_login(staff_with(author, *ENGINEER_PERMS))
    assert client.get(reverse("admin:changes_changerequest_submit", args=[change.pk])).status_code == 405
    client.post(reverse("admin:changes_changerequest_replan", args=[change.pk]))
    client.post(reverse("admin:changes_changerequest_submit", args=[change.pk]))
    assert ChangeRequest.objects.get(pk=change.pk).state == State.PENDING_APPROVAL
    client.post(reverse("admin:changes_changerequest_cancel", args=[change.pk]), {"reason": "not needed"})
    assert ChangeRequest.objects.get(pk=change.pk).state == State.CANCELLED

    response = client.post(reverse("admin:changes_changerequest_cancel", args=[change.pk]), follow=True)
    assert response.status_code == 200 and "it cannot move to cancelled" in response.content.decode()
    assert "Submit for approval" not in response.content.decode()  # terminal: no buttons
    events = AuditEvent.objects.filter(change=change).order_by("seq")
    assert [(e.action, e.origin) for e in events] == [
        ("change_created", Origin.SYSTEM), ("change_planned", Origin.ADMIN),
        ("change_submitted", Origin.ADMIN), ("change_cancelled", Origin.ADMIN),
    ]


def test_script_in_a_txt_record_and_title_is_escaped_and_risks_are_described(client, author, dns_target):
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    response = propose(client, dns_target, '= evil 300 IN TXT "v=spf1 <script>alert(1)</script> -all"\n',
                       title="<b>bold</b> move")
    change = ChangeRequest.objects.get()
    assert response.status_code == 302
    html = client.get(change_url(change)).content.decode()
    assert "<script>alert(1)" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;bold&lt;/b&gt; move" in html
    assert change.risk_flags == ["mail"]
    assert "changes mail routing or mail authentication" in html


def test_audit_event_admin_is_read_only_and_filtered_by_target(client, author, auditor, staff, dns_target, make_user):
    hidden = target_register(actor=staff, name="hidden-zone", config=dict(dns_target.config), check_reachable=False)
    change_create(actor=author, target=dns_target, title="Move www", reason="lb", patch="= www 300 IN A 192.0.2.99\n")
    event = AuditEvent.objects.get(action="change_created")
    admin = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(admin)
    listing = client.get(reverse("admin:changes_auditevent_changelist"))
    assert listing.status_code == 200 and event.hash[:12] in listing.content.decode()
    assert client.get(reverse("admin:changes_auditevent_add")).status_code == 403
    detail = client.get(reverse("admin:changes_auditevent_change", args=[event.pk]))
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
    assert client.post(reverse("admin:changes_auditevent_change", args=[event.pk]),
                       {"action": "forged"}).status_code == 403
    assert client.post(reverse("admin:changes_auditevent_delete", args=[event.pk]), {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.get(pk=event.pk).action == "change_created"

    client.force_login(staff_with(auditor, "view_auditevent", "view_changerequest"))
    listing = client.get(reverse("admin:changes_auditevent_changelist")).content.decode()
    hidden_event = AuditEvent.objects.get(target=hidden)
    assert event.hash[:12] in listing and hidden_event.hash[:12] not in listing
    assert client.get(reverse("admin:changes_auditevent_change", args=[hidden_event.pk])).status_code == 302


def test_operator_registers_a_target_through_the_admin_form(client, make_user, named_server, fresh_zone):
    admin = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(admin)
    url = reverse("admin:changes_target_add")
    base = {"name": fresh_zone, "primary": named_server.primary, "tsig_key_file": str(named_server.key_file),
            "timeout": "2", "required_approvals": "2", "approval_lifetime_seconds": "3600", "bake_seconds": "10",
            "bake_max_seconds": "900"}

    bad = client.post(url, {**base, "tsig_key_file": "relative.key", "nameservers": "127.0.0.1:53, nope"})
    errors = bad.context["form"].errors
    assert errors["tsig_key_file"] == ["must be an absolute path"] and "nameservers" in errors
    bad = client.post(url, {**base, "zone": "notserved.test"})
    assert "cannot reach zone notserved.test" in bad.context["form"].non_field_errors()[0]
    bad = client.post(url, {**base, "required_approvals": "11"})
    assert bad.context["form"].errors["required_approvals"] == ["must be an integer 1..10"]
    bad = client.post(url, {**base, "bake_max_seconds": "86401"})
    assert bad.context["form"].errors["bake_max_seconds"] == ["must be an integer 0..86400"]
    assert not Target.objects.exists()

    response = client.post(url, base)
    target = Target.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:changes_target_change", args=[target.pk])
    assert (target.name, target.required_approvals, target.config["zone"]) == (fresh_zone, 2, fresh_zone)
    assert target.bake_max_seconds == 900
    assert target.item_count
    assert AuditEvent.objects.get(target=target, action="target_registered").origin == Origin.ADMIN
    listing = client.get(reverse("admin:changes_target_changelist")).content.decode()
    assert fresh_zone in listing
    # guardian's object-permissions page is gone: roles are granted on the Grants page.
    assert client.get(reverse("admin:changes_target_change", args=[target.pk]).replace(
        "/change/", "/permissions/")).status_code == 404


def test_target_policy_is_editable_but_config_is_not(client, make_user, dns_target):
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    url = reverse("admin:changes_target_change", args=[dns_target.pk])
    assert "Object permissions" not in client.get(url).content.decode()
    response = client.post(url, {
        "required_approvals": "2", "approval_lifetime_seconds": "7200", "bake_seconds": "30", "bake_max_seconds": "600",
        "watch_interval_seconds": "30", "frozen": "on", "config": '{"zone": "evil.test"}', "name": "renamed", "rrset_count": "0",
    })
    assert response.status_code == 302
    target = Target.objects.get(pk=dns_target.pk)
    assert (target.required_approvals, target.bake_seconds, target.bake_max_seconds, target.frozen) == (2, 30, 600, True)
    unchanged = (dns_target.name, dns_target.config, dns_target.item_count)
    assert (target.name, target.config, target.item_count) == unchanged
    assert client.post(reverse("admin:changes_target_delete", args=[target.pk]), {"post": "yes"}).status_code == 403


def test_engineer_reaches_the_admin_with_only_add_and_view_model_permissions(client, author, dns_target):
    grant(author, "engineer", dns_target)
    client.force_login(staff_with(author))
    assert client.get(reverse(ADD_CHANGE)).status_code == 403
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    index = client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:changes_changerequest_changelist") in index
    assert client.get(reverse(ADD_CHANGE)).status_code == 200


# An MX at a name of the zone with no address: the plan warns the reviewer (issue 12).
SHOP_MX = "= shop 300 IN MX 10 nohost\n"
WARNINGS_BOX = '<div class="module cg-warnings">'


def test_the_change_page_shows_the_warnings_above_the_diff_to_the_reviewer(client, author, reviewer, dns_target):
    warned = change_create(actor=author, target=dns_target, title="Shop mail", reason="shop", patch=SHOP_MX)
    clean = change_create(actor=author, target=dns_target, title="Move www", reason="lb",
                          patch="= www 300 IN A 192.0.2.99\n")
    client.force_login(staff_with(reviewer, "view_changerequest"))

    html = client.get(change_url(warned)).content.decode()
    (warning,) = warned.plan_warnings
    assert "Warnings for the reviewer" in html and f'<li class="warning">{warning}</li>' in html
    assert html.index(WARNINGS_BOX) < html.index('<table class="cg-diff">')

    html = client.get(change_url(clean)).content.decode()
    assert WARNINGS_BOX not in html and "Warnings for the reviewer" not in html
    assert '<table class="cg-diff">' in html


def test_the_bulk_approve_page_shows_the_warnings_of_each_change_that_has_some(
        client, author, reviewer, dns_target):
    warned = change_submit(actor=author, change=change_create(
        actor=author, target=dns_target, title="Shop mail", reason="shop", patch=SHOP_MX))
    clean = change_submit(actor=author, change=change_create(
        actor=author, target=dns_target, title="Move www", reason="lb", patch="= www 300 IN A 192.0.2.99\n"))
    client.force_login(staff_with(reviewer, "view_changerequest"))
    response = client.post(reverse("admin:changes_changerequest_changelist"), {
        "action": "approve_selected", "_selected_action": [warned.pk, clean.pk], "index": "0"})
    assert response.status_code == 200
    html = response.content.decode()
    first, second = html.split(f'id="cg-change-{clean.pk}"')
    (warning,) = warned.plan_warnings
    assert first.count(WARNINGS_BOX) == 1 and f'<li class="warning">{warning}</li>' in first
    assert first.index(WARNINGS_BOX) < first.index('<table class="cg-diff">')
    assert WARNINGS_BOX not in second and '<table class="cg-diff">' in second


def comment_url(change: ChangeRequest) -> str:
    return reverse("admin:changes_changerequest_comment", args=[change.pk])


def test_comments_are_listed_oldest_first_and_added_from_the_change_page(client, author, reviewer, dns_target):
    change = change_create(actor=author, target=dns_target, title="Move www", reason="lb",
                           patch="= www 300 IN A 192.0.2.99\n")
    client.force_login(staff_with(reviewer, "view_changerequest"))
    html = client.get(change_url(change)).content.decode()
    assert "Comments (0)" in html and f'action="{comment_url(change)}"' in html

    response = client.post(comment_url(change), {"body": "why .99? @alice"}, follow=True)
    assert response.redirect_chain[-1][0] == change_url(change) + "#comments"
    assert [str(m) for m in response.context["messages"]] == ["Your comment is added."]
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    client.post(comment_url(change), {"body": "the new LB <b>address</b>"})
    html = client.get(change_url(change)).content.decode()
    assert "Comments (2)" in html and "(alerted: @alice)" in html
    assert html.index("why .99? @alice") < html.index("the new LB &lt;b&gt;address&lt;/b&gt;")
    event = AuditEvent.objects.filter(change=change, action="comment_added").order_by("seq").first()
    assert (event.origin, event.actor) == (Origin.ADMIN, reviewer)


def test_an_empty_comment_is_a_form_error_and_an_unknown_mention_a_warning(client, author, dns_target):
    change = change_create(actor=author, target=dns_target, title="Move www", reason="lb",
                           patch="= www 300 IN A 192.0.2.99\n")
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    response = client.post(comment_url(change), {"body": "   "})
    assert response.status_code == 200
    assert response.context["comment_form"].errors["body"] == ["the comment is empty"]
    assert "Your comment was not added." in response.content.decode()
    assert not AuditEvent.objects.filter(change=change, action="comment_added").exists()

    response = client.post(comment_url(change), {"body": "ping @nobody-here"}, follow=True)
    messages = [str(m) for m in response.context["messages"]]
    assert messages[0] == "Your comment is added." and "@nobody-here" in messages[1]
    assert client.get(comment_url(change)).status_code == 405


def test_an_apply_failure_is_named_at_the_top_and_times_are_to_the_second(client, author, dns_target):
    from changes.admin.change_page import failure_context

    change = ChangeRequest(state=State.APPLY_FAILED, target=dns_target, plan=None)
    failed = AuditEvent(seq=9, action="apply_failed", payload={"error": "REFUSED by the primary", "permanent": True})
    other = AuditEvent(seq=8, action="apply_started", payload={})
    assert failure_context(change, [other, failed])["failure"]["headline"] == "Applying failed: REFUSED by the primary."
    change.state = State.APPLIED
    assert failure_context(change, [other, failed]) == {}

    stored = change_create(actor=author, target=dns_target, title="Move www", reason="lb",
                           patch="= www 300 IN A 192.0.2.99\n")
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    html = client.get(change_url(stored)).content.decode()
    assert stored.created_at.strftime("%Y-%m-%d %H:%M:%S UTC") in html
