"""The evidence page of one change (issue 15): the answers first, the raw record
folded below, whether the audit chain verifies up to the change, and the change's
ticket reference. Against a real named, through the services and the in-process worker."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from audit.evidence_page import chain_status
from changes.management.commands.flush import _append_only_lifted
from changes.models import AuditEvent, ChangeRequest
from dns_adapters.local_named import free_port
from tests import factories
from tests.factories import api_client, run

pytestmark = [pytest.mark.django_db, pytest.mark.named]
State = ChangeRequest.State


def evidence_page(user, change: ChangeRequest) -> str:
    user.is_staff = True
    user.save()
    user.user_permissions.add(Permission.objects.get(codename="view_changerequest"))
    client = Client()
    client.force_login(user)
    response = client.get(reverse("admin:changes_changerequest_evidence", args=[change.pk]))
    assert response.status_code == 200
    return response.content.decode()


def answers(html: str) -> str:
    """The summary table: what the page leads with, before the folded record."""
    start = html.index('id="answers"')
    assert start < html.index('id="full-record"') < html.index('id="raw-events"')
    return html[start:html.index("</table>", start)]


def test_an_applied_change_leads_with_the_answers(author, reviewer, fast_target):
    change = factories.approved(author, reviewer, fast_target, title="Move www", reason="new load balancer",
                                reference="CHG0012345", comment="looks right")
    assert run(change) == State.APPLIED
    html = evidence_page(author, change)
    top = answers(html)
    assert author.username in top and "new load balancer" in top and "CHG0012345" in top
    assert reviewer.username in top
    separation = top[top.index('id="separation"'):]
    assert separation.split("</td>")[0].count("yes") == 1 and "NO" not in separation.split("</td>")[0]
    assert "- www 300 A 192.0.2.10" in top or "192.0.2.10" in top  # the plan's before
    assert "+ " in top and "192.0.2.99" in top  # and after
    assert "0 failed" in top and "passed" in top
    assert 'id="rollback-summary">none' in top
    last = AuditEvent.objects.filter(change=change).order_by("-seq").first()
    assert f"the chain verifies up to this change: yes (seq {last.seq})" in top
    assert "Print / save as PDF" in html and "window.print()" in html and "@media print" in html
    # The raw events are still there, folded.
    assert "<details id=\"raw-events\">" in html and "change_created" in html


def test_requester_and_approvers_are_compared_over_every_author():
    """The policy refuses such approvals; evidence of older data must still say so."""
    from audit.evidence_page import evidence_summary

    def person(pk: int, name: str) -> dict[str, Any]:
        return {"id": pk, "username": name}

    evidence = {
        "requester": person(1, "alice"), "editors": [person(2, "bob")], "change": {"reason": "r", "state": "applied"},
        "approvals": [{"approver": person(2, "bob")}], "approvals_required": 1, "checks": [], "rollback": None,
        "events": [], "execution": None, "emergency": {"flag": False},
    }
    assert evidence_summary(evidence, [])["separated"] is False
    evidence["editors"] = []
    assert evidence_summary(evidence, [])["separated"] is True
    evidence["approvals"] = []
    assert evidence_summary(evidence, [])["separated"] is False and evidence_summary(evidence, [])["no_approvals"]


def test_a_rolled_back_change_names_the_failed_check(author, reviewer, fast_target):
    dead = {"type": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": 0.5}
    change = factories.approved(author, reviewer, fast_target, factories.upsert("api", "192.0.2.77"),
                                health_checks=[dead])
    assert run(change) == State.ROLLED_BACK
    check_name = AuditEvent.objects.get(change=change, action="change_rolled_back").payload["because"][
        "failed_checks"][0]["name"]
    top = answers(evidence_page(author, change))
    rollback = top[top.index('id="rollback-summary"'):].split("</td>")[0]
    assert State.ROLLED_BACK in rollback and f"because health check {check_name} failed" in rollback
    checks = top[top.index('id="checks-summary"'):].split("</td>")[0]
    assert "1 failed" in checks or "failed: " in checks
    assert check_name in checks


def tamper(seq: int, **columns: Any) -> None:
    """What the database's owner can do: lift the append-only triggers and edit a row."""
    assignments = ", ".join(f"{name} = %s" for name in columns)
    values = [json.dumps(v) if isinstance(v, dict) else v for v in columns.values()]
    with transaction.atomic(), _append_only_lifted(connection), connection.cursor() as cursor:
        cursor.execute(f"UPDATE changes_auditevent SET {assignments} WHERE seq = %s", [*values, seq])


