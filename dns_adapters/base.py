"""The DNS adapter interface that `changes` uses for every DNS target.

A zone is keyed state: key = (owner name, rdtype), value = (ttl, set of rdata) or
absent. A change is planned into compare-and-swap `Step`s whose `before` was read
from the live server; applying the plan is conditional on every `before` still
being live. Nothing in this package imports Django or the `changes` models.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The kind-free plan model, errors and results moved to `adapters` (byte-identical
# canonical form: tests/adapters/test_fingerprints_pinned.py); re-exported here so
# DNS code keeps one import place.
from adapters.errors import (  # noqa: F401 - re-exported
    AdapterError,
    ConfigError,
    DriftError,
    FieldError,
    ItemValidationError,
    TransientError,
)
from adapters.interface import Adapter, ApplyResult, Options, ServerCheck, Snapshot, VerifyReport  # noqa: F401
from adapters.plan import Guard, Plan, RRKey, RRValue, Step  # noqa: F401

# A guard on the pseudo-type ANY with value None means "the name is not in use"
# (RFC 2136 section 2.4.5); it backs a CNAME added at a name that held nothing.
ANY = "ANY"


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


class ZoneSnapshot(Snapshot):
    """A whole zone read at one instant (AXFR). Keyed like everything else; rdata may
    be held in canonical wire form and turned into `RRValue` only when asked."""


# ---------------------------------------------------------------------------
# The interface


class DNSAdapter(Adapter):
    """Everything `changes` may do to a live zone (the generic `Adapter`, with DNS's
    one kind option, allow_apex, also accepted as a keyword for DNS callers).
    Implementations talk to the network; callers never import dnspython's network
    code themselves."""

    zone: str

    @abc.abstractmethod
    def validate_items(self, items: Sequence[Mapping[str, Any]], *, options: Options | None = None,
                       allow_apex: bool = False) -> list[ChangeItem]:
        """Parse raw items; raise ItemValidationError naming every bad item and field."""

    @abc.abstractmethod
    def read_zone(self) -> ZoneSnapshot:
        """The whole zone by AXFR with TSIG."""

    @abc.abstractmethod
    def plan(self, items: Sequence[ChangeItem], *, options: Options | None = None,
             allow_apex: bool = False) -> Plan:
        """Read what `items` touch and build the plan. No side effects on the zone.
        Raises ItemValidationError when live data makes an item invalid (a CNAME
        beside other data), TransientError/ConfigError when the server cannot be read."""


def allow_apex_of(options: Options | None, allow_apex: bool) -> bool:
    """DNS's kind option: edits at the zone apex (SOA/NS) need an explicit yes."""
    return bool(allow_apex or (options or {}).get("allow_apex"))
