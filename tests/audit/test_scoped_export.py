"""Exports that verify however they are cut (issue 15): an auditor scoped to some
targets, an export filtered by target/actor/change/time, the admin's filtered
selection and `manage.py audit_export` with a filter all write, for every event
of their range they leave out, a `withheld` link line (seq, prev_hash, hash; no
content), so `changegate-audit verify` accepts the file and counts the withheld
events. No named server: the chain is written with `audit_record` directly.
SQLite and PostgreSQL (DATABASE_URL)."""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit.chain import RequestOrigin, audit_record
from audit.export import csv_columns, events_csv, events_jsonl, export_query, export_stream
from audit.selectors import targets_exportable
from changegate_audit.verify import verify_bytes
from changes.models import AuditEvent, Target
from tests.conftest import grant
from tests.factories import api_client

pytestmark = pytest.mark.django_db
EXPORT = "/api/v1/audit/export/"
SECRET = "s3cr3t-hidden-words"  # in every payload of the hidden target's events


def jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode("ascii").splitlines()]


def body(response) -> bytes:
    assert response.status_code == 200, response.content
    assert response.streaming
    return b"".join(response.streaming_content)


def write_events(rows: list[tuple[Any, str, Target | None, dict[str, Any]]]) -> None:
    with transaction.atomic():
        for actor, action, target, payload in rows:
            audit_record(actor=actor, origin=RequestOrigin(kind="api", ip="192.0.2.9", user_agent="ua-" + action),
                         action=action, target=target, payload=payload)


@pytest.fixture
def two_targets(make_user, auditor):
    """Target "ours.example" (the auditor's) and "hidden.example" (not), each with
    events by its own actor, action and payload words."""
    ours = Target.objects.create(name="ours.example", config={"zone": "ours.example"})
    hidden = Target.objects.create(name="hidden.example", config={"zone": "hidden.example"})
    grant(auditor, "auditor", ours)
    alice, zed = make_user("alice-ours"), make_user("zed-hiddenactor")
    rows = []
    for n in range(30):
        rows.append((alice, "ours_probe", ours, {"n": n, "note": "visible words"}))
        if n % 3:
            rows.append((zed, "hiddenaction_probe", hidden, {"n": n, "note": SECRET}))
    write_events(rows)
    return ours, hidden


def withheld_lines(data: bytes) -> list[str]:
    return [line for line in data.decode("ascii").splitlines() if json.loads(line)["type"] == "withheld"]


