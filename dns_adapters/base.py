"""The DNS adapter interface that `changes` uses for every DNS target.

A zone is keyed state: key = (owner name, rdtype), value = (ttl, set of rdata) or
absent. A change is planned into compare-and-swap `Step`s whose `before` was read
from the live server; applying the plan is conditional on every `before` still
being live. Nothing in this package imports Django or the `changes` models.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# ---------------------------------------------------------------------------
# Values


class RRKey(NamedTuple):
    """An RRset's identity: absolute lower-case owner name ("www.demo.test.") and type ("A")."""

    name: str
    rdtype: str

    def __str__(self) -> str:
        return f"{self.name} {self.rdtype}"


# A guard on the pseudo-type ANY with value None means "the name is not in use"
# (RFC 2136 section 2.4.5); it backs a CNAME added at a name that held nothing.
ANY = "ANY"


@dataclass(frozen=True)
class RRValue:
    """An RRset's content: TTL and the sorted, de-duplicated rdata in canonical
    presentation form (absolute names), so that equal RRsets compare equal."""

    ttl: int
    rdatas: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"ttl": self.ttl, "rdatas": list(self.rdatas)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RRValue | None:
        if data is None:
            return None
        return cls(ttl=int(data["ttl"]), rdatas=tuple(data["rdatas"]))


@dataclass(frozen=True)
class Step:
    """One compare-and-swap step: the RRset at `key` goes from `before` to `after`
    (None = absent). Applying it requires `before` to still be live."""

    key: RRKey
    before: RRValue | None
    after: RRValue | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.key.name,
            "type": self.key.rdtype,
            "before": self.before.to_json() if self.before else None,
            "after": self.after.to_json() if self.after else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Step:
        return cls(
            key=RRKey(data["name"], data["type"]),
            before=RRValue.from_json(data["before"]),
            after=RRValue.from_json(data["after"]),
        )

    def inverse(self) -> Step:
        return Step(key=self.key, before=self.after, after=self.before)


@dataclass(frozen=True)
class Guard:
    """A condition on live state that is not itself changed: `key` must hold exactly
    `value` (None = absent) when the plan is applied. Guards make a targeted read as
    safe as a whole-zone read: "no CNAME at a name that gets other data", "name not
    in use" for a new CNAME."""

    key: RRKey
    value: RRValue | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.key.name,
            "type": self.key.rdtype,
            "value": self.value.to_json() if self.value else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Guard:
        return cls(key=RRKey(data["name"], data["type"]), value=RRValue.from_json(data["value"]))


@dataclass(frozen=True)
class Plan:
    """An ordered list of steps for one zone, with the guards that back them.

    The fingerprint is a SHA-256 over the canonical JSON serialization: an approval
    binds to it, so two plans with the same fingerprint do exactly the same thing.
    """

    zone: str
    steps: tuple[Step, ...]
    guards: tuple[Guard, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "zone": self.zone,
            "steps": [step.to_json() for step in self.steps],
            "guards": [guard.to_json() for guard in self.guards],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        return cls(
            zone=data["zone"],
            steps=tuple(Step.from_json(s) for s in data["steps"]),
            guards=tuple(Guard.from_json(g) for g in data.get("guards", ())),
        )

    def canonical(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    @property
    def is_empty(self) -> bool:
        return not self.steps

    def keys(self) -> list[RRKey]:
        return [step.key for step in self.steps]

    def inverse(self) -> Plan:
        """The rollback plan: after -> before for every step, conditional on `after`
        being live. Guards are dropped: they protected the forward change only."""
        return Plan(zone=self.zone, steps=tuple(step.inverse() for step in reversed(self.steps)))


# ---------------------------------------------------------------------------
# Change items (what an engineer asks for)

OPS = ("upsert", "delete", "add", "remove")


@dataclass(frozen=True)
class ChangeItem:
    """A validated change item. `name` is absolute and lower-case, `rdatas` canonical.

    upsert: the RRset becomes exactly (ttl, records); delete: the RRset goes away;
    add / remove: single rdata join or leave the RRset (ttl optional for add when
    the RRset exists).
    """

    op: str
    name: str
    rdtype: str
    ttl: int | None
    rdatas: tuple[str, ...]

    @property
    def key(self) -> RRKey:
        return RRKey(self.name, self.rdtype)


# ---------------------------------------------------------------------------
# Errors. Every adapter error says whether retrying can help.


class AdapterError(Exception):
    """Base of every adapter failure. `permanent` means retrying will not help."""

    permanent: bool = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(AdapterError):
    """The target configuration is wrong, or the server refuses us (REFUSED, NOTAUTH,
    BADKEY, unreadable key file). A human must fix something; never retried."""

    permanent = True


class TransientError(AdapterError):
    """Timeout or connection failure: nothing is known to have changed; safe to retry."""

    permanent = False


class DriftError(AdapterError):
    """Live state no longer matches the plan's `before`: somebody changed the zone
    since the plan was read. `keys` names the RRsets that moved."""

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
    """Change items were rejected; `errors` names every bad item and field."""

    permanent = True

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"item {e.index} {e.field}: {e.message}" for e in self.errors))


