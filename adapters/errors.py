"""Adapter errors, the same for every kind. Every adapter error says whether
retrying can help; messages never carry a secret (the contract suite checks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .plan import RRKey, RRValue


class AdapterError(Exception):
    """Base of every adapter failure. `permanent` means retrying will not help."""

    permanent: bool = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(AdapterError):
    """The target configuration is wrong, or the target refuses us (DNS: REFUSED,
    NOTAUTH, BADKEY, unreadable key file). A human must fix something; never retried."""

    permanent = True


class TransientError(AdapterError):
    """Timeout or connection failure: nothing is known to have changed; safe to retry."""

    permanent = False


class DriftError(AdapterError):
    """Live state no longer matches the plan's `before`: somebody changed the target
    since the plan was read. `keys` names the values that moved."""

    permanent = True

    def __init__(self, message: str, *, keys: Sequence[RRKey], live: Mapping[RRKey, RRValue | None]) -> None:
        super().__init__(message)
        self.keys = list(keys)
        self.live = dict(live)


@dataclass(frozen=True)
class FieldError:
    """One rejected value: item index (None for a top-level field), field, why."""

    index: int | None
    field: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


class ItemValidationError(AdapterError):
    """Change items (or a target config) were rejected; `errors` names every bad item and field."""

    permanent = True

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"item {e.index} {e.field}: {e.message}" for e in self.errors))