def test_an_auditor_scoped_to_one_of_two_targets_exports_a_file_that_verifies(two_targets, auditor, tmp_path):
    ours, hidden = two_targets
    data = body(api_client(auditor).get(EXPORT, {"format": "jsonl"}))
    records = jsonl(data)
    total = AuditEvent.objects.count()
    theirs = AuditEvent.objects.exclude(target=ours).count()  # the other target's, and the target-less grants
    assert theirs >= AuditEvent.objects.filter(target=hidden).count() == 20
    result = verify_bytes(data, from_start=True)
    assert result.ok, result.report()
    assert (result.events, result.withheld) == (total, theirs)
    assert f"OK {total} events ({theirs} withheld" in result.report()[0]
    assert [r["seq"] for r in records] == list(range(1, total + 1))
    assert {r["target_id"] for r in records if r["type"] == "event"} == {ours.pk}
    # The CLI says the same.
    path = tmp_path / "scoped.jsonl"
    path.write_bytes(data)
    cli = Path(sys.executable).with_name("changegate-audit")
    run = subprocess.run([str(cli), "verify", str(path), "--from-start"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"OK {total} events ({theirs} withheld" in run.stdout


def test_withheld_lines_and_rows_leak_nothing_but_the_link(two_targets, auditor):
    ours, hidden = two_targets
    data = body(api_client(auditor).get(EXPORT, {"format": "jsonl"}))
    lines = withheld_lines(data)
    assert len(lines) == AuditEvent.objects.exclude(target=ours).count()
    hidden_events = {e.seq: e for e in AuditEvent.objects.exclude(target=ours)}
    for line in lines:
        record = json.loads(line)
        assert set(record) == {"type", "seq", "prev_hash", "hash"}
        event = hidden_events[record["seq"]]
        assert (record["prev_hash"], record["hash"]) == (event.prev_hash, event.hash)
    text = data.decode("ascii")
    for word in (hidden.name, "zed-hiddenactor", "hiddenaction_probe", SECRET, "ua-hiddenaction"):
        assert word not in text
    # CSV: the withheld rows hold seq, prev_hash and hash, every other cell empty.
    csv_data = body(api_client(auditor).get(EXPORT, {"format": "csv"}))
    rows = list(csv.DictReader(io.StringIO(csv_data.decode("utf-8"), newline="")))
    assert list(rows[0]) == csv_columns()
    assert [int(r["seq"]) for r in rows] == [r["seq"] for r in jsonl(data) if r["type"] != "checkpoint"]
    withheld = [r for r in rows if not r["created_at"]]
    assert len(withheld) == len(lines)
    for row in withheld:
        assert {k for k, v in row.items() if v} == {"seq", "prev_hash", "hash"}
    for word in (hidden.name, "zed-hiddenactor", "hiddenaction_probe", SECRET):
        assert word not in csv_data.decode("utf-8")


def test_editing_an_exported_event_still_fails(two_targets, auditor):
    data = body(api_client(auditor).get(EXPORT, {"format": "jsonl"}))
    lines = data.decode("ascii").splitlines()
    at = next(i for i, line in enumerate(lines) if '"ours_probe"' in line and '"n":5,' in line)
    edited = lines.copy()
    edited[at] = edited[at].replace('"n":5,', '"n":6,')
    result = verify_bytes(("\n".join(edited) + "\n").encode(), from_start=True)
    assert not result.ok and result.failure.reason == "edited", result.report()
    # A withheld link cannot be changed either: the next line no longer chains to it.
    at = next(i for i, line in enumerate(lines[:-1]) if '"withheld"' in line)
    record = json.loads(lines[at])
    relinked = lines.copy()
    relinked[at] = json.dumps({**record, "hash": "f" * 64}, sort_keys=True, separators=(",", ":"))
    assert not verify_bytes(("\n".join(relinked) + "\n").encode(), from_start=True).ok
    # Nor can one be dropped.
    dropped = lines[:at] + lines[at + 1:]
    result = verify_bytes(("\n".join(dropped) + "\n").encode(), from_start=True)
    assert not result.ok and result.failure.reason == "missing", result.report()


def test_the_admin_export_filtered_by_action_verifies(two_targets, auditor, make_user, client):
    ours, _hidden = two_targets
    root = make_user("root", is_staff=True, is_superuser=True)
    client.force_login(root)
    url = reverse("admin:changes_auditevent_changelist") + "?action__exact=hiddenaction_probe"
    response = client.post(url, {"action": "export_jsonl", "select_across": "1", "index": "0",
                                  "_selected_action": [AuditEvent.objects.filter(action="hiddenaction_probe")[0].pk]})
    data = body(response)
    chosen = list(AuditEvent.objects.filter(action="hiddenaction_probe").order_by("seq").values_list("seq", flat=True))
    span = chosen[-1] - chosen[0] + 1  # the chain from the first selected event to the last
    result = verify_bytes(data)
    assert result.ok, result.report()
    assert (result.first_seq, result.events, result.withheld) == (chosen[0], span, span - len(chosen))
    assert [r["seq"] for r in jsonl(data) if r["type"] == "event"] == chosen
    # The auditor's selection of both targets' probes: only ours whole, the rest withheld.
    auditor.is_staff = True
    auditor.save()
    from django.contrib.auth.models import Permission

    auditor.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    client.force_login(auditor)
    everything = list(AuditEvent.objects.values_list("pk", flat=True))
    data = body(client.post(reverse("admin:changes_auditevent_changelist"),
                            {"action": "export_jsonl", "_selected_action": everything, "index": "0"}))
    result = verify_bytes(data)
    assert result.ok, result.report()
    records = jsonl(data)
    assert {r["target_id"] for r in records if r["type"] == "event"} == {ours.pk}
    assert result.withheld == sum(r["type"] == "withheld" for r in records) > 0


def test_the_command_with_a_filter_writes_a_file_that_verifies(two_targets, tmp_path):
    out = tmp_path / "actor.jsonl"
    call_command("audit_export", "--actor", "zed-hiddenactor", "--output", str(out), stderr=io.StringIO())
    result = verify_bytes(out.read_bytes(), from_start=True)
    assert result.ok, result.report()
    assert (result.events, result.withheld) == (AuditEvent.objects.count(),
                                                AuditEvent.objects.exclude(actor_username="zed-hiddenactor").count())


def test_a_filtered_export_from_mid_chain_is_partial_and_one_with_nothing_visible_verifies(two_targets, auditor):
    ours, _hidden = two_targets
    events = list(AuditEvent.objects.order_by("seq"))
    middle = next(e for e in events[len(events) // 2:] if e.target_id != ours.pk)  # starts with a withheld line
    data = body(api_client(auditor).get(EXPORT, {"since": middle.created_at.isoformat()}))
    records = jsonl(data)
    assert records[0]["type"] == "withheld" and records[0]["seq"] == middle.seq
    result = verify_bytes(data)
    assert result.ok and result.first_seq == middle.seq, result.report()
    assert any("a partial export" in line for line in result.report())
    assert not verify_bytes(data, from_start=True).ok
    # No event of the range is the user's: every line withheld, and it still verifies.
    data = body(api_client(auditor).get(EXPORT, {"actor": "zed-hiddenactor"}))
    result = verify_bytes(data, from_start=True)
    assert result.ok and result.events == result.withheld == len(events), result.report()


def test_an_unfiltered_export_is_the_plain_chain_byte_for_byte(two_targets, make_user):
    root = make_user("root", is_superuser=True, is_staff=True)
    for fmt, plain in (("jsonl", events_jsonl), ("csv", events_csv)):
        data = body(api_client(root).get(EXPORT, {"format": fmt}))
        assert data == b"".join(plain(AuditEvent.objects.all()))
        assert b"withheld" not in data


def test_a_scoped_export_costs_the_same_statements_for_more_events(two_targets, auditor):
    ours, hidden = two_targets

    def statements() -> int:
        query = export_query(user=auditor, params={"format": "jsonl", "since": "2000-01-01"})
        with CaptureQueriesContext(connection) as captured:
            data = b"".join(export_stream(user=auditor, query=query))
        assert verify_bytes(data).ok
        return len(captured)

    before = statements()
    write_events([(None, "more", (ours, hidden)[n % 2], {"n": n}) for n in range(200)])
    assert statements() == before


# ---------------------------------------------------------------------------
# Random cuts of a generated chain


@pytest.fixture
def chain(make_user, tmp_path, settings) -> dict[str, Any]:
    """About 300 events on three targets and none, by four actors, with signed
    checkpoints every 25 events; auditors of random subsets of the targets."""
    from audit.chain import audit_signing_key_generate

    audit_signing_key_generate(tmp_path / "signing.pem")
    settings.CHANGEGATE_AUDIT_SIGNING_KEY_FILE = str(tmp_path / "signing.pem")
    settings.CHANGEGATE_AUDIT_CHECKPOINT_EVERY = 25
    rng = random.Random(15)
    targets = [Target.objects.create(name=f"t{n}.example", config={"zone": f"t{n}.example"}) for n in range(3)]
    actors = [make_user(f"actor{n}") for n in range(4)]
    auditors = []
    for n, scope in enumerate(([0], [1, 2], [0, 2])):
        user = make_user(f"auditor{n}")
        for index in scope:
            grant(user, "auditor", targets[index])
        auditors.append(user)
    write_events([(rng.choice([*actors, None]), rng.choice(["a_one", "a_two", "a_three"]),
                   rng.choice([*targets, None]), {"n": n, "words": f"payload {n}"}) for n in range(300)])
    return {"targets": targets, "actors": actors, "auditors": auditors,
            "root": make_user("root", is_staff=True, is_superuser=True)}


def test_random_cuts_of_a_generated_chain_always_verify(chain):
    rng = random.Random(1515)
    events = list(AuditEvent.objects.order_by("seq"))
    assert len(events) > 300
    for _round in range(40):
        user = rng.choice([*chain["auditors"], chain["root"], None])
        params: dict[str, Any] = {"format": "jsonl"}
        lo, hi = sorted(rng.sample(range(len(events)), 2))
        if rng.random() < 0.5:
            params["since"] = events[lo].created_at.isoformat()
        if rng.random() < 0.5:
            params["until"] = events[hi].created_at.isoformat()
        if rng.random() < 0.4:
            params["actor"] = rng.choice(chain["actors"]).username
        mine = set(targets_exportable(user=user).values_list("pk", flat=True))
        if rng.random() < 0.3:
            params["target"] = rng.choice([t for t in chain["targets"] if t.pk in mine]).name
        query = export_query(user=user, params=params)
        data = b"".join(export_stream(user=user, query=query))
        in_range = [e for e in events if (query.since is None or e.created_at >= query.since)
                    and (query.until is None or e.created_at < query.until)]
        shown = [e for e in in_range
                 if (user is None or user.is_superuser or e.target_id in mine)
                 and (query.actor is None or e.actor_username == query.actor)
                 and (query.target is None or e.target_id == query.target.pk)]
        result = verify_bytes(data, from_start="since" not in params)
        assert result.ok, (params, result.report())
        assert (result.events, result.withheld) == (len(in_range), len(in_range) - len(shown)), params
        records = jsonl(data)
        assert [r["seq"] for r in records if r["type"] == "event"] == [e.seq for e in shown], params
        assert result.checkpoints_verified == sum(r["type"] == "checkpoint" for r in records), params
