"""Reading the audit log out: the streamed export (JSON Lines or CSV). Reads only;
the API view, the admin and the `audit_export` command are adapters over these
functions, so all three produce the same bytes for the same filters. Who may
export what is `audit.selectors`; the evidence report of one change is
`audit.evidence`.

What verifies offline: every JSON Lines export, however it is cut (issue 15).
The export walks the chain in seq order over its range (since/until; the admin's
selection: its first to its last event) and writes every event the user may
export and the filters (target, actor, change; the admin's selection) match as
an event line; every other event of the range as a `withheld` line, its link
alone (seq, prev_hash, hash: no content). So the file is one contiguous piece of
the chain and `changegate-audit verify` recomputes it from its first line's
`prev_hash` ("OK N events (M withheld ...)"). The query reads the range once,
in seq order, with the filter as a computed column (`visible`); an export by
someone who may export everything, with no filter, has no such column and reads
and writes exactly as before. The CSV export writes a withheld event as a row
with only seq, prev_hash and hash (docs/audit.md).

The stored canonical text is the record: both exports are built from it, never
from the columns, and every row's columns are compared with it. A row whose
columns disagree (someone edited them behind the hash) is not dropped and not
"corrected": the JSON Lines export writes a `column_mismatch` line naming the
fields right after the event's line, which makes `changegate-audit verify` fail
(`tampered`), and the CSV export names them in its last column,
`column_mismatch`.

Speed (issue 14, finding 6): the check does not decode an intact row's canonical
text. `_Intact` encodes the row's columns as the canonical text encodes them and
compares text; the payload column, written in the canonical spelling
(CanonicalPayloadEncoder), is compared as text too. Only a row it cannot clear
this way is decoded (`_checked`), which gives the same bytes (tests/audit). On
SQLite created_at is read as the stored text and parsed once, as Django's own
converter would (`_raw_rows`).

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
from json.encoder import encode_basestring_ascii
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connections
from django.db.models import BooleanField, Case, Max, Min, Q, QuerySet, TextField, Value, When
from django.db.models.base import ModelState
from django.db.models.functions import Cast
from django.db.models.sql.constants import MULTI
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit.chain import checkpoint_record, column_mismatches, event_record
from audit.lines import CsvRows, _cell, csv_columns, dumps_line, withheld_cells  # noqa: F401 - csv_columns: the export's API
from audit.selectors import UserLike, events_exportable, export_scope, targets_exportable  # noqa: F401
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
    """Every event of `query`'s time range in seq order; those `user` may not export
    or the filters leave out are marked `visible` false (`with_visible`)."""
    events = AuditEvent.objects.all()
    if query.since is not None:
        events = events.filter(created_at__gte=query.since)
    if query.until is not None:
        events = events.filter(created_at__lt=query.until)
    shown = export_scope(user=user)
    if query.target is not None:
        shown &= Q(target_id=query.target.pk)
    if query.actor is not None:
        shown &= Q(actor_username=query.actor)
    if query.change is not None:
        shown &= Q(change_id=query.change)
    return with_visible(events, shown).order_by("seq")


def selection_events(*, user: UserLike | None, selected: QuerySet[AuditEvent]) -> QuerySet[AuditEvent]:
    """The admin's selection as an export: every event from the first selected seq
    to the last, in seq order; those not selected or that `user` may not export are
    marked `visible` false. Raises NotPermitted when the user may export nothing."""
    shown = export_scope(user=user) & Q(pk__in=selected.values("pk"))
    bounds = selected.aggregate(first=Min("seq"), last=Max("seq"))
    if bounds["first"] is None:
        return AuditEvent.objects.none()
    return with_visible(AuditEvent.objects.filter(seq__range=(bounds["first"], bounds["last"])), shown).order_by("seq")


def with_visible(events: QuerySet[AuditEvent], shown: Q) -> QuerySet[AuditEvent]:
    """`events` with the boolean column `visible` (the export writes the event whole,
    else its withheld link), computed in the same query: one pass in seq order, no
    merge of two. An empty `shown` (everything, no filter) adds nothing: the plain
    query of the unfiltered export. Case/When, not the bare condition: a NULL
    target_id makes `IN (...)` NULL, which must read as withheld."""
    if not shown:
        return events
    return events.annotate(visible=Case(When(shown, then=Value(True)), default=Value(False),
                                        output_field=BooleanField()))


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


# The row the exports read: (seq, canonical text, hash, *_COMPARED), in this order,
# then, for a query `with_visible`, the `visible` flag (_VISIBLE).
_READ = ("seq", "canonical_text", "hash", *_COMPARED)
_VISIBLE = len(_READ)
_HASH, _CREATED_AT, _PREV_HASH = 2, _READ.index("created_at"), _READ.index("prev_hash")


def _withholds(events: QuerySet[AuditEvent]) -> bool:
    """Whether the rows of `events` carry the `visible` flag (`with_visible`)."""
    return "visible" in events.query.annotations


def _raw_rows(events: QuerySet[AuditEvent]) -> Iterator[tuple[Any, ...]]:
    """The `_READ` columns (and `visible`, if annotated) per event in seq order, as
    the driver returns them, without the ORM's per-column converters (decoding the
    payload and parsing the time through Django cost more than the comparison
    itself; `visible` is then 1/0 on SQLite): the same server-side cursor as iterator().

    On SQLite created_at is read as the text Django wrote (CAST ... AS text): the
    sqlite3 module would otherwise run Django's "datetime" converter on every row
    (parse_datetime, a tenth of the CSV export's time), and `_moment` applies that
    very function to the text where a row is decoded. PostgreSQL's text form of a
    timestamptz depends on the session's DateStyle: there the driver's datetime."""
    names: list[Any] = [*_READ, "visible"] if _withholds(events) else [*_READ]
    if _created_at_as_text(events):
        names[_CREATED_AT] = Cast("created_at", TextField())
    query = events.order_by("seq").values_list(*names).query
    compiler = query.get_compiler(using=events.db)
    chunks = compiler.execute_sql(MULTI, chunked_fetch=True, chunk_size=ITERATOR_CHUNK)
    for chunk in chunks or ():
        yield from chunk


def _created_at_as_text(events: QuerySet[AuditEvent]) -> bool:
    """Whether `_raw_rows` reads created_at as text (SQLite; the tests also read it
    as the driver's datetime and compare the bytes)."""
    return connections[events.db].vendor == "sqlite"


def _checked(row: tuple[Any, ...]) -> tuple[int, str | None, str, dict[str, Any] | None, list[str]]:
    """(seq, canonical text, hash, hashed record, columns that disagree with it) of
    one `_raw_rows` row, by decoding both sides. For a row older than the canonical
    text column the record is None (the caller encodes the row) and nothing can
    disagree."""
    seq, canonical, hash_, *values = row
    if canonical is None:
        return seq, None, hash_, None, []
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
    return seq, canonical, hash_, hashed, column_mismatches(hashed, columns)


_fromisoformat = datetime.fromisoformat
_enc = encode_basestring_ascii  # json's own string encoder (C), as canonical_event's ensure_ascii uses it


def _int(value: Any) -> str:
    """An integer column's token in the canonical text; TypeError for anything else."""
    if value is None:
        return "null"
    if type(value) is not int:
        raise TypeError(value)
    return repr(value)


class _Intact:
    """The shortcut of the exports' column check: called with a `_raw_rows` row, it
    returns (the hashed created_at, the payload's text in the canonical text, the
    encoded pieces of its columns, see LIMIT) when the row's columns provably say
    what its stored canonical text says, without decoding the canonical text; None when that cannot be shown this way (no
    canonical text, a column that disagrees, a value spelled otherwise), and the
    caller decodes the row (`_checked`), which finds the same for an intact row.

    Every column but the payload is encoded as canonical_event encodes it (sorted
    keys, compact, ASCII), and the canonical text must be exactly that head, the
    payload's text and that tail: then every scalar column equals its hashed value,
    of the same type, as `_checked`'s dict comparison finds. The payload's text must
    decode (as `_checked` decodes it) and equal the payload column: as text when the
    column was written by CanonicalPayloadEncoder (SQLite), else decoded and
    compared with ==, `_checked`'s comparison. A payload holding NaN or Infinity
    (a NaN is never equal to itself) is left to `_checked`: the scanner raises on
    them (`_scan_finite`), which costs nothing per row.

    The encoded columns other than seq, created_at and prev_hash (who, from where,
    what, on which target and change) repeat from row to row: their encoded pieces
    are kept for up to LIMIT distinct combinations (then forgotten, so memory stays
    flat), with a free slot where the CSV export keeps that middle's cells (one
    cache, one lookup per row)."""

    LIMIT = 1024

    def __init__(self) -> None:
        self._pieces: dict[tuple[Any, ...], list[str | None] | None] = {}

    def __call__(self, row: tuple[Any, ...]) -> tuple[str, str, list[str | None]] | None:
        seq, canonical, created_at, payload, prev_hash = row[0], row[1], row[3], row[14], row[15]
        if canonical is None or type(seq) is not int or type(prev_hash) is not str:
            return None
        key = row[4:14]  # actor_id .. outcome
        try:
            pieces = self._pieces[key]
        except KeyError:
            if len(self._pieces) >= self.LIMIT:
                self._pieces.clear()
            pieces = self._pieces[key] = self._encode(*key)
        if pieces is None:
            return None
        # fromisoformat(when) == _moment(created_at): `_checked` takes `when` as the hashed
        # string. isoformat() is digits, "-", ":", "T", "." and "+": the same inside JSON quotes.
        if type(created_at) is str:  # SQLite: the text Django wrote (UTC without an offset; `_raw_rows`)
            # parse_datetime's first step; where it fails, so does the shortcut (`_moment` decides).
            try:
                created_at = _fromisoformat(created_at)
            except ValueError:
                return None
        if type(created_at) is not datetime:
            return None
        # Naive: UTC (SQLite), as `_moment` reads it.
        when = created_at.isoformat() + "+00:00" if created_at.tzinfo is None else created_at.isoformat()
        before, after, last, _cells = pieces
        head = f'{before}"{when}"{after}'
        tail = f',"prev_hash":{_enc(prev_hash)},"seq":{seq}{last}'
        start, end = len(head), len(canonical) - len(tail)
        if start > end or not canonical.startswith(head) or not canonical.endswith(tail):
            return None
        text = canonical[start:end]
        try:
            hashed, stop = _scan_finite(text, 0)  # the canonical text must decode, as `_checked` decodes it
            if stop != len(text):
                return None
            if payload == text:
                return when, text, pieces
            if type(payload) is str:
                stored = _loads(payload)
            elif type(payload) is bytes:
                stored = json.loads(payload)
            else:
                return None
        except (StopIteration, ValueError):
            return None
        return (when, text, pieces) if stored == hashed else None

    @staticmethod
    def _encode(actor_id: Any, actor_username: Any, origin: Any, client_ip: Any, user_agent: Any, action: Any,
                target_id: Any, target_name: Any, change_id: Any, outcome: Any) -> list[str | None] | None:
        """The canonical text's pieces around created_at, and after seq (sorted keys),
        and None (the CSV cells, filled in by `events_csv`); None when a column is not
        of a hashed field's type."""
        try:
            return [f'{{"action":{_enc(action)},"actor_id":{_int(actor_id)},"actor_username":{_enc(actor_username)},'
                    f'"change_id":{_int(change_id)},"client_ip":{"null" if client_ip is None else _enc(client_ip)},'
                    f'"created_at":',
                    f',"origin":{_enc(origin)},"outcome":{_enc(outcome)},"payload":',
                    f',"target_id":{_int(target_id)},"target_name":{_enc(target_name)},'
                    f'"user_agent":{_enc(user_agent)}}}', None]
        except TypeError:
            return None


_scan = json.JSONDecoder().scan_once  # the C scanner json.loads() ends in, as json.loads() builds it


class _NonFinite(ValueError):
    """A NaN or Infinity in a payload `_Intact` scans: left to `_checked`."""


def _non_finite(name: str) -> Any:
    raise _NonFinite(name)


# The same scanner, but NaN, Infinity and -Infinity raise instead of decoding (its only hook for them).
_scan_finite = json.JSONDecoder(parse_constant=_non_finite).scan_once


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
    Django wrote, in UTC without an offset, read as Django's sqlite3 converter reads
    it (parse_datetime: None when not well formatted, ValueError when no valid time)."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def withheld_line(seq: int, prev_hash: str, hash_: str) -> str:
    """The line of an event the export leaves out: its link alone. Nothing else of
    the event, not even its action or target (the verifier rejects any other key)."""
    return dumps_line({"type": "withheld", "seq": seq, "prev_hash": prev_hash, "hash": hash_})


def mismatch_line(seq: int, fields: list[str]) -> str:
    """The line that tells the verifier the server's row for `seq` disagrees with
    its hashed record (the event line before it shows the hashed record)."""
    return dumps_line({"type": "column_mismatch", "seq": seq, "fields": fields})


def _event_lines(events: QuerySet[AuditEvent], *, shortcut: bool = True) -> Iterator[tuple[int, str]]:
    """(seq, line) per event: spliced from the stored canonical text, or encoded
    from the decoded row for events written before that column existed; after an
    event whose columns disagree with its canonical text, its column_mismatch line.
    An event whose `visible` flag is false: its withheld line (its columns are not
    compared: whoever may read them exports them whole and sees a mismatch there).
    shortcut=False decodes every row (`_checked`) instead of trying `_Intact` first:
    the same lines, slower (the tests compare the two)."""
    intact = _Intact()
    withholds = _withholds(events)
    for row in _raw_rows(events):
        if withholds and not row[_VISIBLE]:
            yield row[0], withheld_line(row[0], row[_PREV_HASH], row[_HASH])
            continue
        if shortcut and intact(row) is not None:
            yield row[0], spliced_event_line(row[1], row[2])
            continue
        seq, canonical, hash_, _hashed, bad = _checked(row)
        if canonical is not None:
            yield seq, spliced_event_line(canonical, hash_)
            if bad:
                yield seq, mismatch_line(seq, bad)
        else:
            (event,) = _rows(AuditEvent.objects.filter(seq=seq))
            yield seq, dumps_line(event_record(event))


def events_jsonl(events: QuerySet[AuditEvent], *, shortcut: bool = True) -> Iterator[bytes]:
    """One JSON object per line, sorted keys, ASCII: an event line (or withheld
    line) per event, and right after the event a checkpoint signs, that
    checkpoint's line (a withheld event's too: it signs only seq and hash)."""
    checkpoints = _Checkpoints()
    lines: list[str] = []
    size = 0
    last = None
    for seq, line in _event_lines(events, shortcut=shortcut):
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


def events_csv(events: QuerySet[AuditEvent], *, shortcut: bool = True) -> Iterator[bytes]:
    """A header, then one row per event: the record's keys as columns, the
    payload as compact JSON text. Checkpoints are in the JSON Lines export only.
    An event the export withholds (`visible` false): a row with only seq,
    prev_hash and hash, every other cell empty (no event has an empty created_at).
    shortcut=False decodes every row (`_checked`) instead of trying `_Intact`
    first: the same bytes, slower (the tests compare the two)."""
    columns = csv_columns()
    rows = CsvRows(columns)
    out, writerow = rows.out, rows.writerow
    if columns[:columns.index("payload")] != ["seq", *_COMPARED[:11]]:
        raise ValueError(f"unexpected CSV columns {columns}")  # the order of the cells taken from `row` below
    writerow(columns)
    intact, intact_row, middle_cells = _Intact(), rows.intact, rows.middle_cells
    withholds = _withholds(events)
    for row in _raw_rows(events):
        if withholds and not row[_VISIBLE]:
            writerow(withheld_cells(columns, row[0], row[_PREV_HASH], row[_HASH]))
            if out.size >= OUTPUT_CHUNK:
                yield out.take()
            continue
        proven = intact(row) if shortcut else None
        if proven is not None:  # nearly every row: its cells are its columns (equal to the hashed values)
            when, payload, pieces = proven
            cells = pieces[3]
            if cells is None:  # kept next to the pieces _Intact encoded for the same middle (actor .. outcome)
                cells = pieces[3] = middle_cells(row[4:14])
            intact_row(row[0], when, cells, payload, row[15], row[2], row)
            if out.size >= OUTPUT_CHUNK:
                yield out.take()
            continue
        seq, canonical, hash_, hashed, bad = _checked(row)
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
