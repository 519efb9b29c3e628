"""The exports' shortcut (audit.export._Intact: an intact row's columns checked
against its stored canonical text by encoding them, its payload by comparing text)
must give the same bytes as decoding every row (`shortcut=False`, what the export
did before, issue 14 finding 6), for intact rows with awkward values, rows whose
payload column is spelled otherwise (written before the canonical encoder), rows
edited behind their hash and a row without canonical text. On SQLite the exports
read created_at as the text Django wrote (`_created_at_as_text`): the same bytes
as reading the driver's datetime, for moments with and without microseconds, in
other offsets, and columns spelled otherwise. SQLite and PostgreSQL (DATABASE_URL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, transaction

import audit.export
from audit.chain import RequestOrigin, audit_record
from audit.export import _checked, _Intact, _raw_rows, events_csv, events_jsonl
from changes.management.commands.flush import _append_only_lifted
from changes.models import AuditEvent, Target

PAYLOADS: list[Any] = [
    {},
    {"b": 1, "a": 2, "B": 3, "_": 4, "aa": {"z": [3, 2, 1], "y": {"d": None, "c": True, "e": False}}},
    {"text": 'ünïcødé \u2028 — 日本 😀 " \\ / \n \r \t \x07 , ; =1+1', "ключ": "значение"},
    {"floats": [0.1, 2.5, -0.0, 1e-07, 1.5e300, -3.25e-300, 100.0, 1e16, 123456789.123], "pi": 3.141592653589793},
    {"big": 10**30, "neg": -(10**20), "int64": 2**63, "small": -1, "zero": 0},
    {"nested": [[[]], [{}], {"x": [{"y": [{"z": "deep"}]}]}], "empty": {"": ""}},
    {"user_agent": ',"user_agent":"x"', "origin": ',"origin":"y"', "payload": ',"payload":{}',
     "prev_hash": ',"prev_hash":"0"', "seq": ',"seq":1}'},
    {"=formula": "-1", "@at": "+2", "tab": "\tx", "cr": "\rx"},
]


def origins() -> list[RequestOrigin]:
    return [
        RequestOrigin(kind="api", ip="192.0.2.7", user_agent='ua "q" ,"origin": ü'),
        RequestOrigin(kind="cli", ip="2001:db8::1", user_agent="=cmd|' /C calc'!A0"),
        RequestOrigin(kind="admin", ip="::1", user_agent=""),
        RequestOrigin(),  # system: no address
    ]


def edit(seq: int, **columns: Any) -> None:
    """Rewrite columns of one event behind its hash (the database owner, triggers lifted)."""
    assignments = ", ".join(f"{name} = %s" for name in columns)
    with transaction.atomic(), _append_only_lifted(connection), connection.cursor() as cursor:
        cursor.execute(f"UPDATE changes_auditevent SET {assignments} WHERE seq = %s", [*columns.values(), seq])


def shortcut_taken() -> set[int]:
    intact = _Intact()
    return {row[0] for row in _raw_rows(AuditEvent.objects.all()) if intact(row) is not None}


def decoded_intact() -> set[int]:
    """The rows the decoding check finds intact."""
    return {seq for seq, canonical, _h, _r, bad in map(_checked, _raw_rows(AuditEvent.objects.all()))
            if canonical is not None and not bad}


def exports() -> dict[str, tuple[bytes, bytes]]:
    events = AuditEvent.objects.all()
    return {"csv": (b"".join(events_csv(events)), b"".join(events_csv(events, shortcut=False))),
            "jsonl": (b"".join(events_jsonl(events)), b"".join(events_jsonl(events, shortcut=False)))}


# Real commits: lifting the triggers is an ALTER TABLE, which PostgreSQL refuses while
# the test's own transaction has pending (deferred foreign-key) trigger events.
@pytest.mark.django_db(transaction=True)
def test_shortcut_gives_the_bytes_of_decoding_every_row(make_user, monkeypatch):
    users = [make_user('quoted"name, ü'), make_user("=ann"), None]
    target = Target.objects.create(name="shortcut.example", config={"zone": "shortcut.example."})
    with transaction.atomic():
        for n, payload in enumerate(PAYLOADS * 2):
            audit_record(actor=users[n % 3], origin=origins()[n % 4], action=("+probe", "probe", "-x")[n % 3],
                         target=target if n % 2 else None, payload=payload, outcome=("ok", "", "@draft")[n % 3])
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert shortcut_taken() == decoded_intact()
    # Every row on SQLite. PostgreSQL's jsonb keeps 1.5e300 as an exact numeric that reads
    # back as an integer: the decoding check, too, flags that payload (written twice).
    assert len(shortcut_taken()) == len(seqs) - (2 if connection.vendor == "postgresql" else 0)
    for fmt, (fast, slow) in exports().items():
        assert fast == slow, fmt

    first = seqs[-len(PAYLOADS):]  # the second half: the same payloads, edited below
    # The same value spelled as Django's default encoder spells it (a row written before
    # the canonical encoder): intact, found by decoding.
    edit(first[1], payload=json.dumps(PAYLOADS[1]))
    edit(first[3], payload=json.dumps(PAYLOADS[3]))
    # Edited behind the hash: flagged, never shown.
    edit(first[2], actor_username="mallory", payload=json.dumps({"text": "forged"}))
    edit(first[4], payload=json.dumps({**PAYLOADS[4], "big": 10**30 + 1}))
    edit(first[5], client_ip="192.0.2.99", outcome="applied", user_agent="forged")
    edit(first[6], created_at="2001-01-01 00:00:00" if connection.vendor == "sqlite" else "2001-01-01T00:00:00Z")
    edit(first[7], payload=json.dumps({"=formula": -1, "@at": "+2", "tab": "\tx", "cr": "\rx"}))
    edit(first[0], canonical_text=None)  # a row older than the canonical text column
    edit(seqs[2], hash='=not,"hex"')  # not hashed itself: the row is intact, its cell written the general way
    assert shortcut_taken() == decoded_intact()
    assert not shortcut_taken() & {first[n] for n in (0, 2, 4, 5, 6, 7)}
    assert {first[1], first[3]} - shortcut_taken() == ({first[3]} if connection.vendor == "postgresql" else set())
    for fmt, (fast, slow) in exports().items():
        assert fast == slow, fmt
    # The pieces kept per (actor, origin, ..., outcome) forgotten every other row.
    monkeypatch.setattr(_Intact, "LIMIT", 1)
    for fmt, (fast, slow) in exports().items():
        assert fast == slow, fmt
    fast_csv = exports()["csv"][0].decode()
    assert "\"'=not,\"\"hex\"\"\"" in fast_csv
    assert "mallory" not in fast_csv and "forged" not in fast_csv
    assert fast_csv.count("actor_username payload") == 1


# Hashed as written: UTC with and without microseconds (what timezone.now() gives), and
# moments in other offsets (the canonical text keeps the offset, the column holds UTC).
MOMENTS = [
    datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC),
    datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
    datetime(2025, 3, 1, 12, 0, 0, 1, tzinfo=UTC),
    datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone(timedelta(hours=2))),
    datetime(2025, 3, 1, 12, 0, 0, 500000, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    datetime(2025, 7, 1, 0, 30, 0, 7, tzinfo=ZoneInfo("Europe/Berlin")),
    datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone(timedelta(0))),  # "+00:00" too
]


def all_exports(monkeypatch) -> list[bytes]:
    """Both formats, shortcut and decoding every row, reading created_at as text (SQLite)
    and as the driver's datetime (what the exports read before, and on PostgreSQL)."""
    found = []
    for as_text in (True, False):
        with monkeypatch.context() as patch:
            patch.setattr(audit.export, "_created_at_as_text",
                          lambda events, as_text=as_text: as_text and connection.vendor == "sqlite")
            for fast, slow in exports().values():
                found += [fast, slow]
    return found