# Real commits: PostgreSQL refuses the ALTER TABLE that lifts the triggers while the
# test's own transaction has pending (deferred foreign-key) trigger events.
@pytest.mark.django_db(transaction=True)
def test_the_chain_line_says_no_after_an_event_row_is_tampered(author, reviewer, dns_target):
    change = factories.submitted(author, dns_target, reason="new load balancer")
    events = list(AuditEvent.objects.filter(change=change).order_by("seq"))
    status = chain_status(events[0].seq, events[-1].seq)
    assert status.ok and status.through_seq == events[-1].seq and status.checked == events[-1].seq
    assert "yes (seq" in answers(evidence_page(author, change))

    tamper(events[0].seq, actor_username="mallory")
    status = chain_status(events[0].seq, events[-1].seq)
    assert not status.ok and str(events[0].seq) in status.problem
    top = answers(evidence_page(author, change))
    assert "the chain verifies up to this change: NO" in top


def test_the_chain_walk_starts_at_the_last_signed_checkpoint(author, dns_target, settings, tmp_path):
    from audit.chain import audit_checkpoint_create, audit_signing_key_generate

    key = tmp_path / "signing.pem"
    audit_signing_key_generate(key)
    settings.CHANGEGATE_AUDIT_SIGNING_KEY_FILE = str(key)
    checkpoint = audit_checkpoint_create()
    change = factories.submitted(author, dns_target)
    seqs = list(AuditEvent.objects.filter(change=change).values_list("seq", flat=True).order_by("seq"))
    status = chain_status(seqs[0], seqs[-1])
    assert status.ok and status.anchor_seq == checkpoint.seq
    assert status.checked == seqs[-1] - checkpoint.seq  # only the events after it were re-hashed


def test_the_reference_round_trips_through_the_api_and_the_audit_log(author, dns_target):
    client = api_client(author)
    created = client.post("/api/v1/changes/", {"target": dns_target.pk, "title": "t", "reason": "r",
                                                "items": factories.WWW, "reference": "CHG0012345"}, format="json")
    assert created.status_code == 201, created.content
    change_id = created.json()["id"]
    assert client.get(f"/api/v1/changes/{change_id}/").json()["reference"] == "CHG0012345"
    assert AuditEvent.objects.get(change_id=change_id, action="change_created").payload["reference"] == "CHG0012345"

    edited = client.patch(f"/api/v1/changes/{change_id}/", {"reference": "INC-42 / CHG0012346"}, format="json")
    assert edited.status_code == 200, edited.content
    assert edited.json()["reference"] == "INC-42 / CHG0012346"
    assert AuditEvent.objects.get(change_id=change_id, action="change_edited").payload["reference"] == \
        "INC-42 / CHG0012346"
    evidence = client.get(f"/api/v1/changes/{change_id}/evidence/").json()
    assert evidence["change"]["reference"] == "INC-42 / CHG0012346"

    for bad in ("CHG\n1", "CHG\x07", "x" * 101):
        refused = client.patch(f"/api/v1/changes/{change_id}/", {"reference": bad}, format="json")
        assert refused.status_code == 400 and "reference" in refused.content.decode(), refused.content
    assert ChangeRequest.objects.get(pk=change_id).reference == "INC-42 / CHG0012346"
