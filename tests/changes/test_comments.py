"""The discussion on a change (issue 15): the author and reviewers comment, anyone
who cannot see the change gets 404 and stores nothing, an @mention of someone who
may see the change sends one email and any other name is reported back (unknown and
not allowed alike), each comment is an audit event with its body that the audit
export carries, and the CLI comments and shows the discussion after the diff.

Nothing here applies a change, so the tests share the session's demo zone."""

from __future__ import annotations

import json
import re

import pytest
from django.core import mail
from django.http import Http404

from changes.errors import ValidationFailed
from changes.models import AuditEvent, ChangeComment, ChangeRequest, Notification
from changes.services import change_create, comment_add
from changes.services.comments import mentioned_names
from tests.changes.test_cli import clean_env, run  # noqa: F401 - the CLI fixtures, one copy
from tests.conftest import ZONE
from tests.factories import WWW, api_client

pytestmark = [pytest.mark.named]


@pytest.fixture
def fresh_zone(named_server) -> str:
    """Overrides the conftest fixture under `dns_target`: nothing is applied here."""
    return ZONE


@pytest.fixture
def change(dns_target, author) -> ChangeRequest:
    return change_create(actor=author, target=dns_target, title="Move www", reason="new load balancer", items=WWW)


def url(change: ChangeRequest) -> str:
    return f"/api/v1/changes/{change.pk}/comments/"


def post(user, change: ChangeRequest, body):
    return api_client(user).post(url(change), json.dumps(body), content_type="application/json")


def stored() -> tuple[int, int, int]:
    return (ChangeComment.objects.count(), AuditEvent.objects.filter(action="comment_added").count(),
            Notification.objects.count())


# ---------------------------------------------------------------------------
# Who may comment, and the list


@pytest.mark.django_db
def test_the_author_and_a_reviewer_comment_and_everyone_who_may_see_reads_oldest_first(change, author, reviewer,
                                                                                         auditor):
    first = post(author, change, {"body": "  Moving www to the new LB tonight.  "})
    assert first.status_code == 201, first.json()
    assert first.json() == {
        "id": first.json()["id"], "change": change.pk, "author": "alice", "body": "Moving www to the new LB tonight.",
        "mentions": [], "mentions_ignored": [], "created_at": first.json()["created_at"]}
    second = post(reviewer, change, {"body": "Is the TTL low enough?\nIt is 300."})
    assert second.status_code == 201, second.json()

    listing = api_client(auditor).get(url(change))  # an auditor may see the change, so may read (and write) here
    assert listing.status_code == 200
    page = listing.json()
    assert page["count"] == 2 and page["next"] is None
    assert [(c["author"], c["body"]) for c in page["results"]] == [
        ("alice", "Moving www to the new LB tonight."), ("bob", "Is the TTL low enough?\nIt is 300.")]
    assert set(page["results"][0]) == {"id", "change", "author", "body", "mentions", "created_at"}
    assert api_client(author).get(url(change), {"page": "2"}).status_code == 400  # past the last page, as every list


@pytest.mark.django_db
def test_an_outsider_gets_404_and_nothing_is_stored(change, outsider):
    before = stored()
    for body in ({"body": "let me in"}, {"body": ""}, {}):  # 404 whatever the body: the change does not exist for them
        response = post(outsider, change, body)
        assert response.status_code == 404 and response.json()["code"] == "not_found", response.json()
    assert api_client(outsider).get(url(change)).status_code == 404
    assert api_client().get(url(change)).status_code == 401
    assert api_client(outsider).get("/api/v1/changes/999999999/comments/").status_code == 404
    with pytest.raises(Http404):  # the service checks on its own (admin, commands)
        comment_add(actor=outsider, change=change, body="let me in")
    assert stored() == before


# ---------------------------------------------------------------------------
# Mentions


@pytest.mark.django_db
def test_a_mention_of_a_reviewer_sends_one_email_with_the_change_summary(change, author, reviewer,
                                                                         django_capture_on_commit_callbacks):
    reviewer.email = "bob@example.test"
    reviewer.save()
    with django_capture_on_commit_callbacks(execute=True):  # the outbox delivers after commit
        response = post(author, change, {"body": "@bob could you look at this before 18:00? (cc @alice)"})
    assert response.status_code == 201, response.json()
    assert response.json()["mentions"] == ["bob", "alice"]  # alice wrote it: mentioned, but not mailed
    assert response.json()["mentions_ignored"] == []
    (message,) = mail.outbox
    assert message.to == ["bob@example.test"]
    assert f"change #{change.pk}" in message.subject and "comment_mention" in message.subject
    assert message.body.splitlines()[0] == f'Change #{change.pk} "Move www" on {ZONE}: comment mention'
    assert "could you look at this before 18:00?" in message.body and "by: alice" in message.body
    (row,) = Notification.objects.filter(event="comment_mention")
    assert row.payload["comment"] == response.json()["id"] and row.recipients == ["bob@example.test"]


@pytest.mark.django_db
def test_a_name_that_cannot_see_the_change_is_reported_and_sent_nothing(change, author, outsider,
                                                                        django_capture_on_commit_callbacks):
    outsider.email = "mallory@example.test"
    outsider.save()
    with django_capture_on_commit_callbacks(execute=True):
        response = post(author, change, {"body": "@mallory and @nosuchuser, FYI. Mail ops@example.test too."})
    assert response.status_code == 201, response.json()
    body = response.json()
    # Unknown and not allowed read the same: the answer never says which names exist.
    assert body["mentions"] == [] and body["mentions_ignored"] == ["mallory", "nosuchuser"]
    assert mail.outbox == []
    assert not Notification.objects.exists()
    assert ChangeComment.objects.get(pk=body["id"]).mentions == []


