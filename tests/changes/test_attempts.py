"""Executions are attempts: a change whose attempt ended short of applying (it
drifted, its approvals lapsed) is approved again and gets a new attempt, with its
own claim, lease and outcome; the API, the admin and the evidence show them all.
Against a real named, through the API."""

from __future__ import annotations

import dns.query
import dns.tsigkeyring
import dns.update
import pytest

from changes.models import AuditEvent, ChangeRequest, Execution
from pipeline.run import execution_run
from tests.conftest import grant
from tests.factories import WWW, api_client

pytestmark = [pytest.mark.django_db, pytest.mark.named]
State = ChangeRequest.State


def ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.content
    return response.json()


def drift_www(named_server, target, value: str = "203.0.113.50") -> None:
    """Somebody changes the live zone behind changegate's back."""
    update = dns.update.UpdateMessage(target.name, keyring=dns.tsigkeyring.from_file(named_server.key_file))
    update.replace("www", 300, "A", value)
    dns.query.tcp(update, "127.0.0.1", port=named_server.port, timeout=3)


def run_latest(change_id: int) -> str:
    execution = Execution.objects.filter(change_id=change_id).order_by("-pk").first()
    return execution_run(execution_id=execution.pk, worker="test-worker")


def drifted_change(author, reviewer, target, named_server) -> int:
    """A change approved through the API whose zone drifted before the worker ran."""
    body = {"target": target.pk, "title": "Move www", "reason": "new load balancer", "items": WWW}
    change = ok(api_client(author).post("/api/v1/changes/", body, format="json"), 201)
    base = f"/api/v1/changes/{change['id']}"
    ok(api_client(author).post(f"{base}/submit/"))
    ok(api_client(reviewer).post(f"{base}/approve/", {"fingerprint": change["fingerprint"]}, format="json"))
    drift_www(named_server, target)
    assert run_latest(change["id"]) == State.DRIFTED
    return change["id"]


def test_a_drifted_change_is_re_planned_approved_and_applied_as_a_second_attempt(
        author, reviewer, fast_target, named_server):
    change_id = drifted_change(author, reviewer, fast_target, named_server)
    base = f"/api/v1/changes/{change_id}"
    # The documented recovery: re-plan against the zone as it is now, submit, approve.
    replanned = ok(api_client(author).post(f"{base}/plan/"))
    ok(api_client(author).post(f"{base}/submit/"))
    approved = ok(api_client(reviewer).post(f"{base}/approve/", {"fingerprint": replanned["fingerprint"]},
                                            format="json"))
    assert approved["state"] == State.APPROVED
    assert run_latest(change_id) == State.APPLIED

    detail = ok(api_client(author).get(f"{base}/"))
    first, second = detail["executions"]
    assert (first["outcome"], second["outcome"]) == ("drifted", "applied")
    assert first["id"] < second["id"] and first["error"].startswith("drift:")
    assert (first["claims"], second["claims"]) == (1, 1)
    assert second["lease_owner"] == "test-worker" and second["fence"] == 1
    assert second["finished_at"] and second["started_at"]
    assert AuditEvent.objects.filter(change_id=change_id, action="change_applied").count() == 1

    # The evidence report: every attempt, and `execution` still the latest one.
    evidence = ok(api_client(author).get(f"{base}/evidence/"))
    assert [(e["id"], e["outcome"]) for e in evidence["executions"]] == [(first["id"], "drifted"),
                                                                          (second["id"], "applied")]
    assert evidence["execution"]["id"] == second["id"] and evidence["execution"]["claims"] == 1
    assert evidence["executions"][0]["checks"] == [] and evidence["executions"][1]["checks"] == evidence["checks"]

    # The admin change page shows both attempts with their outcomes.
    from django.contrib.auth.models import Permission
    from django.test import Client

    author.is_staff = True
    author.save()
    author.user_permissions.add(Permission.objects.get(content_type__app_label="changes",
                                                       codename="view_changerequest"))
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(author)
    page = browser.get(f"/admin/changes/changerequest/{change_id}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Attempts to apply (2)" in html
    panel = html[html.index("Attempts to apply"):html.index("Audit events")]
    assert panel.index("drifted") < panel.index("applied") and "test-worker" in panel


def test_break_glass_on_a_drifted_change_after_re_planning_is_a_new_attempt(
        author, reviewer, make_user, fast_target, named_server):
    on_call = make_user("olga")
    grant(on_call, "emergency", fast_target)
    change_id = drifted_change(author, reviewer, fast_target, named_server)
    base = f"/api/v1/changes/{change_id}"
    # Break glass on the drifted change itself: refused by name, never a 500.
    refused = api_client(on_call).post(f"{base}/emergency/", {"reason": "payments down"}, format="json")
    assert refused.status_code == 409 and refused.json()["code"] == "invalid_state"
    ok(api_client(author).post(f"{base}/plan/"))
    ok(api_client(author).post(f"{base}/submit/"))
    forced = ok(api_client(on_call).post(f"{base}/emergency/", {"reason": "payments down"}, format="json"))
    assert forced["state"] == State.APPROVED and forced["emergency"]
    assert run_latest(change_id) == State.APPLIED
    assert [e["outcome"] for e in ok(api_client(author).get(f"{base}/"))["executions"]] == ["drifted", "applied"]


# Real commits: migrating backwards and forwards runs the schema editor outside a transaction.
@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_running_attempts_the_state_of_their_change(author, reviewer, fast_target):
    """0011: an attempt a worker was running ("running") becomes the phase its change is in."""
    from django.db import connection

    from approvals.policy import change_approve
    from changes.services import change_create, change_submit
    from tests.factories import migrate_to

    change = change_create(actor=author, target=fast_target, title="t", reason="r", items=WWW)
    change = change_submit(actor=author, change=change)
    change = change_approve(actor=reviewer, change=change, fingerprint=change.fingerprint)
    migrate_to(("changes", "0010_notification_outbox"))
    with connection.cursor() as cursor:
        cursor.execute("UPDATE changes_execution SET state = 'running', attempts = 2")
        cursor.execute("UPDATE changes_changerequest SET state = 'verifying'")
    migrate_to()
    execution = Execution.objects.get(change=change)
    assert (execution.state, execution.claims, execution.retries) == (Execution.State.VERIFYING, 2, 0)
