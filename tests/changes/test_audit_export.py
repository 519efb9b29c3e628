"""Audit export (API, admin action, management command) and the evidence report of
one change, against a real named. The completeness test drives changes to every
end state in-process (`execution_run`, bake 0) and reads each story back from the
JSON Lines export, the CSV export and the evidence report."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
from collections import defaultdict
from typing import Any

import dns.query
import dns.tsigkeyring
import dns.update
import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from approvals.policy import change_emergency, change_reject, emergency_review
from audit.export import csv_columns
from changes.models import AuditEvent, ChangeRequest, Target, canonical_event
from changes.services import change_cancel, change_create, target_register
from dns_adapters.local_named import free_port
from pipeline.execution import MAX_TRANSIENT_ATTEMPTS
from tests import factories
from tests.conftest import grant
from tests.factories import WWW, api_client, run

pytestmark = [pytest.mark.django_db, pytest.mark.named]
State = ChangeRequest.State
EXPORT = "/api/v1/audit/export/"


def a_record(name: str, address: str, ttl: int = 300) -> list[dict[str, Any]]:
    return [{"op": "upsert", "name": name, "type": "A", "ttl": ttl, "records": [address]}]


API = a_record("api", "192.0.2.21")


def body(response) -> bytes:
    assert response.streaming, "the export must stream"
    return b"".join(response.streaming_content)


def jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode("ascii").splitlines()]


def csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def events_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The event lines of a JSON Lines export (not its withheld links or checkpoints)."""
    return [r for r in records if r["type"] == "event"]


