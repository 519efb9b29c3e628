"""The DNS target kind: the one object through which generic code uses this package
(registered by changes/kinds.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.kind import TargetKind
from adapters.plan import Plan, RRKey, RRValue

from .base import OPS, ChangeItem
from .checks import DNS_RESOLVE
from .planning import parse_owner, parse_rdtype, zone_name
from .presentation import PATCH_SYNTAX, RISKS, parse_patch, risk_flags, rrset_lines, unified_diff
from .rfc2136 import RFC2136Adapter

# Records the server maintains itself (online DNSSEC signing): they change without
# anybody changing the zone, so drift detection does not track them.
DRIFT_IGNORED_TYPES = frozenset({"RRSIG", "NSEC", "NSEC3"})


def item_json(item: ChangeItem) -> dict[str, Any]:
    """The stored form of a validated item (absolute names, canonical rdata)."""
    data: dict[str, Any] = {"op": item.op, "name": item.name, "type": item.rdtype}
    if item.ttl is not None:
        data["ttl"] = item.ttl
    if item.op != "delete":
        data["records"] = list(item.rdatas)
    return data


def parse_key(config: Mapping[str, Any], name: Any, rdtype: Any) -> tuple[RRKey | None, list[tuple[str, str]]]:
    """(owner, type) of one live read; `name` is relative to the zone unless absolute."""
    owner, name_error = parse_owner(name, zone_name(config["zone"]))
    canonical_type, type_error = parse_rdtype(rdtype)
    errors = [(field, message) for field, message in (("name", name_error), ("type", type_error)) if message]
    if errors or owner is None or canonical_type is None:
        return None, errors
    return RRKey(owner, canonical_type), []


def value_lines(key: RRKey, value: RRValue | None) -> list[str]:
    return rrset_lines(key.name, key.rdtype, value)


def plan_risk_flags(plan: Plan, *, item_count: int | None, config: Mapping[str, Any] | None = None) -> list[str]:
    return risk_flags(plan, zone_rrsets=item_count)


def rollback_items(plan: Plan) -> list[dict[str, Any]]:
    """Items that put every RRset of an applied plan back to its `before`."""
    items: list[dict[str, Any]] = []
    for step in plan.steps:
        if step.before is None:
            items.append({"op": "delete", "name": step.key.name, "type": step.key.rdtype})
        else:
            items.append({"op": "upsert", "name": step.key.name, "type": step.key.rdtype, "ttl": step.before.ttl,
                          "records": list(step.before.rdatas)})
    return items


def cache_seconds(plan: Plan) -> tuple[int, RRKey | None]:
    """The largest TTL among the values the plan replaces, and its RRset: until it has
    run out, some resolver may still answer with the old value. A step that creates an
    RRset replaces nothing cached here (negative caching is bounded by the SOA, which
    the plan does not carry), so it counts 0."""
    best: tuple[int, RRKey | None] = (0, None)
    for step in plan.steps:
        if step.before is not None and step.before.ttl > best[0]:
            best = (step.before.ttl, step.key)
    return best


def drift_comparable(key: str, value: Mapping[str, Any] | None) -> Any:
    """The value with the SOA serial masked: the server bumps the serial on every
    update, changegate's own included, so a serial-only change is not news. Every
    other SOA field (and its TTL) counts."""
    if value is None or not key.endswith(" SOA"):
        return value
    masked = []
    for rdata in value["rdatas"]:
        fields = rdata.split()
        masked.append(" ".join([*fields[:2], "-", *fields[3:]]) if len(fields) == 7 else rdata)
    return {"ttl": value["ttl"], "rdatas": sorted(masked)}


DNS = TargetKind(
    name="dns",
    label="DNS zone",
    adapter_class=RFC2136Adapter,
    # Where the TSIG key lives on the gateway: shown to operators only, never in
    # errors. The key itself is never part of a config.
    secret_fields=frozenset({"tsig_key_file"}),
    item_ops=OPS,
    patch_syntax=PATCH_SYNTAX,
    parse_patch=parse_patch,
    item_json=item_json,
    parse_key=parse_key,
    value_lines=value_lines,
    diff=unified_diff,
    risks=RISKS,
    risk_flags=plan_risk_flags,
    rollback_items=rollback_items,
    drift_ignores=lambda key: key.rdtype in DRIFT_IGNORED_TYPES,
    drift_comparable=drift_comparable,
    check_kinds=(DNS_RESOLVE,),
    cache_seconds=cache_seconds,
)
