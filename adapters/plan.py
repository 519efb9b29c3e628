"""The kind-free plan model: keyed state changed by compare-and-swap steps.

Every target kind keeps its live state as key -> value: a key is (name, type), a
value is (ttl, sorted tuple of canonical strings) or absent (None). DNS reads that
as (owner, rdtype) -> (TTL, rdata); another kind picks its own meaning for the two
halves (the in-memory test kind uses ttl 0). A `Plan` is the steps and guards for
one scope (`zone`: the DNS zone, or the kind's name for what a target manages).

The canonical JSON and the fingerprint are the contract with every stored approval:
the field names ("name", "type", "ttl", "rdatas", "zone", "steps", "guards") and
the serialization must never change (tests/adapters/test_fingerprints_pinned.py).
These classes moved here verbatim from the DNS adapter's base module, which re-exports them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class RRKey(NamedTuple):
    """A keyed value's identity: (name, type), e.g. the absolute lower-case owner
    name "www.demo.test." and type "A" for DNS."""

    name: str
    rdtype: str

    def __str__(self) -> str:
        return f"{self.name} {self.rdtype}"


@dataclass(frozen=True)
class RRValue:
    """A keyed value: TTL and the sorted, de-duplicated items in canonical text form,
    so that equal values compare equal."""

    ttl: int
    rdatas: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"ttl": self.ttl, "rdatas": list(self.rdatas)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> RRValue | None:
        if data is None:
            return None
        return cls(ttl=int(data["ttl"]), rdatas=tuple(data["rdatas"]))


# Kind-neutral names for the same classes (DNS code keeps the RR* names).
Key = RRKey
Value = RRValue


@dataclass(frozen=True)
class Step:
    """One compare-and-swap step: the value at `key` goes from `before` to `after`
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
    safe as a whole-target read (DNS: "no CNAME at a name that gets other data")."""

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
    """An ordered list of steps for one scope, with the guards that back them.

    The fingerprint is a SHA-256 over the canonical JSON serialization: an approval
    binds to it, so two plans with the same fingerprint do exactly the same thing.
    """

    zone: str
    steps: tuple[Step, ...]
    guards: tuple[Guard, ...] = ()
    # Advice for the reviewer (DNS: an MX whose in-zone target has no address). Not
    # part of the canonical form, the fingerprint or equality: an approval binds to
    # what the plan does, and a warning changes nothing it does. Not kept by
    # to_json/from_json either: whoever stores a plan stores its warnings beside it.
    warnings: tuple[str, ...] = field(default=(), compare=False)

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
