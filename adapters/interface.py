"""What generic code may do to a live target, whatever its kind.

Adapters never import Django or the `changes` models; generic code never imports a
concrete adapter (it asks the registry, see adapters.kind). Moved here from
the DNS adapter package's base module, which keeps the DNS-specific parts and re-exports these.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .plan import Plan, RRKey, RRValue


@dataclass(frozen=True)
class ApplyResult:
    """What an apply did. `applied` is False when the plan was already live (a
    re-apply is a no-op, never a second apply). `rcode` and `serial` come from the
    target (DNS: the UPDATE's rcode and the SOA serial); `detail` is a short account."""

    applied: bool
    rcode: str
    detail: str
    serial: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"applied": self.applied, "rcode": self.rcode, "detail": self.detail, "serial": self.serial}


@dataclass(frozen=True)
class ServerCheck:
    """One server's answer for one step's key, compared with the step's `after`."""

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


@dataclass(frozen=True)
class CacheCheck:
    """What one cache in front of the target (DNS: a caching resolver) serves for a
    plan's keys during the bake, compared with the plan. `name` says which cache
    ("resolver 127.0.0.1:5399"), `kind` what it is ("resolver"), `detail` what was
    expected and what came back. `stale`: ok only because the old value may still be
    cached (not proof yet). `decisive`: a definitive wrong answer at a time when no
    cache may still hold the old value; one such answer fails the bake, no second
    round is awaited."""

    name: str
    kind: str
    ok: bool
    detail: str
    stale: bool = False
    decisive: bool = False


class Snapshot(abc.ABC):
    """Everything a target holds, read at one instant (DNS: AXFR). Keyed like
    everything else; values may be held in a cheap form and parsed only when asked."""

    zone: str
    serial: int

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of keyed values."""

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


class MappingSnapshot(Snapshot):
    """A snapshot held as a plain mapping of key -> value (kinds whose whole read is
    small and already parsed: nftables' owned tables, the tests' in-memory kind)."""

    def __init__(self, zone: str, serial: int, values: Mapping[RRKey, RRValue]) -> None:
        self.zone, self.serial, self._values = zone, serial, dict(values)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[RRKey]:
        return iter(sorted(self._values))

    def get(self, key: RRKey) -> RRValue | None:
        return self._values.get(key)

    def matches(self, key: RRKey, value: RRValue | None) -> bool:
        return self._values.get(key) == value


# Kind options (DNS: allow_apex) travel as one mapping so the interface does not
# grow a keyword per kind; an adapter ignores options it does not know.
Options = Mapping[str, Any]


class Adapter(abc.ABC):
    """Everything generic code may do to a live target. Implementations talk to the
    network; callers never import a concrete adapter's network code themselves."""

    zone: str

    @abc.abstractmethod
    def __init__(self, config: Mapping[str, Any], *, key_dir: str | os.PathLike[str]) -> None:
        """Open the target a normalized config names; secrets are read from files
        inside `key_dir` here, never taken from the config itself."""

    @classmethod
    @abc.abstractmethod
    def validate_config(cls, config: Mapping[str, Any], *, key_dir: str | os.PathLike[str]) -> dict[str, Any]:
        """Return the normalized config or raise ItemValidationError naming the field
        (index None). Secrets are never part of config: only file references, which
        must lie inside `key_dir` (the deployment's key directory)."""

    @abc.abstractmethod
    def check_reachable(self, *, prepare: bool = False) -> int:
        """Prove the target answers with our credentials; return its version (DNS: SOA
        serial). With `prepare`, first create what managing it needs and is missing
        (nftables: the owned tables, empty); kinds with nothing to create ignore it.
        Raises ConfigError or TransientError."""

    @abc.abstractmethod
    def validate_items(self, items: Sequence[Mapping[str, Any]], *, options: Options | None = None) -> list[Any]:
        """Parse raw items; raise ItemValidationError naming every bad item and field."""

    @abc.abstractmethod
    def read(self, keys: Iterable[RRKey]) -> dict[RRKey, RRValue | None]:
        """The live values for `keys` (cost proportional to len(keys))."""

    @abc.abstractmethod
    def read_zone(self) -> Snapshot:
        """Everything the target holds, at one instant."""

    @abc.abstractmethod
    def plan(self, items: Sequence[Any], *, options: Options | None = None) -> Plan:
        """Read what `items` touch and build the plan. No side effects on the target.
        Raises ItemValidationError when live data makes an item invalid,
        TransientError/ConfigError when the target cannot be read."""

    @abc.abstractmethod
    def apply(self, plan: Plan) -> ApplyResult:
        """Apply `plan` atomically, conditional on every step's `before` (and every
        guard) being live. Raises DriftError, ConfigError or TransientError; returns
        applied=False when the plan's `after` is already live."""

    def rollback(self, plan: Plan) -> ApplyResult:
        """Undo an applied plan: its inverse, conditional on `after` still being live."""
        return self.apply(plan.inverse())

    def version(self) -> int | None:
        """A cheap number that moves whenever the target changes (nftables: the kernel's
        ruleset generation), or None when the kind has none that cheap (DNS: the SOA
        serial is not trusted to move on every edit). The drift sweep reads the whole
        target only when it moved."""
        return None

    def confirm(self, plan: Plan) -> dict[str, Any] | None:
        """After the bake passed: make the applied `plan` stay (nftables: disarm the
        commit-confirmed revert armed by apply, then write the boot configuration).
        Returns an account for the audit log, or None when the kind has nothing to
        confirm (DNS). Raises TargetReverted when the target already undid the change
        by itself, and AdapterError when it cannot tell."""
        return None

    def reverted(self, plan: Plan) -> str | None:
        """How the target undid the applied `plan` by itself (a commit-confirmed revert
        whose deadline passed while nobody confirmed), or None. Asked before a bake
        and before a rollback, so a change the target already reverted is recorded
        as rolled back instead of failing its checks and its conditional rollback."""
        return None

    @abc.abstractmethod
    def verify(self, plan: Plan) -> VerifyReport:
        """Ask every configured server for every step's key; compare with `after`."""

    def verify_caches(self, plan: Plan, *, applied_at: datetime) -> list[CacheCheck]:
        """Ask every cache the target declares (DNS: its resolvers) for every step's
        key, judged against `after` and, while it may still be cached since
        `applied_at`, `before`. One CacheCheck per cache; none for a kind whose
        values nobody caches (the default). Never raises for a cache that does not
        answer: that is a failed CacheCheck."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
