"""The CLI's errors and exit codes: what went wrong decides the exit code."""

from __future__ import annotations

from typing import Any

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class UsageError(Exception):
    """Bad command line or missing configuration: exit 2, nothing was sent."""


class CannotConnect(Exception):
    """The server did not answer at all: exit 3."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot connect to {url}: {reason}")
        self.url = url


class ApiError(Exception):
    """The server answered with an HTTP error: exit 1."""

    def __init__(self, status: int, body: Any, reason: str = "") -> None:
        self.status = status
        self.body = body
        self.detail = _error_detail(status, body, reason)
        self.field_errors = _field_errors(body)
        super().__init__(self.detail)


def _error_detail(status: int, body: Any, reason: str) -> str:
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return body["detail"]
    if isinstance(body, dict) and body:
        return "the request was rejected"  # DRF serializer shape {field: [messages]}
    return f"HTTP {status} {reason}".strip()


def _field_errors(body: Any) -> list[str]:
    """Each error as "field: message (line N)", from our {"errors": [...]} shape or
    DRF's plain {field: [messages]} shape."""
    if not isinstance(body, dict):
        return []
    lines: list[str] = []
    errors = body.get("errors")
    if isinstance(errors, list):
        for error in errors:
            if not isinstance(error, dict):
                lines.append(str(error))
                continue
            field = str(error.get("field") or "")  # already a full path: "items[0].records[0]"
            text = f"{field}: {error.get('message', '')}" if field else str(error.get("message", ""))
            if error.get("line"):
                text += f" (line {error['line']})"
            lines.append(text)
        return lines
    for field, messages in body.items():
        if field in ("detail", "code"):
            continue
        for message in messages if isinstance(messages, list) else [messages]:
            lines.append(f"{field}: {message}")
    return lines