def test_mentions_are_read_as_names_not_email_addresses():
    assert mentioned_names("@bob, thanks @carol. Mail ops@example.org; @bob again, @j.doe+x") == [
        "bob", "carol", "j.doe+x"]
    assert mentioned_names("no mention @ all") == []


# ---------------------------------------------------------------------------
# The audit log


@pytest.mark.django_db
def test_each_comment_is_an_audit_event_with_its_body(change, author, reviewer):
    response = post(reviewer, change, {"body": "LGTM @alice"})
    assert response.status_code == 201
    (event,) = AuditEvent.objects.filter(action="comment_added")
    assert event.change_id == change.pk and event.target_id == change.target_id
    assert event.actor_username == "bob" and event.origin == "api"
    assert event.payload == {"comment": response.json()["id"], "body": "LGTM @alice", "mentions": ["alice"]}
    comment_add(actor=author, change=change, body="thanks")
    assert [e.payload["body"] for e in AuditEvent.objects.filter(action="comment_added").order_by("seq")] == [
        "LGTM @alice", "thanks"]


@pytest.mark.django_db
def test_the_audit_export_carries_comment_events_for_an_auditor_who_may_see_the_target(change, reviewer, auditor):
    assert post(reviewer, change, {"body": "checked the zone, fine"}).status_code == 201
    response = api_client(auditor).get("/api/v1/audit/export/", {"change": str(change.pk)})
    assert response.status_code == 200
    lines = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    (event,) = [line for line in lines if line.get("action") == "comment_added"]
    assert event["actor_username"] == "bob" and event["change_id"] == change.pk
    assert event["payload"] == {"comment": ChangeComment.objects.get().pk, "body": "checked the zone, fine",
                                "mentions": []}


# ---------------------------------------------------------------------------
# Bad input


@pytest.mark.django_db
@pytest.mark.parametrize("body", [{"body": ""}, {"body": "   \n "}, {"body": "x" * 5001}, {"body": 42},
                                  {"body": None}, {"body": ["a"]}, {}, {"body": "ok", "extra": 1}])
def test_a_bad_body_is_a_400_naming_body_and_stores_nothing(change, author, body):
    before = stored()
    response = post(author, change, body)
    assert response.status_code == 400, response.json()
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == ({"extra"} if "extra" in body else {"body"})
    assert stored() == before


@pytest.mark.django_db
def test_the_service_refuses_the_same_bodies_and_takes_5000_characters(change, author):
    for body in ("", "  ", "x" * 5001, 42, None, "a\x00b"):
        with pytest.raises(ValidationFailed) as refused:
            comment_add(actor=author, change=change, body=body)
        assert [e["field"] for e in refused.value.errors] == ["body"]
    assert not ChangeComment.objects.exists()
    assert post(author, change, {"body": "y" * 5000}).status_code == 201


# ---------------------------------------------------------------------------
# The CLI against the live server




def as_user(monkeypatch, live_server, user) -> None:
    from rest_framework.authtoken.models import Token

    monkeypatch.setenv("CHANGEGATE_URL", live_server.url)
    monkeypatch.setenv("CHANGEGATE_TOKEN", Token.objects.get_or_create(user=user)[0].key)


# Real commits: the live_server thread reads through its own connection.
@pytest.mark.django_db(transaction=True)
def test_the_cli_comments_and_show_prints_the_discussion_after_the_diff(live_server, change, author, reviewer,
                                                                        outsider, run, monkeypatch):  # noqa: F811 - the imported fixture
    as_user(monkeypatch, live_server, reviewer)
    said = run("comment", str(change.pk), "-m", "TTL is fine.\nping @alice @ghost")
    assert said.code == 0, said.err
    number = ChangeComment.objects.get().pk
    assert said.out.splitlines() == [f"comment #{number} added to change #{change.pk}", "mentioned: alice"]
    assert "@ghost" in said.err and "@alice" not in said.err
    (event,) = AuditEvent.objects.filter(action="comment_added")
    assert event.origin == "cli"

    as_json = run("--json", "comment", str(change.pk), "-m", "second")
    assert as_json.code == 0 and json.loads(as_json.out)["mentions_ignored"] == []

    as_user(monkeypatch, live_server, author)
    shown = run("show", str(change.pk))
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    first_diff, heading = lines.index(next(line for line in lines if line.startswith("---"))), lines.index("comments:")
    assert first_diff < heading < lines.index("approvals:")
    assert re.fullmatch(rf"  #{number}  \S+  bob", lines[heading + 1])
    assert lines[heading + 2: heading + 4] == ["    TTL is fine.", "    ping @alice @ghost"]
    assert "    second" in lines

    assert run("comment", str(change.pk), "-m", "   ").code == 2  # a usage error: nothing sent
    too_long = run("comment", str(change.pk), "-m", "z" * 5001)
    assert too_long.code == 1 and "body:" in too_long.err
    as_user(monkeypatch, live_server, outsider)
    assert run("comment", str(change.pk), "-m", "hello").code == 1
    assert ChangeComment.objects.count() == 2
