"""Approve only what was shown, through the admin's HTML forms with CSRF enforced
(real named): the bulk approve confirms on a page listing each plan and posts the
fingerprints that page showed; the Approve button is gone, and the policy refuses,
while the live zone no longer matches the plan."""

from __future__ import annotations

from functools import partial
from html.parser import HTMLParser

import dns.query
import dns.tsigkeyring
import dns.update
import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from approvals.models import Approval
from changes.models import AuditEvent, ChangeRequest
from changes.services import change_update
from tests.conftest import grant
from tests.factories import submitted

pytestmark = [pytest.mark.django_db, pytest.mark.named]
State = ChangeRequest.State
API = [{"op": "upsert", "name": "api", "type": "A", "ttl": 300, "records": ["192.0.2.98"]}]
CHANGELIST = "admin:changes_changerequest_changelist"


class Forms(HTMLParser):
    """Every <form> of a page: its action and its named inputs (values as rendered)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.forms: list[dict] = []
        self.options: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"action": attrs.get("action", ""), "fields": {}})
        elif tag == "input" and self.forms and attrs.get("name") and attrs.get("type") != "submit":
            self.forms[-1]["fields"].setdefault(attrs["name"], []).append(attrs.get("value", ""))
        elif tag == "option" and attrs.get("value"):
            self.options.append(attrs["value"])


def browser(user) -> Client:
    user.is_staff = True
    user.save()
    user.user_permissions.add(Permission.objects.get(content_type__app_label="changes",
                                                     codename="view_changerequest"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def get(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


def csrf(html: str) -> str:
    return next(f["fields"]["csrfmiddlewaretoken"][0] for f in Forms(html).forms if "csrfmiddlewaretoken" in f["fields"])


def select_action(client: Client, action: str, changes) -> tuple[int, str]:
    """Tick the changes on the change list and run `action`, as the browser does."""
    html = get(client, reverse(CHANGELIST))
    response = client.post(reverse(CHANGELIST), {
        "csrfmiddlewaretoken": csrf(html), "action": action, "index": "0",
        "_selected_action": [c.pk for c in changes],
    }, follow=True)
    return response.status_code, response.content.decode()


def confirm(client: Client, html: str) -> list[str]:
    """Press the confirmation page's submit button: post exactly its fields."""
    (form,) = [f for f in Forms(html).forms if "post" in f["fields"]]
    response = client.post(reverse(CHANGELIST), form["fields"], follow=True)
    assert response.status_code == 200
    return [str(m) for m in response.context["messages"]]


pending = partial(submitted, title="Move www", reason="new lb")


def test_bulk_approve_shows_each_plan_and_fingerprint_before_approving(author, reviewer, dns_target):
    first, second = pending(author, dns_target), pending(author, dns_target, items=API, title="Move api")
    client = browser(reviewer)
    status, html = select_action(client, "approve_selected", [first, second])
    assert status == 200
    assert not Approval.objects.exists()  # nothing approved on the first click
    for change, address in ((first, "192.0.2.99"), (second, "192.0.2.98")):
        assert change.fingerprint in html and address in html  # the fingerprint and the diff, per change
    (form,) = [f for f in Forms(html).forms if "post" in f["fields"]]
    assert form["fields"][f"fingerprint_{first.pk}"] == [first.fingerprint]
    assert form["fields"][f"fingerprint_{second.pk}"] == [second.fingerprint]
    assert confirm(client, html) == [f"Change #{first.pk} approved.", f"Change #{second.pk} approved."]
    assert {(a.change_id, a.fingerprint) for a in Approval.objects.all()} == {
        (first.pk, first.fingerprint), (second.pk, second.fingerprint)}


def test_bulk_approve_never_approves_a_plan_edited_after_it_was_shown(author, reviewer, dns_target):
    change = pending(author, dns_target)
    client = browser(reviewer)
    shown = change.fingerprint
    assert shown in get(client, reverse("admin:changes_changerequest_change", args=[change.pk]))
    _, html = select_action(client, "approve_selected", [change])
    assert shown in html and not Approval.objects.exists()

    edited = change_update(actor=author, change=change,
                           items=[{"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": ["203.0.113.66"]}])
    assert edited.fingerprint != shown

    (message,) = confirm(client, html)
    assert message.startswith(f"Change #{change.pk} not approved: the plan changed since you reviewed it")
    assert not Approval.objects.exists()
    assert ChangeRequest.objects.get(pk=change.pk).state == State.PENDING_APPROVAL
    assert not AuditEvent.objects.filter(change=change, action="approval_given").exists()


def test_bulk_actions_are_offered_only_to_people_who_may_review(author, reviewer, make_user, dns_target):
    change = pending(author, dns_target)
    eve = make_user("eve")
    grant(eve, "engineer", dns_target)
    engineer = browser(eve)
    html = get(engineer, reverse(CHANGELIST))
    assert change.title in html  # she sees the change list
    assert "approve_selected" not in Forms(html).options and "reject_selected" not in Forms(html).options
    # A forged POST of the action is not run either.
    status, page = select_action(engineer, "approve_selected", [change])
    assert status == 200 and "Approve the selected changes" not in page
    assert not Approval.objects.exists()

    options = Forms(get(browser(reviewer), reverse(CHANGELIST))).options
    assert "approve_selected" in options and "reject_selected" in options


def change_zone(named_server, target, address="198.51.100.9"):
    update = dns.update.UpdateMessage(target.name, keyring=dns.tsigkeyring.from_file(named_server.key_file))
    update.replace("www", 300, "A", address)
    dns.query.tcp(update, "127.0.0.1", port=named_server.port, timeout=3)


def test_no_approve_button_and_no_approval_while_the_live_zone_differs_from_the_plan(
        author, reviewer, dns_target, named_server):
    change = pending(author, dns_target)
    client = browser(reviewer)
    url = reverse("admin:changes_changerequest_change", args=[change.pk])
    before = get(client, url)
    (approve_form,) = [f for f in Forms(before).forms if f["action"].endswith("/approve/")]

    change_zone(named_server, dns_target)  # behind the gateway's back
    html = get(client, url)
    assert "Re-plan needed" in html
    assert not [f for f in Forms(html).forms if f["action"].endswith("/approve/")]
    assert 'value="Reject"' in html

    # The form from before the zone moved, posted anyway: the policy refuses.
    response = client.post(approve_form["action"], approve_form["fields"], follow=True)
    (message,) = [str(m) for m in response.context["messages"]]
    assert "the live zone changed since the plan was read" in message and "re-planned" in message
    assert not Approval.objects.exists()


def test_the_api_answers_409_plan_stale_naming_what_moved(author, reviewer, dns_target, named_server):
    from rest_framework.test import APIClient

    change = pending(author, dns_target)
    change_zone(named_server, dns_target)
    api = APIClient()
    api.force_authenticate(reviewer)
    response = api.post(f"/api/v1/changes/{change.pk}/approve/", {"fingerprint": change.fingerprint}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "plan_stale"
    assert response.json()["moved"] == [f"www.{dns_target.name}. A"]
    assert not Approval.objects.exists()