def csv_events(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rows of a CSV export that are events (a withheld event's row has no created_at)."""
    return [r for r in rows if r["created_at"]]


def export(user, **params: Any) -> bytes:
    response = api_client(user).get(EXPORT, params)
    assert response.status_code == 200, response.content
    return body(response)


# The title, reason and comment the evidence and export tests look for.
WORDS = {"title": "Move www", "reason": "new load balancer"}


def pending(author, target, items: list[dict[str, Any]] = WWW, **kwargs: Any) -> ChangeRequest:
    return factories.submitted(author, target, items, **WORDS, **kwargs)


def approved(author, reviewer, target, items: list[dict[str, Any]] = WWW, **kwargs: Any) -> ChangeRequest:
    return factories.approved(author, reviewer, target, items, comment="looks right", **WORDS, **kwargs)


@pytest.fixture
def root(make_user):
    return make_user("root", is_staff=True, is_superuser=True)


# ---------------------------------------------------------------------------
# The export


def test_auditor_exports_json_lines_streamed_with_hashes_that_recompute(author, auditor, root, dns_target):
    change = pending(author, dns_target)
    response = api_client(auditor).get(EXPORT, {"format": "jsonl"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    assert response["Content-Disposition"].startswith('attachment; filename="changegate-audit-start-')
    assert response["Content-Disposition"].endswith('.jsonl"')
    data = body(response)
    records = jsonl(data)
    assert [r["action"] for r in events_of(records) if r["change_id"] == change.pk] == [
        "change_created", "change_submitted"]
    for line, record in zip(data.decode().splitlines(), records, strict=True):
        assert line == json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        if record["type"] == "withheld":  # an event without a target: the link alone
            assert set(record) == {"type", "seq", "prev_hash", "hash"}
            continue
        assert record["type"] == "event"
        fields = {k: v for k, v in record.items() if k not in ("type", "hash")}
        assert hashlib.sha256(canonical_event(fields)).hexdigest() == record["hash"]
    assert [r["seq"] for r in records] == sorted(r["seq"] for r in records)
    # Unfiltered and unlimited, the export is one contiguous piece of the chain.
    everything = jsonl(export(root))
    assert everything[-1]["seq"] - everything[0]["seq"] + 1 == len(everything)
    for before, after in itertools.pairwise(everything):
        assert after["prev_hash"] == before["hash"] and after["seq"] == before["seq"] + 1


def test_auditor_exports_csv_one_row_per_event_with_the_payload_as_json(author, auditor, dns_target):
    change = pending(author, dns_target)
    response = api_client(auditor).get(EXPORT, {"format": "csv"})
    assert response.status_code == 200 and response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].endswith('.csv"')
    rows = csv_rows(body(response))
    records = jsonl(export(auditor))
    assert list(rows[0]) == csv_columns()
    assert {"seq", "created_at", "actor_username", "action", "payload", "prev_hash", "hash"} <= set(rows[0])
    assert [row["hash"] for row in rows] == [r["hash"] for r in records]
    created = next(row for row in rows if row["action"] == "change_created" and row["change_id"] == str(change.pk))
    assert json.loads(created["payload"])["reason"] == "new load balancer"
    assert created["actor_username"] == author.username


def test_spreadsheet_formulas_in_csv_cells_are_neutralized(author, auditor, dns_target):
    api = api_client(author)
    api.credentials(HTTP_USER_AGENT="=HYPERLINK(\"http://evil.example\")")
    created = api.post("/api/v1/changes/", {"target": dns_target.pk, "title": "t", "reason": "r", "items": WWW},
                       format="json")
    assert created.status_code == 201
    (row,) = [r for r in csv_rows(export(auditor, format="csv")) if r["action"] == "change_created"]
    assert row["user_agent"] == "'=HYPERLINK(\"http://evil.example\")"
    (record,) = [r for r in events_of(jsonl(export(auditor))) if r["action"] == "change_created"]
    assert record["user_agent"] == "=HYPERLINK(\"http://evil.example\")"  # JSON Lines stays exact


def test_checkpoints_follow_their_event_and_a_time_range_export_verifies_offline(
        author, reviewer, root, dns_target, tmp_path, settings):
    from audit.chain import audit_signing_key_generate
    from changegate_audit.verify import verify_bytes

    audit_signing_key_generate(tmp_path / "signing.pem")
    settings.CHANGEGATE_AUDIT_SIGNING_KEY_FILE = str(tmp_path / "signing.pem")
    settings.CHANGEGATE_AUDIT_CHECKPOINT_EVERY = 3
    for address in ("192.0.2.51", "192.0.2.52", "192.0.2.53"):
        approved(author, reviewer, dns_target, a_record("www", address))
    records = jsonl(export(root))
    checkpoints = [(i, r) for i, r in enumerate(records) if r["type"] == "checkpoint"]
    assert checkpoints and all(r["seq"] % 3 == 0 for _, r in checkpoints)
    for i, checkpoint in checkpoints:
        assert records[i - 1]["type"] == "event" and records[i - 1]["seq"] == checkpoint["seq"]
        assert checkpoint["head_hash"] == records[i - 1]["hash"]
    full = verify_bytes(export(root), from_start=True)
    assert full.ok, full.report()
    assert full.checkpoints_verified == len(checkpoints)
    events = [r for r in records if r["type"] == "event"]
    middle = events[len(events) // 2]["created_at"]
    part = verify_bytes(export(root, since=middle))
    assert part.ok and part.first_seq == events[len(events) // 2]["seq"], part.report()
    # A filtered export verifies too: the events it leaves out stand as their links (issue 15).
    chosen = verify_bytes(export(root, actor=reviewer.username), from_start=True)
    assert chosen.ok and chosen.events == len(events), chosen.report()
    assert chosen.withheld == len([r for r in events if r["actor_username"] != reviewer.username])
    assert chosen.checkpoints_verified == len(checkpoints)


@pytest.mark.parametrize("who", ["author", "reviewer", "outsider", "staff"])
def test_whoever_may_export_no_target_is_refused(who, request, dns_target):
    response = api_client(request.getfixturevalue(who)).get(EXPORT, {"format": "csv"})
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"


def test_anonymous_is_asked_to_authenticate(dns_target):
    response = APIClient().get(EXPORT, {"format": "csv"})
    assert response.status_code == 401 and response.json()["code"] == "not_authenticated"


def test_auditor_of_one_target_sees_none_of_another_targets_events(author, auditor, root, dns_target, other_target,
                                                                   olivia):
    ours, theirs = pending(author, dns_target), pending(olivia, other_target)
    mine = events_of(jsonl(export(auditor)))
    assert {r["target_id"] for r in mine} == {dns_target.pk}
    assert ours.pk in {r["change_id"] for r in mine} and theirs.pk not in {r["change_id"] for r in mine}
    assert theirs.pk not in {int(r["change_id"]) for r in csv_rows(export(auditor, format="csv")) if r["change_id"]}
    everything = jsonl(export(root))
    assert {dns_target.pk, other_target.pk} <= {r["target_id"] for r in everything}
    assert [r["seq"] for r in everything] == list(range(everything[0]["seq"], everything[-1]["seq"] + 1))
    # Naming the other target is no way round it.
    refused = api_client(auditor).get(EXPORT, {"target": other_target.name})
    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "target"
    refused = api_client(auditor).get(EXPORT, {"change": theirs.pk})
    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "change"


def test_filters_by_time_target_actor_and_change(author, reviewer, auditor, root, dns_target, other_target, olivia):
    first = pending(author, dns_target)
    approved_change = approved(author, reviewer, dns_target, items=API)
    pending(olivia, other_target)
    events = list(AuditEvent.objects.order_by("seq"))

    by_target_id = jsonl(export(root, target=dns_target.pk))
    assert by_target_id == jsonl(export(root, target=dns_target.name))
    assert {r["target_id"] for r in events_of(by_target_id)} == {dns_target.pk}
    # Every event of the range holds its place: the rest as withheld links.
    assert [r["seq"] for r in by_target_id] == [e.seq for e in events]

    by_actor = events_of(jsonl(export(auditor, actor=reviewer.username)))
    assert {r["action"] for r in by_actor} == {"approval_given", "change_approved"}
    assert {r["change_id"] for r in by_actor} == {approved_change.pk}

    by_change = events_of(jsonl(export(auditor, change=first.pk)))
    assert [r["action"] for r in by_change] == ["change_created", "change_submitted"]

    middle = events[len(events) // 2]
    since = jsonl(export(root, since=middle.created_at.isoformat()))
    until = jsonl(export(root, until=middle.created_at.isoformat()))
    assert since[0]["created_at"] >= middle.created_at.isoformat() > until[-1]["created_at"]
    assert len(since) + len(until) == len(events)
    window = api_client(root).get(EXPORT, {"since": "2020-01-01", "until": "2020-01-02T00:00:00Z"})
    assert window["Content-Disposition"] == (
        'attachment; filename="changegate-audit-20200101T000000Z-20200102T000000Z.jsonl"')
    assert body(window) == b""
    # An offset whose "+" a shell user did not escape arrives as a space.
    assert len(jsonl(export(root, since="2020-01-01T00:00:00 02:00"))) == len(events)


@pytest.mark.parametrize(("params", "field"), [
    ({"format": "xml"}, "format"),
    ({"since": "yesterday"}, "since"),
    ({"until": "2025-13-01"}, "until"),
    ({"since": "2025-02-01", "until": "2025-01-01"}, "until"),
    ({"target": "no-such-zone.test"}, "target"),
    ({"target": "99999999"}, "target"),
    ({"actor": "nobody-at-all"}, "actor"),
    ({"change": "abc"}, "change"),
    ({"change": "99999999"}, "change"),
    ({"target": "a\x00b"}, "target"),
])
def test_bad_parameters_answer_400_naming_the_field(params, field, auditor, dns_target):
    response = api_client(auditor).get(EXPORT, params)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid"
    assert [error["field"] for error in response.json()["errors"]] == [field]


def test_the_command_writes_the_same_bytes_as_the_api(author, reviewer, root, auditor, dns_target, tmp_path):
    change = approved(author, reviewer, dns_target)
    for fmt in ("jsonl", "csv"):
        for api_user, filters in ((root, {}), (auditor, {"target": dns_target.name}), (auditor, {"change": change.pk}),
                                  (root, {"actor": reviewer.username, "since": "2000-01-01"})):
            out = tmp_path / f"export.{fmt}"
            call_command("audit_export", "--format", fmt, "--output", str(out),
                         *[arg for name, value in filters.items() for arg in (f"--{name}", str(value))],
                         stderr=io.StringIO())
            assert out.read_bytes() == export(api_user, format=fmt, **filters), (fmt, filters)
    printed = io.StringIO()
    call_command("audit_export", stdout=printed)
    assert printed.getvalue().encode() == export(root)
    with pytest.raises(CommandError, match="since"):
        call_command("audit_export", "--since", "last tuesday", stdout=io.StringIO())


def test_the_admin_action_exports_the_selection_in_the_same_line_format(author, auditor, root, dns_target,
                                                                         other_target, olivia, client):
    pending(author, dns_target)
    pending(olivia, other_target)
    auditor.is_staff = True
    auditor.save()
    auditor.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    client.force_login(auditor)
    selected = list(AuditEvent.objects.order_by("seq").values_list("pk", flat=True))
    response = client.post(reverse("admin:changes_auditevent_changelist"), {
        "action": "export_jsonl", "_selected_action": selected, "index": "0"})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Disposition"].startswith('attachment; filename="changegate-audit-')
    # The other target's events were selectable by id, but are not the auditor's to export: from
    # the first to the last event of the selection the auditor may read, the API export's lines.
    admin_lines = jsonl(b"".join(response.streaming_content))
    seqs = [r["seq"] for r in events_of(admin_lines)]
    assert {r["target_id"] for r in events_of(admin_lines)} == {dns_target.pk}
    assert admin_lines == [r for r in jsonl(export(auditor)) if seqs[0] <= r["seq"] <= seqs[-1]]

    client.force_login(root)
    response = client.post(reverse("admin:changes_auditevent_changelist"), {
        "action": "export_jsonl", "_selected_action": selected, "select_across": "1", "index": "0"})
    assert b"".join(response.streaming_content) == export(root)


def test_the_admin_offers_no_export_to_whoever_may_export_nothing(author, dns_target, client):
    author.is_staff = True
    author.save()
    author.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    pending(author, dns_target)
    client.force_login(author)
    page = client.get(reverse("admin:changes_auditevent_changelist"))
    assert page.status_code == 200 and b"export_jsonl" not in page.content


# ---------------------------------------------------------------------------
# Every end state, told completely


@pytest.fixture
def down_target(own_named, staff, author, reviewer, auditor) -> Target:
    target = target_register(actor=staff, name="down.test", bake_seconds=0, bake_max_seconds=0, config={
        "zone": "down.test", "primary": own_named.primary, "tsig_key_file": str(own_named.key_file), "timeout": 1})
    grant(author, "engineer", target)
    grant(reviewer, "reviewer", target)
    grant(auditor, "auditor", target)
    return target


def outside_update(named_server, target: Target) -> None:
    update = dns.update.UpdateMessage(target.name, keyring=dns.tsigkeyring.from_file(named_server.key_file))
    update.replace("www", 300, "A", "203.0.113.50")
    dns.query.tcp(update, "127.0.0.1", port=named_server.port, timeout=3)


def every_end_state(*, author, reviewer, make_user, target: Target, down: Target, own_named,
                    named_server) -> dict[str, ChangeRequest]:
    """One change per end state, set up through the services and the in-process worker."""
    stories: dict[str, ChangeRequest] = {}

    stories["applied"] = approved(author, reviewer, target)
    assert run(stories["applied"]) == State.APPLIED

    dead = {"type": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": 0.5}
    stories["rolled_back"] = approved(author, reviewer, target, a_record("api", "192.0.2.77"), health_checks=[dead])
    assert run(stories["rolled_back"]) == State.ROLLED_BACK

    stories["drifted"] = approved(author, reviewer, target, a_record("www", "192.0.2.55"))
    outside_update(named_server, target)
    assert run(stories["drifted"]) == State.DRIFTED

    stories["rejected"] = change_reject(actor=reviewer, change=pending(author, target, a_record("new", "192.0.2.30")),
                                        comment="wrong address")

    draft = change_create(actor=author, target=target, title="Move api", reason="not needed after all", items=API)
    stories["cancelled"] = change_cancel(actor=author, change=draft, comment="changed my mind")

    on_call = make_user("erin")
    grant(on_call, "emergency", target)
    grant(on_call, "engineer", target)
    forced = change_create(actor=on_call, target=target, title="Mail down", reason="MX points nowhere",
                           items=a_record("mail", "192.0.2.26", ttl=60))
    forced = change_emergency(actor=on_call, change=forced, reason="card payments failing since 10:02")
    assert run(forced) == State.APPLIED
    stories["emergency"] = emergency_review(actor=reviewer, change=ChangeRequest.objects.get(pk=forced.pk),
                                            comment="checked the MX, fine")

    stories["apply_failed"] = approved(author, reviewer, down)
    port = own_named.port
    own_named.stop(cleanup=False)
    try:
        results = [run(stories["apply_failed"]) for _ in range(MAX_TRANSIENT_ATTEMPTS)]
    finally:
        own_named.start(port=port)
    assert results[-1] == State.APPLY_FAILED
    return {name: ChangeRequest.objects.get(pk=change.pk) for name, change in stories.items()}


EXECUTED = {"applied", "rolled_back", "drifted", "emergency", "apply_failed"}
CHECKED = {"applied", "rolled_back", "emergency"}  # the bake ran
APPROVED_BY_REVIEWER = {"applied", "rolled_back", "drifted", "apply_failed"}


def assert_story_complete(name: str, change: ChangeRequest, records: list[dict[str, Any]], *, author, reviewer) -> None:
    """What an auditor must read from the log alone (PCI DSS 6.5.1/10.2.2, SOC 2 CC8.1)."""
    by_action = defaultdict(list)
    for record in records:
        assert record["hash"] and record["prev_hash"] and record["seq"], (name, record)
        by_action[record["action"]].append(record)
    (created,) = by_action["change_created"]
    requester = "erin" if name == "emergency" else author.username
    assert created["actor_username"] == requester and created["actor_id"], name
    assert created["payload"]["reason"] == change.reason and created["payload"]["title"] == change.title
    assert created["payload"]["plan"]["steps"], name  # the exact plan, before/after per step
    assert {"before", "after"} <= set(created["payload"]["plan"]["steps"][0])
    fingerprints = {r["payload"].get("fingerprint") for r in records} - {None}
    assert change.fingerprint in fingerprints, name
    assert created["target_id"] == change.target_id
    if name in APPROVED_BY_REVIEWER:
        (approval,) = by_action["approval_given"]
        assert approval["actor_username"] == reviewer.username
        assert approval["payload"]["fingerprint"] == change.fingerprint and approval["created_at"]
    if name == "rejected":
        (rejection,) = by_action["change_rejected"]
        assert rejection["actor_username"] == reviewer.username and rejection["payload"]["comment"] == "wrong address"
    if name == "cancelled":
        (cancel,) = by_action["change_cancelled"]
        assert cancel["actor_username"] == author.username
        # issue 9: a cancellation carries a reason (earlier events: a comment)
        assert cancel["payload"].get("reason", cancel["payload"].get("comment")) == "changed my mind"
    if name == "emergency":
        (forced,) = by_action["change_emergency_approved"]
        assert forced["payload"]["reason"] == "card payments failing since 10:02"
        (review,) = by_action["emergency_reviewed"]
        assert review["actor_username"] == reviewer.username and review["payload"]["comment"] == "checked the MX, fine"
    if name in EXECUTED:
        worked = [r for r in records if r["payload"].get("worker")]
        assert worked and {r["payload"]["worker"] for r in worked} == {"test-worker"}, name
        last = [r for r in records if r["payload"].get("to")][-1]
        assert last["payload"]["to"] == change.state == name.replace("emergency", "applied"), name
    checks = [result for r in by_action["checks_round"] for result in r["payload"]["results"]]
    if name in CHECKED:
        assert checks and all({"name", "kind", "ok", "detail"} <= set(c) for c in checks), name
        assert any(c["kind"] == "verify" and c["ok"] for c in checks), name
    else:
        assert not checks, name
    if name == "rolled_back":
        assert any(c["kind"] == "tcp" and not c["ok"] for c in checks)
        (started,) = by_action["rollback_started"]
        assert started["payload"]["failed_checks"]
        (done,) = by_action["change_rolled_back"]
        assert done["payload"]["to"] == State.ROLLED_BACK and done["payload"]["result"]
    if name == "applied":
        (applied,) = by_action["change_applied"]
        assert applied["payload"]["result"]["applied"] is True  # the adapter's response
    if name == "apply_failed":
        (failed,) = by_action["apply_failed"]
        assert failed["payload"]["error"]


def from_csv(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row back into record types (ids as int, payload parsed)."""
    record: dict[str, Any] = dict(row)
    for key in ("seq", "actor_id", "target_id", "change_id"):
        record[key] = int(row[key]) if row[key] else None
    record["payload"] = json.loads(row["payload"])
    return record


def test_every_end_state_is_fully_told_in_json_lines_csv_and_evidence(
        author, reviewer, auditor, make_user, fast_target, down_target, own_named, named_server, client):
    stories = every_end_state(author=author, reviewer=reviewer, make_user=make_user, target=fast_target,
                              down=down_target, own_named=own_named, named_server=named_server)
    assert {c.state for c in stories.values()} == {
        State.APPLIED, State.ROLLED_BACK, State.DRIFTED, State.REJECTED, State.CANCELLED, State.APPLY_FAILED}

    jsonl_data, csv_data = export(auditor), export(auditor, format="csv")
    exports = {
        "jsonl": events_of(jsonl(jsonl_data)),
        "csv": [from_csv(row) for row in csv_events(csv_rows(csv_data))],
    }
    assert [r["hash"] for r in exports["jsonl"]] == [r["hash"] for r in exports["csv"]]
    for records in exports.values():
        for name, change in stories.items():
            mine = [r for r in records if r["change_id"] == change.pk]
            assert_story_complete(name, change, mine, author=author, reviewer=reviewer)

    from drf_spectacular.generators import SchemaGenerator

    from tests.changes.test_schema import check

    schema = SchemaGenerator().get_schema(request=None, public=True)
    secrets = [named_server.secret, own_named.secret]
    pages = [jsonl_data.decode(), csv_data.decode()]
    for name, change in stories.items():
        response = api_client(auditor).get(f"/api/v1/changes/{change.pk}/evidence/")
        assert response.status_code == 200
        evidence = response.json()
        check(schema, "Evidence", evidence)
        assert_evidence_complete(name, change, evidence, author=author, reviewer=reviewer)
        # The report's events are the export's lines for this change.
        assert evidence["events"] == [r for r in events_of(jsonl(jsonl_data)) if r["change_id"] == change.pk]
        pages.append(response.content.decode())
    auditor.is_staff = True
    auditor.save()
    auditor.user_permissions.add(Permission.objects.get(codename="view_changerequest"))
    client.force_login(auditor)
    for change in stories.values():
        page = client.get(reverse("admin:changes_changerequest_evidence", args=[change.pk]))
        assert page.status_code == 200
        pages.append(page.content.decode())
    for text in pages:
        for secret in secrets:
            assert secret not in text


def assert_evidence_complete(name: str, change: ChangeRequest, evidence: dict[str, Any], *, author, reviewer) -> None:
    requester = "erin" if name == "emergency" else author.username
    assert evidence["requester"]["username"] == requester and evidence["requester"]["id"]
    assert evidence["change"]["reason"] == change.reason and evidence["change"]["title"] == change.title
    assert evidence["change"]["state"] == change.state
    assert evidence["target"]["id"] == change.target_id
    assert evidence["fingerprint"] == change.fingerprint and evidence["plan"]["steps"]
    assert evidence["items"] == change.items
    if name in APPROVED_BY_REVIEWER:
        (approval,) = evidence["approvals"]
        assert approval["approver"]["username"] == reviewer.username
        assert approval["fingerprint"] == change.fingerprint and approval["created_at"]
        assert approval["valid"] is (name != "drifted")
        if name == "drifted":
            assert "drifted" in approval["invalidated_reason"]
    if name == "rejected":
        (rejection,) = evidence["rejections"]
        assert rejection["by"]["username"] == reviewer.username and rejection["comment"] == "wrong address"
    if name == "cancelled":
        assert evidence["cancellations"][0]["comment"] == "changed my mind"
    assert evidence["emergency"]["flag"] is (name == "emergency")
    if name == "emergency":
        assert evidence["emergency"]["by"]["username"] == "erin"
        assert evidence["emergency"]["reason"] == "card payments failing since 10:02"
        assert evidence["emergency"]["reviewed_by"]["username"] == reviewer.username
        assert evidence["emergency"]["reviewed_at"] and evidence["emergency"]["review_comment"]
    execution = evidence["execution"]
    if name in EXECUTED:
        assert execution["worker"] == "test-worker" and execution["started_at"] and execution["finished_at"]
        assert execution["outcome"] == change.state and execution["log"]
    else:
        assert execution is None
    if name in CHECKED:
        assert evidence["checks"] and all(c["at"] and c["name"] for c in evidence["checks"])
    else:
        assert evidence["checks"] == []
    if name == "applied":
        assert execution["apply_result"]["applied"] is True
    if name == "rolled_back":
        assert evidence["rollback"]["outcome"] == State.ROLLED_BACK and evidence["rollback"]["failed_checks"]
        assert evidence["rollback"]["result"] == execution["rollback_result"] and execution["rollback_result"]
        assert any(not c["ok"] and c["kind"] == "tcp" for c in evidence["checks"])
    else:
        assert evidence["rollback"] is None
    if name == "apply_failed":
        assert execution["error"]
    assert [e["seq"] for e in evidence["events"]] == sorted(e["seq"] for e in evidence["events"])
    assert all(e["hash"] and e["prev_hash"] for e in evidence["events"])


# ---------------------------------------------------------------------------
# Evidence: access and escaping


def test_evidence_is_for_whoever_may_see_the_change(author, reviewer, auditor, outsider, dns_target):
    change = pending(author, dns_target)
    for user in (author, reviewer, auditor):
        assert api_client(user).get(f"/api/v1/changes/{change.pk}/evidence/").status_code == 200
    assert api_client(outsider).get(f"/api/v1/changes/{change.pk}/evidence/").status_code == 404


def test_the_printable_evidence_page_escapes_everything(author, dns_target, client):
    change = change_create(actor=author, target=dns_target, title="<script>alert(1)</script>",
                           reason="<img src=x onerror=alert(2)>", items=WWW)
    author.is_staff = True
    author.save()
    author.user_permissions.add(Permission.objects.get(codename="view_changerequest"))
    client.force_login(author)
    detail = client.get(reverse("admin:changes_changerequest_change", args=[change.pk])).content.decode()
    url = reverse("admin:changes_changerequest_evidence", args=[change.pk])
    assert f'href="{url}"' in detail
    page = client.get(url).content.decode()
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and change.fingerprint in page


def test_the_printable_evidence_page_is_404_for_a_change_you_may_not_see(outsider, author, dns_target, client):
    change = pending(author, dns_target)
    outsider.is_staff = True
    outsider.save()
    outsider.user_permissions.add(Permission.objects.get(codename="view_changerequest"))
    client.force_login(outsider)
    assert client.get(reverse("admin:changes_changerequest_evidence", args=[change.pk])).status_code == 404


def test_spliced_line_is_byte_identical_to_the_encoded_record(make_user):
    """The fast path (stored canonical text) and the slow path (decode, encode)
    give the same line for awkward payloads."""
    from django.db import transaction

    from audit.chain import RequestOrigin, audit_record
    from audit.export import dumps_line, spliced_event_line
    from changes.models import AuditEvent

    user = make_user('quoted"name')
    payloads = [
        {},
        {"user_agent": ',"user_agent":"x"', "origin": ',"origin":"y"', "nested": {"type": "event", "hash": "h"}},
        {"text": 'ünïcødé \u2028 " \\ \n', "n": [1, 2.5, None, True], "big": 10**20},
    ]
    with transaction.atomic():
        for payload in payloads:
            audit_record(actor=user, origin=RequestOrigin(kind="api", ip="::1", user_agent='ua "q" ,"origin":'),
                         action="probe", payload=payload)
    for event in AuditEvent.objects.filter(action="probe"):
        from audit.chain import event_record

        assert spliced_event_line(event.canonical_text, event.hash) == dumps_line(event_record(event))


def test_csv_from_stored_text_has_the_cells_of_the_decoded_rows(make_user):
    """CSV rows are built from the stored hashed text; every cell must be what the
    decoded event gives."""
    import csv
    import io

    from django.db import transaction

    from audit.chain import RequestOrigin, audit_record, event_record
    from audit.export import _cell, csv_columns, events_csv
    from changes.models import AuditEvent

    with transaction.atomic():
        for n, payload in enumerate(({"a": "=cmd"}, {"ü": [1, 2.5, None]})):
            audit_record(actor=make_user(f"user{n}"), origin=RequestOrigin(kind="cli", user_agent="@ua"),
                         action="+probe", payload=payload)
    rows = list(csv.reader(io.StringIO(b"".join(events_csv(AuditEvent.objects.all())).decode())))
    columns = csv_columns()
    assert rows[0] == columns
    for event, row in zip(AuditEvent.objects.order_by("seq"), rows[1:], strict=True):
        assert event.canonical_text is not None
        record = event_record(event)
        assert row == [_cell(record.get(column)) for column in columns]


# ---------------------------------------------------------------------------
# Issue 9, hole 10: columns edited behind the hash. The database owner lifts the
# append-only triggers and edits only the columns of an event (not its stored
# canonical text, not its hash): the chain still verifies, so whatever shows the
# columns shows forged values under a genuine hash.


def edit_columns_only(seq: int, **columns: Any) -> None:
    from django.db import connection, transaction

    from changes.management.commands.flush import _append_only_lifted

    assignments = ", ".join(f"{name} = %s" for name in columns)
    values = [json.dumps(v) if isinstance(v, dict) else v for v in columns.values()]
    with transaction.atomic(), _append_only_lifted(connection), connection.cursor() as cursor:
        cursor.execute(f"UPDATE changes_auditevent SET {assignments} WHERE seq = %s", [*values, seq])


# Real commits: lifting the triggers is an ALTER TABLE, which PostgreSQL refuses while the
# test's own transaction has pending (deferred foreign-key) trigger events.
@pytest.mark.django_db(transaction=True)
def test_columns_edited_behind_the_hash_are_flagged_on_the_evidence_page_and_fail_the_export(
        author, reviewer, auditor, root, dns_target, tmp_path):
    import subprocess
    import sys

    change = change_reject(actor=reviewer, change=pending(author, dns_target), comment="wrong address")
    rejected = AuditEvent.objects.get(change=change, action="change_rejected")
    genuine = jsonl(export(root))
    edit_columns_only(rejected.seq, actor_username="mallory", payload={"comment": "approved, looks fine"})
    assert AuditEvent.objects.get(seq=rejected.seq).actor_username == "mallory"  # the columns now lie

    # The admin evidence page shows the hashed record and says the row was tampered with.
    client = Client(enforce_csrf_checks=True)
    client.force_login(root)
    page = client.get(reverse("admin:changes_changerequest_evidence", args=[change.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="tampered"' in html and f"{rejected.seq} (actor_username, payload)" in html
    assert "mallory" not in html and "approved, looks fine" not in html
    assert "wrong address" in html and reviewer.username in html

    # The evidence JSON: the hashed records (still the export's lines), and the flag.
    evidence = api_client(auditor).get(f"/api/v1/changes/{change.pk}/evidence/").json()
    assert evidence["tampered"] is True
    assert evidence["tampered_events"] == [{"seq": rejected.seq, "fields": ["actor_username", "payload"]}]
    assert evidence["events"] == [r for r in genuine if r["change_id"] == change.pk]
    assert evidence["rejections"][0]["by"]["username"] == reviewer.username
    assert evidence["rejections"][0]["comment"] == "wrong address"

    # The JSON Lines export keeps the hashed record and adds a column_mismatch line:
    # the offline verifier fails on it.
    data = export(root)
    lines = jsonl(data)
    assert [r for r in lines if r["type"] == "event"] == genuine
    assert {"type": "column_mismatch", "seq": rejected.seq, "fields": ["actor_username", "payload"]} in lines
    path = tmp_path / "export.jsonl"
    path.write_bytes(data)
    done = subprocess.run([sys.executable, "-m", "changegate_audit.verify", "verify", str(path)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith(f"FAIL seq {rejected.seq}: tampered"), done.stdout
    with pytest.raises(CommandError, match=f"seq {rejected.seq}: tampered"):
        call_command("audit_verify", stdout=io.StringIO())

    # CSV: the hashed values, and the disagreeing columns named in the last cell.
    rows = csv_rows(export(root, format="csv"))
    row = next(r for r in rows if r["seq"] == str(rejected.seq))
    assert row["actor_username"] == reviewer.username and "wrong address" in row["payload"]
    assert row["column_mismatch"] == "actor_username payload"
    assert {r["column_mismatch"] for r in rows if r["seq"] != str(rejected.seq)} == {""}


def test_an_intact_log_has_no_flags(author, reviewer, auditor, root, dns_target):
    change = change_reject(actor=reviewer, change=pending(author, dns_target), comment="wrong address")
    evidence = api_client(auditor).get(f"/api/v1/changes/{change.pk}/evidence/").json()
    assert evidence["tampered"] is False and evidence["tampered_events"] == []
    assert not [r for r in jsonl(export(root)) if r["type"] != "event"]
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    assert out.getvalue().startswith("OK ")
