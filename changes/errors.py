"""Errors the services raise; every entry point maps them the same way."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ServiceError(Exception):
    status = 400
    code = "invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def extra(self) -> dict[str, Any]:
        """Fields a client needs besides the message (e.g. the current fingerprint)."""
        return {}


class ValidationFailed(ServiceError):
    """Bad input; `errors` lists {"index", "field", "message"} for every rejected value."""

    def __init__(self, errors: Iterable[dict[str, Any]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(_describe(e) for e in self.errors))


def _describe(error: dict[str, Any]) -> str:
    where = f"item {error['index']} " if error.get("index") is not None else ""
    line = f"(line {error['line']}) " if error.get("line") else ""
    return f"{where}{line}{error['field']}: {error['message']}"


class NotPermitted(ServiceError):
    status = 403
    code = "permission_denied"


class InvalidTransition(ServiceError):
    status = 409
    code = "invalid_state"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class TargetUnavailable(ServiceError):
    """The live target could not be read or changed. `permanent` = fix the config."""

    status = 503
    code = "target_unavailable"

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent
        if permanent:
            self.status = 502
            self.code = "target_misconfigured"


class Contention(ServiceError):
    """The database aborted the transaction (deadlock, serialization failure) on
    every attempt (`changes.locking.retry_on_contention`); nothing was written."""

    status = 503
    code = "contention"
    retry_after = 1  # seconds; sent as Retry-After
