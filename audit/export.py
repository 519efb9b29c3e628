"""Reading the audit log out: the streamed export (JSON Lines or CSV). Reads only;
the API view, the admin and the `audit_export` command are adapters over these
functions, so all three produce the same bytes for the same filters. Who may
export what is `audit.selectors`; the evidence report of one change is
`audit.evidence`.

What verifies offline: the JSON Lines export of a time range with no other
filter, taken by someone who may export every target, is one contiguous piece
of the chain and `changegate-audit verify` recomputes it from its first event's
`prev_hash`. A filtered export (target, actor, change, or a user who may export
only some targets) is a selection: each line still carries its `hash` and
`prev_hash`, so every event can be checked line by line against a full export,
but the file alone is not a chain.

The stored canonical text is the record: both exports are built from it, never
from the columns, and every row's columns are compared with it. A row whose
columns disagree (someone edited them behind the hash) is not dropped and not
"corrected": the JSON Lines export writes a `column_mismatch` line naming the
fields right after the event's line, which makes `changegate-audit verify` fail
(`tampered`), and the CSV export names them in its last column,
`column_mismatch`.

Constant memory: events are read with a server-side cursor in seq order
(`iterator(chunk_size=...)`) and written out in chunks of about 64 KiB; nothing
loads the table.
"""

from __future__ import annotations

import io
import json
import re
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.db.models.base import ModelState
from django.db.models.sql.constants import MULTI
from django.utils import timezone

from audit.chain import checkpoint_record, column_mismatches, event_record
from audit.lines import CsvRows, _cell, csv_columns, dumps_line  # noqa: F401 - csv_columns: the export's API
from audit.selectors import UserLike, events_exportable, targets_exportable  # noqa: F401
from changes.errors import ValidationFailed
from changes.models import AuditCheckpoint, AuditEvent, Target

FORMATS = ("jsonl", "csv")
CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
ITERATOR_CHUNK = 2000  # rows per fetch from the server-side cursor
OUTPUT_CHUNK = 64 * 1024  # bytes handed to the server per write




# ---------------------------------------------------------------------------
# The query


@dataclass(frozen=True)
class ExportQuery:
    format: str = "jsonl"
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    target: Target | None = None
    actor: str | None = None
    change: int | None = None

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]

    def filename(self, *, now: datetime | None = None) -> str:
        since = _stamp(self.since) if self.since else "start"
        until = _stamp(self.until or now or timezone.now())
        return f"changegate-audit-{since}-{until}.{self.format}"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


# "2025-01-02T10:00:00+02:00" typed into a URL without escaping arrives with a
# space for the "+": accept it rather than make every shell user quote it.
_UNESCAPED_OFFSET = re.compile(r"(T?\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}(?::?\d{2})?)$")


def parse_moment(value: str) -> datetime | None:
    """An ISO 8601 date or date-time; naive means UTC. None when unreadable."""
    text = _UNESCAPED_OFFSET.sub(r"\1+\2", value.strip())
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        # 9999-12-31T23:59:59-23:59 is a valid ISO string but past datetime.max in
        # UTC, which the database and the file name need: unreadable, not a 500.
        return moment.astimezone(UTC)
    except OverflowError:
        return None


def export_query(*, user: UserLike | None, params: Mapping[str, Any]) -> ExportQuery:
    """Read and check the export parameters (format, since, until, target, actor,
    change; absent or empty = no filter). Raises NotPermitted first when the user
    may export nothing, then ValidationFailed naming every bad field. A target or
    change the user may not export reads as unknown."""
    scope = events_exportable(user=user)  # 403 before anything about the input
    errors: list[dict[str, Any]] = []

    def bad(field: str, message: str) -> None:
        errors.append({"index": None, "field": field, "message": message})

    def text(name: str) -> str | None:
        value = params.get(name)
        if value is None or str(value).strip() == "":
            return None
        value = str(value).strip()
        if "\x00" in value:  # PostgreSQL cannot compare text holding NUL
            bad(name, "must not contain NUL characters")
            return None
        return value

    fmt = text("format") or "jsonl"
    if fmt not in FORMATS:
        bad("format", f"one of {', '.join(FORMATS)}")
    moments: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        raw = text(name)
        moments[name] = parse_moment(raw) if raw is not None else None
        if raw is not None and moments[name] is None:
            bad(name, "an ISO 8601 date or date-time, e.g. 2025-01-31 or 2025-01-31T12:00:00Z")
    if moments["since"] and moments["until"] and moments["since"] >= moments["until"]:
        bad("until", "must be later than since")

    target = None
    ref = text("target")
    if ref is not None:
        targets = targets_exportable(user=user)
        target = (targets.filter(pk=int(ref)) if ref.isascii() and ref.isdigit() and len(ref) < 19
                  else targets.filter(name=ref)).first()
        if target is None:
            bad("target", f"no target {ref!r} whose audit log you may export")

    actor = text("actor")
    if actor is not None and not (
        get_user_model().objects.filter(username=actor).exists()
        # A deleted user's events still carry the username.
        or AuditEvent.objects.filter(actor_username=actor).exists()
    ):
        bad("actor", f"no user {actor!r}")

    change = None
    raw_change = text("change")
    if raw_change is not None:
        if not (raw_change.isascii() and raw_change.isdigit() and len(raw_change) < 19):
            bad("change", "a change id (an integer)")
        else:
            change = int(raw_change)
            # Every change has events on its target (change_created at least).
            if not scope.filter(change_id=change).exists():
                bad("change", f"no change #{change} whose audit log you may export")
    if errors:
        raise ValidationFailed(errors)
    return ExportQuery(format=fmt, since=moments["since"], until=moments["until"], target=target, actor=actor,
                       change=change)


