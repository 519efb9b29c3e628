"""A target kind is one object: everything generic code needs to know about DNS
zones (or, next, firewalls) without importing the concrete adapter.

Generic code (services, pipeline, drift, audit, API, admin) asks the registry for
`target.kind` and talks only to the `TargetKind` it gets back. Exactly one module
outside the adapter packages builds the registry (changes/kinds.py); tests may
register a kind of their own for the length of a test (`Registry.registered`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .interface import Adapter, Snapshot
from .plan import Plan, RRKey, RRValue


@dataclass(frozen=True)
class PatchItem:
    """One raw item parsed from patch text, with the 1-based line it came from, so a
    rejected item can name its line."""

    line: int
    item: dict[str, Any]


@dataclass(frozen=True)
class CheckContext:
    """What a round knows about the change it checks: the applied plan and when it was
    applied (the time a cache's stale rule counts from)."""

    plan: Plan
    applied_at: datetime


@dataclass(frozen=True)
class CheckRun:
    """A declared check's result when run with a CheckContext. `stale`: ok only
    because a cache may still hold the plan's old value (the bake does not end on
    it); `decisive`: a definitive wrong answer that fails the bake without a second
    round."""

    ok: bool
    detail: str
    stale: bool = False
    decisive: bool = False


@dataclass(frozen=True)
class CheckKind:
    """A health-check type a kind adds to the generic ones (tcp, http).

    `validate(check, bad)` returns the normalized fields of one declared check,
    calling `bad(field, message)` for every invalid one; `run(check)` runs a
    normalized check and returns (ok, detail); it may raise, the caller turns any
    exception into a failed outcome. `run_in(check, context)`, when the kind has
    one, is used instead of `run` in a round that knows the applied change: it may
    judge an answer against the plan (DNS: a cached old answer is stale, not wrong)."""

    name: str
    fields: frozenset[str]
    validate: Callable[[Mapping[str, Any], Callable[[str, str], None]], dict[str, Any]]
    run: Callable[[Mapping[str, Any]], tuple[bool, str]]
    describe: Callable[[Mapping[str, Any]], str]
    run_in: Callable[[Mapping[str, Any], CheckContext], CheckRun] | None = None


@dataclass(frozen=True)
class TargetKind:
    """Everything kind-specific, as plain callables and data (no Django).

    - name: the value stored in Target.kind.
    - adapter_class: its `validate_config` normalizes a config, its constructor
      `(config, key_dir=...)` opens the live target.
    - secret_fields: config fields naming secrets (file references for DNS); they are
      masked wherever config leaves the server and never appear in errors.
    - item_ops / patch_syntax / parse_patch / item_json: what an engineer writes and
      how a validated item is stored.
    - parse_key(config, name, type): a (key, [(field, message)]) for one live read.
    - value_lines(key, value): the lines a value is shown as (diff, admin).
    - diff(plan): the unified diff text of a plan.
    - risks / risk_flags(plan, item_count=, config=): flags needing a reviewer's attention
      (config: the target's normalized config, e.g. the firewall's management port).
    - rollback_items(plan): raw items that undo an applied plan (its inverse).
    - drift_ignores(key) / drift_comparable(key text, value json): snapshot
      normalisation for drift detection: keys the target maintains itself (DNSSEC
      signatures) are not tracked, and a value is compared in a form that masks what
      changes on every write (the SOA serial).
    - check_kinds: extra declared health-check types.
    - cache_seconds(plan): (seconds, key): how long a consumer may keep serving what
      the plan replaces (DNS: the largest TTL among the steps' `before` values) and the
      key holding it; (0, None) for a kind whose old state nobody caches. The bake
      lasts at least that long (pipeline/bake_time.py).
    """

    name: str
    label: str
    adapter_class: type[Adapter]
    secret_fields: frozenset[str]
    item_ops: tuple[str, ...]
    patch_syntax: str
    parse_patch: Callable[[str], list[PatchItem]]
    item_json: Callable[[Any], dict[str, Any]]
    parse_key: Callable[[Mapping[str, Any], Any, Any], tuple[RRKey | None, list[tuple[str, str]]]]
    value_lines: Callable[[RRKey, RRValue | None], list[str]]
    diff: Callable[[Plan], str]
    risks: Mapping[str, str]
    risk_flags: Callable[..., list[str]]
    rollback_items: Callable[[Plan], list[dict[str, Any]]]
    drift_ignores: Callable[[RRKey], bool] = lambda key: False
    drift_comparable: Callable[[str, Mapping[str, Any] | None], Any] = lambda key, value: value
    check_kinds: tuple[CheckKind, ...] = field(default_factory=tuple)
    cache_seconds: Callable[[Plan], tuple[int, RRKey | None]] = lambda plan: (0, None)

    def validate_config(self, config: Any, *, key_dir: str | os.PathLike[str]) -> dict[str, Any]:
        return self.adapter_class.validate_config(config, key_dir=key_dir)

    def adapter(self, config: Mapping[str, Any], *, key_dir: str | os.PathLike[str]) -> Adapter:
        return self.adapter_class(config, key_dir=key_dir)

    def snapshot_records(self, snapshot: Snapshot) -> dict[str, dict[str, Any]]:
        """A whole-target read as drift records: "name type" -> {"ttl", "rdatas"}."""
        return {str(key): value.to_json() for key, value in snapshot.items() if not self.drift_ignores(key)}


class UnknownKind(LookupError):
    pass


class Registry:
    """Kinds by name. Built once at import of the registration module."""

    def __init__(self) -> None:
        self._kinds: dict[str, TargetKind] = {}

    def register(self, kind: TargetKind) -> None:
        if kind.name in self._kinds:
            raise ValueError(f"target kind {kind.name!r} is already registered")
        self._kinds[kind.name] = kind

    def unregister(self, name: str) -> None:
        self._kinds.pop(name, None)

    @contextlib.contextmanager
    def registered(self, kind: TargetKind) -> Iterator[TargetKind]:
        """A kind known only inside the block (tests)."""
        self.register(kind)
        try:
            yield kind
        finally:
            self.unregister(kind.name)

    def get(self, name: str) -> TargetKind:
        try:
            return self._kinds[name]
        except KeyError:
            raise UnknownKind(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def names(self) -> list[str]:
        return list(self._kinds)

    def all(self) -> list[TargetKind]:
        return list(self._kinds.values())

    def risk_description(self, flag: str) -> str | None:
        for kind in self._kinds.values():
            if flag in kind.risks:
                return kind.risks[flag]
        return None

    def check_kind(self, name: str) -> CheckKind | None:
        for kind in self._kinds.values():
            for check in kind.check_kinds:
                if check.name == name:
                    return check
        return None

