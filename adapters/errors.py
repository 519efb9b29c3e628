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


class PartialApplyError(AdapterError):
    """The target said yes (DNS: NOERROR) but reading the plan's keys back found some
    of them not at `after`: the target silently dropped part of the change. The
    adapter has already tried to put `before` back (conditionally: only where the
    live value is still what its read-back saw). `keys` are the keys that did not
    land, `live` what the read-back found, `restored` whether every key is at
    `before` again, `elapsed_ms` the time from sending the change to the end of the
    restore. Permanent: the same plan would be dropped the same way."""

    permanent = True

    def __init__(self, message: str, *, keys: Sequence[RRKey], live: Mapping[RRKey, RRValue | None],
                 restored: bool, elapsed_ms: float) -> None:
        super().__init__(message)
        self.keys = list(keys)
        self.live = dict(live)
        self.restored = restored
        self.elapsed_ms = elapsed_ms


class DataRefusedError(AdapterError):
    """The target refused the change because of its data, although our credentials
    may change it (DNS: REFUSED to an UPDATE while an empty UPDATE with the same key
    is accepted; BIND refuses e.g. an MX or SRV whose in-zone target has no address).
    The records must change, not the target's configuration. Nothing was applied."""

    permanent = True


class TargetReverted(AdapterError):
    """The target undid an applied change by itself: a commit-confirmed revert
    (nftables) whose deadline passed before changegate confirmed it. The change is
    not live; the pipeline records it as rolled back, with this reason."""

    permanent = True