@pytest.mark.django_db(transaction=True)
def test_created_at_read_as_text_gives_the_same_bytes(make_user, monkeypatch):
    user = make_user("timely")
    target = Target.objects.create(name="moments.example", config={"zone": "moments.example."})
    moments = iter(MOMENTS)
    with transaction.atomic(), monkeypatch.context() as patch:
        patch.setattr("audit.chain.timezone.now", lambda: next(moments))
        for n in range(len(MOMENTS)):
            audit_record(actor=user, origin=origins()[n % 4], action="probe", target=target, payload={"n": n})
    rows = list(_raw_rows(AuditEvent.objects.order_by("seq")))
    before = {row[0] for row in rows[:-len(MOMENTS)]}  # make_user's event(s): now, in UTC
    rows = rows[-len(MOMENTS):]
    seqs = [row[0] for row in rows]
    # SQLite: the text Django wrote (naive UTC, str(datetime): no ".000000"); else a datetime.
    if connection.vendor == "sqlite":
        assert [row[3] for row in rows] == [str(m.astimezone(UTC).replace(tzinfo=None)) for m in MOMENTS]
    else:
        assert all(type(row[3]) is datetime for row in rows)
    # The UTC ones ("+00:00" in the canonical text) by the shortcut, the others by decoding: all intact.
    assert decoded_intact() == before | set(seqs)
    assert shortcut_taken() == before | {seq for seq, m in zip(seqs, MOMENTS, strict=True)
                                         if m.utcoffset() == timedelta(0)}
    found = all_exports(monkeypatch)
    assert len(set(found)) == 2, "one CSV and one JSON Lines file"
    csv = exports()["csv"][0].decode()
    for moment in MOMENTS:
        assert f",{moment.isoformat()}," in csv
    assert ",2025-03-01T12:00:00+00:00," in csv and ",2025-03-01T12:00:00.000001+00:00," in csv

    if connection.vendor != "sqlite":
        return
    # Columns edited behind the hash, spelled as Django never writes them: the same moment
    # (intact, found by decoding), another one, or no time at all (Django's converter reads
    # None): the same findings and bytes whether the export parses the text or the driver does.
    edit(seqs[0], created_at="2025-03-01 12:00:00.000000")
    edit(seqs[1], created_at="2025-03-01T14:00:00.123456+02:00")
    edit(seqs[2], created_at="2025-03-01 12:00:00.000002")
    edit(seqs[3], created_at="not a time")
    edit(seqs[4], created_at="1970-01-01T00:00:00Z")
    # ".000000" and "Z" parse to the hashed moment's isoformat(): the shortcut's; "+02:00" to another spelling.
    assert shortcut_taken() == before | {seqs[0], seqs[4], seqs[8]}
    assert decoded_intact() == before | set(seqs) - {seqs[2], seqs[3]}
    found = all_exports(monkeypatch)
    assert len(set(found)) == 2, "one CSV and one JSON Lines file"
    assert exports()["csv"][0].decode().count("\r\n") - 1 == len(before) + len(seqs)
    assert [line.rsplit(",", 1)[1] for line in exports()["csv"][0].decode().splitlines()[1:]].count("created_at") == 2
