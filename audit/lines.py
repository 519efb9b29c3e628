"""The export's line formats, apart from the export that streams them: the JSON
Lines encoder (the same bytes the offline verifier expects), CSV cells a
spreadsheet will not run as formulas, and the buffer the CSV writer fills."""

from __future__ import annotations

import json
from datetime import UTC, datetime
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


# A spreadsheet runs a cell that starts like a formula (CSV injection): user
# agents, usernames and actions are text someone else chose. Such a cell gets a
# leading apostrophe; the JSON Lines export is the exact (hashable) form.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    if type(value) is str:  # most cells: checked first
        return "'" + value if value.startswith(_FORMULA_START) else value
    if value is None:
        return ""
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
