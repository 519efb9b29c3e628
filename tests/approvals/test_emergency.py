"""Break-glass: one person applies alone, everyone is told, a second person reviews after."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail
from django.utils import timezone
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from approvals.policy import change_emergency, emergency_review
from changes.errors import Conflict, NotPermitted, ValidationFailed
from changes.models import AuditEvent, ChangeRequest
from changes.selectors import changes_emergency_unreviewed, emergency_overdue
from changes.services import change_create, target_update_policy
from tests.factories import WWW

pytestmark = [pytest.mark.django_db, pytest.mark.named]


@pytest.fixture
def on_call(author, dns_target):
    assign_perm("changes.emergency_change", author, dns_target)
    return author


@pytest.fixture
def draft(author, dns_target):
    return change_create(actor=author, target=dns_target, title="outage fix", reason="pay.example down", items=WWW)


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        length = int(self.headers["Content-Length"])
        _Hook.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook():
    _Hook.received = []
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Hook.received
    server.shutdown()
    server.server_close()


def test_on_call_engineer_approves_alone_and_reviewers_are_alerted(
        on_call, draft, reviewer, dns_target, staff, webhook, django_capture_on_commit_callbacks):
    url, received = webhook
    target_update_policy(actor=staff, target=dns_target, webhook_url=url)
    reviewer.email = "bob@example.test"
    reviewer.save()
    with django_capture_on_commit_callbacks(execute=True):  # mail and webhook are delivered on commit
        change = change_emergency(actor=on_call, change=draft, reason="card payments failing since 10:02")
    assert change.state == ChangeRequest.State.APPROVED
    assert (change.emergency, change.emergency_by) == (True, on_call)
    (message,) = mail.outbox
    assert message.to == ["bob@example.test"] and "emergency_change" in message.subject
    (payload,) = received
    assert payload["event"] == "emergency_change" and payload["reason"] == "card payments failing since 10:02"
    actions = list(AuditEvent.objects.filter(change=change).values_list("action", flat=True))
    assert actions[-2:] == ["change_submitted", "change_emergency_approved"]


def test_a_reason_is_required_and_nothing_happens_without_it(draft, on_call):
    with pytest.raises(ValidationFailed):
        change_emergency(actor=on_call, change=draft, reason=" ")
    assert ChangeRequest.objects.get(pk=draft.pk).state == ChangeRequest.State.DRAFT


def test_reviewer_without_emergency_permission_cannot_break_glass(reviewer, draft):
    with pytest.raises(NotPermitted):
        change_emergency(actor=reviewer, change=draft, reason="because")


def test_after_the_fact_review_by_a_second_person_empties_the_queue(on_call, draft, reviewer, second_reviewer):
    change = change_emergency(actor=on_call, change=draft, reason="outage")
    assert list(changes_emergency_unreviewed(user=reviewer)) == [change]
    with pytest.raises(NotPermitted):
        emergency_review(actor=on_call, change=change, comment="I checked my own work")
    reviewed = emergency_review(actor=reviewer, change=change, comment="diff matches the incident")
    assert reviewed.emergency_reviewed_by == reviewer
    with pytest.raises(Conflict):
        emergency_review(actor=second_reviewer, change=change, comment="again")
    assert list(changes_emergency_unreviewed(user=reviewer)) == []


def test_unreviewed_emergency_past_the_target_limit_is_overdue(on_call, draft, reviewer):
    change = change_emergency(actor=on_call, change=draft, reason="outage")
    assert not emergency_overdue(change)
    assert emergency_overdue(change, now=timezone.now() + timedelta(hours=25))


def test_api_break_glass_and_queue(on_call, draft, reviewer):
    author_client, reviewer_client = APIClient(), APIClient()
    author_client.force_authenticate(on_call)
    reviewer_client.force_authenticate(reviewer)
    bad = author_client.post(f"/api/v1/changes/{draft.pk}/emergency/", {"reason": ""}, format="json")
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "reason"
    ok = author_client.post(f"/api/v1/changes/{draft.pk}/emergency/", {"reason": "outage"}, format="json")
    assert ok.status_code == 200 and ok.json()["state"] == "approved" and ok.json()["emergency_by"] == "alice"
    # The reviewer has no emergency_change (403); the on-call engineer cannot force it twice (409).
    assert reviewer_client.post(f"/api/v1/changes/{draft.pk}/emergency/", {"reason": "x"}, format="json").status_code == 403
    assert author_client.post(f"/api/v1/changes/{draft.pk}/emergency/", {"reason": "x"}, format="json").status_code == 409
    queue = reviewer_client.get("/api/v1/emergency-queue/").json()
    assert [c["id"] for c in queue["results"]] == [draft.pk]
    review = reviewer_client.post(f"/api/v1/changes/{draft.pk}/emergency-review/", {"comment": "fine"}, format="json")
    assert review.status_code == 200 and review.json()["emergency_reviewed_by"] == "bob"
    assert reviewer_client.get("/api/v1/emergency-queue/").json()["results"] == []
