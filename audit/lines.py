"""The export's line formats, apart from the export that streams them: the JSON
Lines encoder (the same bytes the offline verifier expects), CSV cells a
spreadsheet will not run as formulas, and the buffer the CSV writer fills."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from audit.chain import event_record
from changes.models import AuditEvent

# The one line format, shared with the offline verifier's expectations: the same
# bytes as json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True),
# from one encoder built once (json.dumps builds a JSONEncoder per call). No cycle
# check: what is encoded was read from the database and cannot hold a cycle.
dumps_line = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, check_circular=False).encode


def csv_columns() -> list[str]:
    """The event keys of a JSON Lines record, in record order, without "type"; last,
    `column_mismatch`: the fields whose database column disagrees with the hashed
    record the row shows (empty for an intact row)."""
    blank = AuditEvent(seq=0, created_at=datetime(1970, 1, 1, tzinfo=UTC), payload={}, prev_hash="", hash="")
    return [key for key in event_record(blank) if key != "type"] + ["column_mismatch"]


def withheld_cells(columns: list[str], seq: int, prev_hash: str, hash_: str) -> list[str]:
    """The CSV row of an event the export withholds: its link (seq, prev_hash, hash)
    and nothing else; every other cell empty, so an empty created_at marks it."""
    link = {"seq": seq, "prev_hash": prev_hash, "hash": hash_}
    return [_cell(link[column]) if column in link else "" for column in columns]


# A spreadsheet runs a cell that starts like a formula (CSV injection): user
# agents, usernames and actions are text someone else chose. Such a cell gets a
# leading apostrophe; the JSON Lines export is the exact (hashable) form.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if type(value) is str:  # most cells: checked first
        return "'" + value if value.startswith(_FORMULA_START) else value
    if value is None:
        return ""
    if type(value) is int:  # ids and seq; only a negative one starts like a formula ("-")
        return str(value) if value >= 0 else "'" + str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return dumps_line(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


class _Lines:
    """A write() target for csv.writer that keeps what it was given."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def write(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)

    def take(self) -> bytes:
        data = "".join(self.parts).encode("utf-8")
        self.parts, self.size = [], 0
        return data


class CsvRows:
    """The CSV export's writer: rows into a `_Lines` buffer, the same bytes as
    `csv.writer().writerow([_cell(record.get(column)) for column in columns])`."""

    def __init__(self, columns: list[str]) -> None:
        self.out = _Lines()
        self.writerow = csv.writer(self.out).writerow  # excel dialect: ",", '"' doubled, "\r\n"
        payload_at = columns.index("payload")
        if columns[payload_at:] != ["payload", "prev_hash", "hash", "column_mismatch"]:
            raise ValueError(f"unexpected CSV columns {columns}")  # the layout `stored` assumes
        self._head = itemgetter(*columns[:payload_at])
        self._clean: str | None = None  # the last hash `intact` found to be ASCII letters and digits
        self._scratch = _Lines()  # where the cells of a middle are written once
        self._scratch_row = csv.writer(self._scratch).writerow

    def stored(self, canonical: str, hashed: dict[str, Any], hash_: str, bad: list[str]) -> bool:
        """Write the row of an event from its stored canonical text and the hashed
        record decoded from it (hash and mismatching fields from the row): the
        payload cell is the stored compact JSON cut out as it stands. False, nothing
        written, when the record lacks a column (the caller writes the cells itself)."""
        try:
            values = self._head(hashed)
            prev_hash = hashed["prev_hash"]
        except KeyError:
            return False
        payload = canonical[canonical.find(',"payload":') + 11:canonical.rfind(',"prev_hash":')]
        self.write(values, payload, prev_hash, hash_, " ".join(bad))
        return True

    def write(self, values: tuple[Any, ...], payload: str, prev_hash: Any, hash_: str, mismatch: str) -> None:
        """Write one row: `values` are the cells before the payload, in column order
        (as hashed), `payload` the payload's compact JSON text from the canonical
        text, as it stands (a payload is an object: it starts with "{", never a formula).
        This is the export's per-row cost at a million rows, hence the shortcuts,
        each giving `_cell`'s bytes."""
        formula = _FORMULA_START
        # What the csv writer already writes as `_cell` would: a string that cannot
        # be a formula, None (""), a non-negative int.
        self.writerow([v if (type(v) is str and not v.startswith(formula)) or v is None
                       or (type(v) is int and v >= 0) else _cell(v) for v in values])
        # The payload, about 600 of a row's 900 bytes, is quoted here with two C
        # string scans instead of the csv writer's per-character loop (a third of
        # the row's cost): QUOTE_MINIMAL quotes a field holding the delimiter, the
        # quote character or a line-terminator character, doubling the quotes. The
        # writer wrote the head as one line; its "\r\n" becomes the payload's cell.
        if '"' in payload or "," in payload or "\r" in payload or "\n" in payload:
            payload = '"' + payload.replace('"', '""') + '"'
        parts = self.out.parts
        parts[-1] = f"{parts[-1][:-2]},{payload},"
        self.out.size += len(payload)
        self.writerow([_cell(prev_hash), _cell(hash_), _cell(mismatch)])

    def middle_cells(self, middle: tuple[Any, ...]) -> str:
        """The cells of `middle` (actor .. outcome) as `write` writes them, joined by
        their commas, for `intact` (the caller keeps them per distinct middle: they
        repeat from row to row)."""
        self._scratch_row([_cell(v) for v in middle])
        return self._scratch.take().decode("utf-8")[:-2]

    def intact(self, seq: int, when: str, cells: str, payload: str, prev_hash: str, hash_: str,
               row: tuple[Any, ...]) -> None:
        """The row of an event whose columns say what its hashed record says (the
        export checked them): the same bytes as `write((seq, when, *row[4:14]),
        payload, prev_hash, hash_, "")`, in one f-string. `when` is an isoformat()
        (digits first, nothing to quote); `cells` is `middle_cells(row[4:14])`."""
        # Hex digests: nothing to quote, never a formula. Anything else: the general way. ASCII letters
        # and digits alone, checked on the bytes (str.isalnum looks every character up in the Unicode
        # database: a tenth of the row), and only once per digest: a row's prev_hash is the row before's hash.
        if type(seq) is not int or seq < 0 or type(hash_) is not str or not (
                (prev_hash == self._clean or (prev_hash.isascii() and prev_hash.encode().isalnum()))
                and hash_.isascii() and hash_.encode().isalnum()):
            self.write((seq, when, *row[4:14]), payload, prev_hash, hash_, "")
            return
        self._clean = hash_
        if '"' in payload or "," in payload or "\r" in payload or "\n" in payload:
            payload = '"' + payload.replace('"', '""') + '"'
        line = f"{seq},{when},{cells},{payload},{prev_hash},{hash_},\r\n"
        self.out.parts.append(line)
        self.out.size += len(line)
