"""Structured logging: the change id on every line, JSON on request, no secrets.

`log_context(change_id=...)` marks everything logged inside it (in this thread or
task) as being about that change; `ChangeContextFilter` copies the id onto each
record, and both formatters print it. Wired in `config.settings.base.LOGGING`
(`LOG_JSON=true` picks `JSONFormatter`).

Named `logs`, not `logging`, so that `changes.logging` can never be mistaken for
(or shadow) the standard library module.

Imported while Django configures logging, before the apps are loaded: stdlib only.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_change_id: ContextVar[int | None] = ContextVar("changegate_change_id", default=None)


@contextmanager
def log_context(*, change_id: int | None) -> Iterator[None]:
    """Tag every record logged inside the block with `change_id`. Nests and
    restores the outer value on exit; contextvars keep threads and tasks apart."""
    token = _change_id.set(change_id)
    try:
        yield
    finally:
        _change_id.reset(token)


def current_change_id() -> int | None:
    return _change_id.get()


class ChangeContextFilter(logging.Filter):
    """Sets `record.change_id` from `log_context` unless the call passed one in `extra`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "change_id", None) is None:
            record.change_id = _change_id.get()
        return True


# ---------------------------------------------------------------------------
# Redaction. Cheap guards, not a data-loss-prevention system: values under
# secret-looking keys in `extra`, and the password in any URL's userinfo
# (broker and database URLs end up in exception messages).

_SECRET_KEY = re.compile(r"secret|passw|token|authorization|api_?key|private_?key|credential|cookie|session",
                         re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]+@", re.IGNORECASE)
REDACTED = "***"


def redact_urls(text: str) -> str:
    """`redis://:pw@host` -> `redis://:***@host`, anywhere in the text."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{REDACTED}@", text)


def redact(key: str, value: Any) -> Any:
    """The value to log for `key`: masked when the key looks secret. Numbers stay:
    an execution's fencing `token` is a counter, not a credential."""
    if isinstance(value, dict):
        return {str(k): redact(str(k), v) for k, v in value.items()}
    if _SECRET_KEY.search(key) and not isinstance(value, (bool, int, float, type(None))):
        return REDACTED
    if isinstance(value, (list, tuple)):
        return [redact(key, v) for v in value]
    if isinstance(value, str):
        return redact_urls(value)
    return value


# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "change_id", "change_prefix", "taskName",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")}


def _change_of(record: logging.LogRecord) -> int | None:
    # A handler without the filter still gets the id from the context.
    change_id = getattr(record, "change_id", None)
    return change_id if change_id is not None else _change_id.get()


class PlainFormatter(logging.Formatter):
    """`time LEVEL logger change=<id> message`; `change=` only inside a `log_context`."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, **kwargs: Any) -> None:
        super().__init__(fmt or "%(asctime)s %(levelname)s %(name)s %(change_prefix)s%(message)s", datefmt, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        change_id = _change_of(record)
        record.change_prefix = f"change={change_id} " if change_id is not None else ""
        return redact_urls(super().format(record))


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, change_id, the
    redacted `extra` fields, and exc_info (the formatted traceback) if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_urls(record.getMessage()),
            "change_id": _change_of(record),
        }
        for key, value in _extras(record).items():
            if key not in entry:
                entry[key] = redact(key, value)
        if record.exc_info:
            entry["exc_info"] = redact_urls(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exc_info"] = redact_urls(record.exc_text)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