def export_events(*, user: UserLike | None, query: ExportQuery) -> QuerySet[AuditEvent]:
    """The events of `query` that `user` may export, in seq order."""
    events = events_exportable(user=user)
    if query.since is not None:
        events = events.filter(created_at__gte=query.since)
    if query.until is not None:
        events = events.filter(created_at__lt=query.until)
    if query.target is not None:
        events = events.filter(target_id=query.target.pk)
    if query.actor is not None:
        events = events.filter(actor_username=query.actor)
    if query.change is not None:
        events = events.filter(change_id=query.change)
    return events.order_by("seq")


# ---------------------------------------------------------------------------
# Streaming


def export_stream(*, user: UserLike | None, query: ExportQuery) -> Iterator[bytes]:
    """The export file as byte chunks (the same bytes for API, admin and command)."""
    events = export_events(user=user, query=query)
    return events_csv(events) if query.format == "csv" else events_jsonl(events)


class _ChunkReader(io.RawIOBase):
    """A readable binary stream over the export's chunks, for readers that want a
    file (the verifier, run in place by `manage.py audit_verify`)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def export_stream_reader(*, user: UserLike | None, query: ExportQuery) -> io.BufferedReader:
    """The export of `query` as a binary file object (JSON Lines)."""
    return io.BufferedReader(_ChunkReader(export_stream(user=user, query=query)), OUTPUT_CHUNK)


def _rows(events: QuerySet[AuditEvent]) -> Iterator[AuditEvent]:
    """The events in seq order from a server-side cursor, as read-only instances
    built without Model.__init__ (a third of the export's time otherwise): the
    column values, converted by their fields, set on a bare instance."""
    names = [field.attname for field in AuditEvent._meta.concrete_fields]
    for values in events.order_by("seq").values_list(*names).iterator(chunk_size=ITERATOR_CHUNK):
        event = AuditEvent.__new__(AuditEvent)
        event.__dict__.update(zip(names, values))
        event._state = ModelState()
        event._state.adding = False
        yield event


class _Checkpoints:
    """Checkpoints in seq order, fetched a batch at a time as the export walks the
    chain (merge join), so a long export never holds them all."""

    BATCH = 500

    def __init__(self) -> None:
        self.pending: deque[AuditCheckpoint] = deque()
        self.exhausted = False

    def at(self, seq: int) -> list[AuditCheckpoint]:
        if self.pending and self.pending[0].seq > seq:  # most events: the next checkpoint is further on
            return []
        while True:
            while self.pending and self.pending[0].seq < seq:
                self.pending.popleft()
            if self.pending or self.exhausted:
                break
            batch = list(AuditCheckpoint.objects.filter(seq__gte=seq).order_by("seq", "pk")[: self.BATCH])
            self.exhausted = len(batch) < self.BATCH
            self.pending.extend(batch)
            if not batch:
                break
        found = []
        while self.pending and self.pending[0].seq == seq:
            found.append(self.pending.popleft())
        return found


def spliced_event_line(canonical: str, hash_: str) -> str:
    """The event line built from the stored canonical text: the same bytes as
    dumps_line(event_record(event)), without decoding the row. With sorted keys,
    "hash" goes right before the top-level "origin" and "type" right before
    "user_agent", the last key. The first ',"origin":' is the top-level key (every
    value before it is a scalar, and a quote inside a string is always escaped);
    the last ',"user_agent":' is the top-level one (it is the last key, and its
    string value cannot hold an unescaped quote)."""
    i = canonical.find(',"origin":')
    j = canonical.rfind(',"user_agent":')
    return f'{canonical[:i]},"hash":"{hash_}"{canonical[i:j]},"type":"event"{canonical[j:]}'


# The columns compared with the stored canonical text (every hashed field but seq,
# which the query reads anyway).
_COMPARED = ("created_at", "actor_id", "actor_username", "origin", "client_ip", "user_agent", "action", "target_id",
             "target_name", "change_id", "outcome", "payload", "prev_hash")


def _checked_rows(events: QuerySet[AuditEvent]) -> Iterator[tuple[int, str | None, str, dict[str, Any] | None,
                                                                   list[str]]]:
    """(seq, canonical text, hash, hashed record, columns that disagree with it) per
    event in seq order. For a row older than the canonical text column the record
    is None (the caller encodes the row) and nothing can disagree."""
    query = events.order_by("seq").values_list("seq", "canonical_text", "hash", *_COMPARED).query
    compiler = query.get_compiler(using=events.db)
    # The rows as the driver returns them, without the ORM's per-column converters
    # (decoding the payload and parsing the time through Django cost more than the
    # comparison itself): the same server-side cursor as iterator(). Only the two
    # values that need it are decoded below.
    chunks = compiler.execute_sql(MULTI, chunked_fetch=True, chunk_size=ITERATOR_CHUNK)
    for chunk in chunks or ():
        for seq, canonical, hash_, *values in chunk:
            if canonical is None:
                yield seq, None, hash_, None, []
                continue
            hashed = _loads(canonical)
            columns = dict(zip(_COMPARED, values))
            columns["seq"] = seq
            moment = _moment(columns["created_at"])
            # The same moment is the hashed string (so the whole-row comparison
            # below can be one dict comparison); anything else is compared as is.
            columns["created_at"] = hashed["created_at"] if _is_moment(hashed["created_at"], moment) else moment
            if isinstance(columns["payload"], str):  # JSON text (SQLite; PostgreSQL's jsonb as text)
                columns["payload"] = _loads(columns["payload"])
            elif isinstance(columns["payload"], bytes):
                columns["payload"] = json.loads(columns["payload"])
            yield seq, canonical, hash_, hashed, column_mismatches(hashed, columns)


_scan = json.JSONDecoder().scan_once  # the C scanner json.loads() ends in, as json.loads() builds it


def _loads(text: str) -> Any:
    """json.loads(text), without its two whitespace regex matches and Python
    wrapper (two decodes per row: a tenth of the CSV export's time). Text that
    does not start and end with the value (whitespace around it, trailing data,
    invalid JSON) goes to json.loads, which decodes it or raises as ever."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


def _is_moment(text: Any, moment: Any) -> bool:
    try:
        return datetime.fromisoformat(text) == moment
    except (TypeError, ValueError):
        return False


def _moment(value: Any) -> Any:
    """A timestamp column as the driver gives it: a datetime, or (SQLite) the text
    Django wrote, in UTC without an offset."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def mismatch_line(seq: int, fields: list[str]) -> str:
    """The line that tells the verifier the server's row for `seq` disagrees with
    its hashed record (the event line before it shows the hashed record)."""
    return dumps_line({"type": "column_mismatch", "seq": seq, "fields": fields})


def _event_lines(events: QuerySet[AuditEvent]) -> Iterator[tuple[int, str]]:
    """(seq, line) per event: spliced from the stored canonical text, or encoded
    from the decoded row for events written before that column existed; after an
    event whose columns disagree with its canonical text, its column_mismatch line."""
    for seq, canonical, hash_, _hashed, bad in _checked_rows(events):
        if canonical is not None:
            yield seq, spliced_event_line(canonical, hash_)
            if bad:
                yield seq, mismatch_line(seq, bad)
        else:
            (event,) = _rows(AuditEvent.objects.filter(seq=seq))
            yield seq, dumps_line(event_record(event))


def events_jsonl(events: QuerySet[AuditEvent]) -> Iterator[bytes]:
    """One JSON object per line, sorted keys, ASCII: an event line per event, and
    right after the event a checkpoint signs, that checkpoint's line."""
    checkpoints = _Checkpoints()
    lines: list[str] = []
    size = 0
    last = None
    for seq, line in _event_lines(events):
        lines.append(line)
        size += len(line) + 1
        if seq == last:  # the event's column_mismatch line: its checkpoints are already written
            continue
        last = seq
        for checkpoint in checkpoints.at(seq):
            lines.append(dumps_line(checkpoint_record(checkpoint)))
        if size >= OUTPUT_CHUNK:
            yield ("\n".join(lines) + "\n").encode("ascii")
            lines, size = [], 0
    if lines:
        yield ("\n".join(lines) + "\n").encode("ascii")


def events_csv(events: QuerySet[AuditEvent]) -> Iterator[bytes]:
    """A header, then one row per event: the record's keys as columns, the
    payload as compact JSON text. Checkpoints are in the JSON Lines export only."""
    columns = csv_columns()
    rows = CsvRows(columns)
    out, writerow = rows.out, rows.writerow
    writerow(columns)
    for seq, canonical, hash_, hashed, bad in _checked_rows(events):
        if canonical is not None and hashed is not None:
            if rows.stored(canonical, hashed, hash_, bad):  # every row the hashed text holds whole
                if out.size >= OUTPUT_CHUNK:
                    yield out.take()
                continue
            record = {**hashed, "hash": hash_, "column_mismatch": " ".join(bad)}
            cells = [_cell(record.get(column)) for column in columns]
            start, end = canonical.find(',"payload":'), canonical.rfind(',"prev_hash":')
            cells[columns.index("payload")] = canonical[start + 11:end]
        else:
            (event,) = _rows(AuditEvent.objects.filter(seq=seq))
            record = event_record(event)
            cells = [_cell(record.get(column)) for column in columns]
        writerow(cells)
        if out.size >= OUTPUT_CHUNK:
            yield out.take()
    yield out.take()