# ---------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class ApplyResult:
    """What an apply did. `applied` is False when the plan was already live (a
    re-apply is a no-op, never a second apply). `rcode` and `serial` come from the
    server; `detail` is a short human-readable account."""

    applied: bool
    rcode: str
    detail: str
    serial: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"applied": self.applied, "rcode": self.rcode, "detail": self.detail, "serial": self.serial}


@dataclass(frozen=True)
class ServerCheck:
    """One nameserver's answer for one step's key, compared with the step's `after`."""

    server: str
    key: RRKey
    ok: bool
    answer: RRValue | None
    error: str | None = None


@dataclass(frozen=True)
class VerifyReport:
    checks: tuple[ServerCheck, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def by_server(self) -> dict[str, bool]:
        result: dict[str, bool] = {}
        for check in self.checks:
            result[check.server] = result.get(check.server, True) and check.ok
        return result

    def failures(self) -> list[ServerCheck]:
        return [check for check in self.checks if not check.ok]


class ZoneSnapshot(abc.ABC):
    """A whole zone read at one instant (AXFR). Keyed like everything else; rdata may
    be held in canonical wire form and turned into `RRValue` only when asked."""

    zone: str
    serial: int

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of RRsets."""

    @abc.abstractmethod
    def __iter__(self) -> Iterator[RRKey]: ...

    @abc.abstractmethod
    def get(self, key: RRKey) -> RRValue | None: ...

    @abc.abstractmethod
    def matches(self, key: RRKey, value: RRValue | None) -> bool:
        """True when the snapshot holds exactly `value` at `key` (cheap: no parsing)."""

    def items(self) -> Iterator[tuple[RRKey, RRValue]]:
        for key in self:
            value = self.get(key)
            assert value is not None
            yield key, value


# ---------------------------------------------------------------------------
# The interface


class DNSAdapter(abc.ABC):
    """Everything `changes` may do to a live zone. Implementations talk to the
    network; callers never import dnspython's network code themselves."""

    zone: str

    @classmethod
    @abc.abstractmethod
    def validate_config(cls, config: Mapping[str, Any], *, key_dir: str | os.PathLike[str]) -> dict[str, Any]:
        """Return the normalized config or raise ItemValidationError naming the field
        (index None). Secrets are never part of config: only file references, which
        must lie inside `key_dir` (the deployment's key directory; see key_files)."""

    @abc.abstractmethod
    def check_reachable(self) -> int:
        """Read the zone's SOA from the primary over TCP with the key; return its serial.
        Raises ConfigError (refused, bad key, not authoritative) or TransientError."""

    @abc.abstractmethod
    def validate_items(self, items: Sequence[Mapping[str, Any]], *, allow_apex: bool = False) -> list[ChangeItem]:
        """Parse raw items; raise ItemValidationError naming every bad item and field."""

    @abc.abstractmethod
    def read(self, keys: Iterable[RRKey]) -> dict[RRKey, RRValue | None]:
        """The live RRsets for `keys` from the primary (cost proportional to len(keys))."""

    @abc.abstractmethod
    def read_zone(self) -> ZoneSnapshot:
        """The whole zone by AXFR with TSIG."""

    @abc.abstractmethod
    def plan(self, items: Sequence[ChangeItem]) -> Plan:
        """Read what `items` touch and build the plan. No side effects on the zone.
        Raises ItemValidationError when live data makes an item invalid (a CNAME
        beside other data), TransientError/ConfigError when the server cannot be read."""

    @abc.abstractmethod
    def apply(self, plan: Plan) -> ApplyResult:
        """Apply `plan` atomically, conditional on every step's `before` (and every
        guard) being live. Raises DriftError, ConfigError or TransientError; returns
        applied=False when the plan's `after` is already live."""

    def rollback(self, plan: Plan) -> ApplyResult:
        """Undo an applied plan: its inverse, conditional on `after` still being live."""
        return self.apply(plan.inverse())

    @abc.abstractmethod
    def verify(self, plan: Plan) -> VerifyReport:
        """Ask every configured nameserver for every step's key; compare with `after`."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
