"""The target-kind registry: the one module outside the adapter packages that
imports a concrete kind (issue 11). Generic code asks `kind_of(target)` or
`kind_named(name)` and talks to the `adapters.TargetKind` it gets back; adding a
kind is one line here and nothing in generic code.

Tests may add a kind of their own for one test with `REGISTRY.registered(kind)`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

from adapters import AdapterError, Registry, TargetKind
from changes.errors import TargetUnavailable
from dns_adapters.kind import DNS
from firewall_adapters.kind import NFT

REGISTRY = Registry()
REGISTRY.register(DNS)
REGISTRY.register(NFT)


class _HasKind(Protocol):
    kind: str


def kind_named(name: str) -> TargetKind:
    """The registered kind `name`; raises adapters.UnknownKind (a LookupError)."""
    return REGISTRY.get(name)


def kind_of(target: _HasKind) -> TargetKind:
    return REGISTRY.get(target.kind)


def risk_description(flag: str, default: str | None = None) -> str:
    """What a risk flag means (whichever kind raises it); `default` (else the flag
    itself) for a flag no registered kind knows."""
    description = REGISTRY.risk_description(flag)
    if description is not None:
        return description
    return flag if default is None else default


@contextlib.contextmanager
def target_unavailable_on_adapter_error(target: Any, *, what: str | None = None) -> Iterator[None]:
    """Turn an adapter failure inside the block into TargetUnavailable("target NAME:
    why"), keeping whether a retry can help. The one place for this mapping: the
    services, selectors and the pipeline all reach live targets through it.
    ItemValidationError is an AdapterError too; callers that map it to field errors
    catch it inside the block."""
    try:
        yield
    except AdapterError as exc:
        prefix = what if what is not None else f"target {target.name}"
        raise TargetUnavailable(f"{prefix}: {exc.message}", permanent=exc.permanent) from None
