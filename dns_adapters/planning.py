"""Item validation and plan building: pure functions, no network.

`validate_items` turns raw JSON items into `ChangeItem`s or raises one
`ItemValidationError` naming every bad item and field. `build_plan` folds the
items over the live values into compare-and-swap steps plus the guards that make
a targeted read as safe as a whole-zone read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from .base import ANY, OPS, ChangeItem, FieldError, Guard, ItemValidationError, Plan, RRKey, RRValue, Step

MAX_TTL = 2147483647  # RFC 2181 section 8
# Types the server maintains itself (DNSSEC signing) or that are not data at all.
FORBIDDEN_TYPES = frozenset(
    {"ANY", "AXFR", "IXFR", "MAILA", "MAILB", "OPT", "TSIG", "TKEY", "NONE", "RRSIG", "NSEC", "NSEC3", "NSEC3PARAM"}
)


def zone_name(zone: str) -> dns.name.Name:
    return dns.name.from_text(zone.rstrip(".") + ".").canonicalize()


def canonical_rdata(rdata: dns.rdata.Rdata) -> str:
    """Presentation form of the rdata's canonical wire form (RFC 4034 section 6.2:
    names inside rdata lower-cased), so equal data from the user, a query and an
    AXFR always gives the same string."""
    wire = rdata.to_digestable()
    return dns.rdata.from_wire(rdata.rdclass, rdata.rdtype, wire, 0, len(wire)).to_text()


def rrvalue(ttl: int, rdatas: Sequence[dns.rdata.Rdata]) -> RRValue:
    return RRValue(ttl=ttl, rdatas=tuple(sorted({canonical_rdata(rd) for rd in rdatas})))


def parse_rdtype(text: Any) -> tuple[str | None, str | None]:
    """(canonical type name, None) or (None, error message)."""
    if not isinstance(text, str) or not text.strip():
        return None, "type is required"
    try:
        value = dns.rdatatype.from_text(text.strip().upper())
    except dns.exception.DNSException:
        return None, f"unknown record type {text!r}"
    name = dns.rdatatype.to_text(value)
    if name.startswith("TYPE") or name in FORBIDDEN_TYPES or dns.rdatatype.is_metatype(value):
        return None, f"record type {name} cannot be changed here"
    return name, None


def parse_owner(text: Any, origin: dns.name.Name) -> tuple[str | None, str | None]:
    """Absolute lower-case owner name inside the zone, or an error message.
    Relative names are relative to the zone; "@" is the apex; IDN is accepted."""
    if not isinstance(text, str) or not text.strip():
        return None, "name is required"
    raw = text.strip()
    try:
        if raw == "@":
            name = origin
        else:
            name = dns.name.from_unicode(raw, origin=origin)
    except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
        return None, f"{raw!r} is not a valid DNS name ({exc})"
    name = name.canonicalize()
    if not name.is_subdomain(origin):
        return None, f"{raw!r} is outside zone {origin.to_text()}"
    return name.to_text(), None


# Owner names the way BIND's check-names sees them (host names: letters, digits,
# hyphen, RFC 952/1123), with the underscore labels of RFC 8552 where the record
# type's conventions use them. A leftmost "*" (wildcard) is fine everywhere.
HOST_TYPES = frozenset({"A", "AAAA", "MX"})
SERVICE_TYPES = frozenset({"SRV", "TLSA", "SMIMEA", "SVCB", "HTTPS", "URI"})  # _port._proto.host, _service._proto.host
UNDERSCORE_TYPES = frozenset({"TXT", "SPF", "CNAME", "CAA"})
_LDH = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_UNDERSCORE = re.compile(r"^_[a-z0-9](?:[a-z0-9_-]{0,61})?$")


def check_owner(name: str, rdtype: str, origin: dns.name.Name) -> str | None:
    """Why `name` cannot own `rdtype` data, or None. Labels of the zone itself are
    not checked (the operator chose them)."""
    labels = [label.decode("ascii", "backslashreplace") for label in
              dns.name.from_text(name).relativize(origin).labels if label]
    if labels and labels[0] == "*":
        labels = labels[1:]
    if not labels:
        return None
    shown = ".".join(labels)
    if rdtype in HOST_TYPES:
        allowed, where = (lambda i, label: bool(_LDH.match(label))), "letters, digits and hyphens"
    elif rdtype in SERVICE_TYPES:
        leading = next((i for i, label in enumerate(labels) if not label.startswith("_")), len(labels))
        allowed = (lambda i, label, n=leading: bool(_UNDERSCORE.match(label) if i < n else _LDH.match(label)))
        where = "underscore labels first (_service._proto), then letters, digits and hyphens"
    elif rdtype in UNDERSCORE_TYPES:
        allowed = (lambda i, label: bool(_LDH.match(label) or _UNDERSCORE.match(label)))
        where = "letters, digits, hyphens and underscore labels (_dmarc, _domainkey)"
    else:
        # Other types keep DNS's full freedom (RFC 2317 names like 0/25) but never
        # whitespace or control characters, which no zone file line can hold unescaped.
        allowed = (lambda i, label: all(33 <= ord(c) < 127 for c in label))
        where = "printable characters without spaces"
    bad = [label for i, label in enumerate(labels) if not allowed(i, label)]
    if bad:
        return f"{shown!r}: label {bad[0]!r} is not a valid {rdtype} owner name ({where})"
    return None


def parse_ttl(value: Any) -> tuple[int | None, str | None]:
    if isinstance(value, bool) or not isinstance(value, int):
        # isascii: "²".isdigit() is True but int("²") raises.
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value.strip())
        else:
            return None, f"ttl must be an integer from 0 to {MAX_TTL}"
    if not 0 <= value <= MAX_TTL:
        return None, f"ttl {value} is out of range 0..{MAX_TTL}"
    return value, None


def parse_rdata(rdtype: str, text: Any, origin: dns.name.Name) -> tuple[str | None, str | None]:
    if not isinstance(text, str) or not text.strip():
        return None, "record must be a non-empty string"
    if "\n" in text or "\r" in text:
        return None, "record must be one line"
    try:
        rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, text.strip(), origin=origin, relativize=False)
    except (dns.exception.DNSException, ValueError, UnicodeError) as exc:
        return None, f"{text!r} is not valid {rdtype} data ({exc})"
    return canonical_rdata(rdata), None


ITEM_FIELDS = frozenset({"op", "name", "type", "ttl", "records"})
# Reports one bad field of the item being validated: (field name, message).
_Report = Callable[[str, str], None]


def validate_items(
    raw_items: Any, *, zone: str, allow_apex: bool = False, max_items: int = 1000
) -> list[ChangeItem]:
    """Validate raw items against `zone`; raise ItemValidationError naming every bad
    value. Checks that need live data (a CNAME beside existing data) happen in
    `build_plan`."""
    origin = zone_name(zone)
    errors: list[FieldError] = []
    if not isinstance(raw_items, list | tuple):
        raise ItemValidationError([FieldError(None, "items", "items must be a list")])
    if not raw_items:
        raise ItemValidationError([FieldError(None, "items", "at least one item is required")])
    if len(raw_items) > max_items:
        raise ItemValidationError([FieldError(None, "items", f"at most {max_items} items per change")])

    items: list[ChangeItem] = []
    for index, raw in enumerate(raw_items):
        def bad(field_name: str, message: str, index: int = index) -> None:
            errors.append(FieldError(index, field_name, message))

        item = _validate_item(raw, origin=origin, allow_apex=allow_apex, bad=bad)
        if item is not None:
            items.append(item)

    if errors:
        raise ItemValidationError(errors)
    return items


def _validate_item(raw: Any, *, origin: dns.name.Name, allow_apex: bool, bad: _Report) -> ChangeItem | None:
    """One raw item: every bad field reported through `bad`, in the order a reader
    scans the item; the item once its op, name and type parse (None otherwise)."""
    if not isinstance(raw, Mapping):
        bad("item", "each item must be an object")
        return None
    for key in sorted(set(raw) - ITEM_FIELDS, key=str):
        bad(str(key), "unknown field")
    op = raw.get("op")
    if op not in OPS:
        bad("op", f"op must be one of {', '.join(OPS)}")
    name, err = parse_owner(raw.get("name"), origin)
    if err:
        bad("name", err)
    rdtype, err = parse_rdtype(raw.get("type"))
    if err:
        bad("type", err)
    ttl = _item_ttl(raw.get("ttl"), op=op, bad=bad)
    rdatas = _item_rdatas(raw.get("records"), op=op, rdtype=rdtype, origin=origin, bad=bad)
    if name is None or rdtype is None or op not in OPS:
        return None
    _check_item_rules(op=op, name=name, rdtype=rdtype, rdatas=rdatas, origin=origin, allow_apex=allow_apex, bad=bad)
    return ChangeItem(op=op, name=name, rdtype=rdtype, ttl=ttl, rdatas=tuple(sorted(set(rdatas))))


def _item_ttl(raw_ttl: Any, *, op: Any, bad: _Report) -> int | None:
    if raw_ttl is None:
        if op == "upsert":
            bad("ttl", "ttl is required for upsert")
        return None
    ttl, err = parse_ttl(raw_ttl)
    if err:
        bad("ttl", err)
    return ttl


def _item_rdatas(records: Any, *, op: Any, rdtype: str | None, origin: dns.name.Name, bad: _Report) -> list[str]:
    """The item's records in canonical form (empty for a delete, or when the type
    is unknown and the records cannot be parsed)."""
    rdatas: list[str] = []
    if op == "delete":
        if records not in (None, []):
            bad("records", "delete removes the whole RRset; give no records (use remove for single records)")
    elif op in OPS:
        if not isinstance(records, list) or not records:
            bad("records", f"{op} needs a non-empty list of records")
        elif rdtype is not None:
            for j, text in enumerate(records):
                value, err = parse_rdata(rdtype, text, origin)
                if err:
                    bad(f"records[{j}]", err)
                else:
                    rdatas.append(value)
    return rdatas


def _check_item_rules(*, op: str, name: str, rdtype: str, rdatas: list[str], origin: dns.name.Name,
                      allow_apex: bool, bad: _Report) -> None:
    """DNS rules one item can break on its own (no live data needed)."""
    at_apex = name == origin.to_text()
    owner_error = check_owner(name, rdtype, origin) if op in ("upsert", "add") else None
    if owner_error:
        bad("name", owner_error)
    if rdtype == "CNAME":
        if at_apex:
            bad("type", "a CNAME cannot be at the zone apex (it would sit beside SOA and NS)")
        if op in ("upsert", "add") and len(set(rdatas)) > 1:
            bad("records", "a CNAME RRset holds exactly one record")
    if rdtype == "SOA":
        if not at_apex:
            bad("type", "SOA exists only at the zone apex")
        elif not allow_apex:
            bad("type", "changing the apex SOA needs the allow_apex flag")
    if rdtype == "NS" and at_apex and not allow_apex:
        # Replacing (or adding to) the apex NS set moves the whole zone to other
        # servers just as surely as deleting it does.
        bad("type", "changing the apex NS RRset needs the allow_apex flag")


@dataclass
class NameInfo:
    """What a targeted read learned about an owner name."""

    exists: bool = True  # False on NXDOMAIN
    cname: RRValue | None = None  # a CNAME found at the name (answer to a typed query)
    # Types present at the name, when known (from an ANY query); None = not asked.
    types: dict[str, RRValue] | None = None
    referral: str | None = None  # the zone cut above the name, if the server referred us


@dataclass
class LiveRead:
    values: dict[RRKey, RRValue | None] = field(default_factory=dict)
    names: dict[str, NameInfo] = field(default_factory=dict)


def keys_to_read(items: Sequence[ChangeItem]) -> list[RRKey]:
    seen: dict[RRKey, None] = {}
    for item in items:
        seen.setdefault(item.key, None)
    return list(seen)


def build_plan(*, zone: str, items: Sequence[ChangeItem], live: LiveRead, allow_apex: bool = False) -> Plan:
    """Fold `items` in order over the live values; drop no-op steps; add guards.

    Raises ItemValidationError (naming the item) when the result would break a DNS
    rule that depends on live data: CNAME beside other data, an add without TTL to
    a missing RRset, an emptied apex NS RRset.
    """
    apex = zone_name(zone).to_text()
    errors: list[FieldError] = []
    state, last_item = _fold_items(items, live.values, errors)
    steps = [
        Step(key=key, before=live.values.get(key), after=after)
        for key, after in state.items()
        if live.values.get(key) != after
    ]
    step_keys = {step.key for step in steps}
    guards: list[Guard] = []
    for step in steps:
        index = last_item[step.key]
        info = live.names.get(step.key.name, NameInfo())
        errors.extend(_step_refusals(step, index=index, info=info, apex=apex))
        if step.after is None:
            continue
        if step.key.rdtype != "CNAME":
            _check_beside_cname(step, index=index, info=info, state=state, live=live,
                                step_keys=step_keys, guards=guards, errors=errors)
        elif step.before is None:
            _check_new_cname(step, index=index, info=info, state=state, guards=guards, errors=errors)

    if errors:
        raise ItemValidationError(sorted(errors, key=lambda e: (e.index or 0, e.field)))
    return Plan(zone=apex, steps=tuple(steps), guards=tuple(guards))


def _fold_items(
    items: Sequence[ChangeItem], live_values: Mapping[RRKey, RRValue | None], errors: list[FieldError]
) -> tuple[dict[RRKey, RRValue | None], dict[RRKey, int]]:
    """Each key's value after applying `items` in order to the live values, and the
    index of the last item that touched it (the item a step's error names). Items
    that cannot apply are reported in `errors` and leave the key as it was."""
    state: dict[RRKey, RRValue | None] = {}
    last_item: dict[RRKey, int] = {}
    for index, item in enumerate(items):
        key = item.key
        current = state[key] if key in state else live_values.get(key)
        last_item[key] = index
        if item.op == "upsert":
            assert item.ttl is not None
            state[key] = RRValue(ttl=item.ttl, rdatas=item.rdatas)
        elif item.op == "delete":
            state[key] = None
        elif item.op == "add":
            ttl = item.ttl if item.ttl is not None else (current.ttl if current else None)
            if ttl is None:
                errors.append(FieldError(index, "ttl", f"{key} does not exist yet: give a ttl"))
                continue
            rdatas = set(current.rdatas if current else ()) | set(item.rdatas)
            if key.rdtype == "CNAME" and len(rdatas) > 1:
                errors.append(FieldError(index, "records", f"{key.name} already has a CNAME; use upsert to replace it"))
                continue
            state[key] = RRValue(ttl=ttl, rdatas=tuple(sorted(rdatas)))
        elif item.op == "remove":
            if current is None:
                state[key] = None
                continue
            rdatas = set(current.rdatas) - set(item.rdatas)
            ttl = item.ttl if item.ttl is not None else current.ttl
            state[key] = RRValue(ttl=ttl, rdatas=tuple(sorted(rdatas))) if rdatas else None
    return state, last_item


def _step_refusals(step: Step, *, index: int, info: NameInfo, apex: str) -> list[FieldError]:
    """Steps a server would refuse or silently ignore, whatever else the name holds."""
    key = step.key
    refusals: list[FieldError] = []
    if info.referral and key.rdtype not in ("NS", "DS"):
        refusals.append(
            FieldError(index, "name", f"{key.name} is at or below the delegation {info.referral}; glue is not edited here")
        )
    if key.rdtype == "NS" and key.name == apex and step.after is None:
        # Even with allow_apex: servers silently ignore it (RFC 2136 section 3.4.2.4).
        refusals.append(FieldError(index, "records", "this would delete the apex NS RRset, which DNS servers "
                                   "silently ignore (RFC 2136 section 3.4.2.4); replace it instead"))
    soa_error = _soa_error(step)
    if soa_error:
        refusals.append(FieldError(index, "records", soa_error))
    return refusals


def _check_beside_cname(step: Step, *, index: int, info: NameInfo, state: Mapping[RRKey, RRValue | None],
                        live: LiveRead, step_keys: set[RRKey], guards: list[Guard], errors: list[FieldError]) -> None:
    """Other data may not join a CNAME (RFC 1034 section 3.6.2; RFC 2181 section 10.1).
    Without one, guard that none appears before the apply."""
    name = step.key.name
    cname_key = RRKey(name, "CNAME")
    final_cname = state[cname_key] if cname_key in state else live.values.get(cname_key)
    if final_cname is not None or (cname_key not in state and info.cname is not None):
        errors.append(FieldError(index, "type", f"{name} has a CNAME; other data cannot sit beside it"))
    elif cname_key not in step_keys and cname_key not in {g.key for g in guards}:
        guards.append(Guard(key=cname_key, value=None))


def _check_new_cname(step: Step, *, index: int, info: NameInfo, state: Mapping[RRKey, RRValue | None],
                     guards: list[Guard], errors: list[FieldError]) -> None:
    """A new CNAME needs a name that holds nothing else after the plan; at a name
    seen empty, guard that it stays empty until the apply."""
    name = step.key.name
    others = {
        rdtype: value
        for rdtype, value in (info.types or {}).items()
        if rdtype != "CNAME" and RRKey(name, rdtype) not in state
    }
    others.update({k.rdtype: v for k, v in state.items() if k.name == name and k.rdtype != "CNAME" and v is not None})
    if others:
        errors.append(
            FieldError(index, "type", f"{name} holds {', '.join(sorted(others))}; a CNAME cannot sit beside other data")
        )
    elif not info.exists or info.types == {}:
        guards.append(Guard(key=RRKey(name, ANY), value=None))


def _soa_error(step: Step) -> str | None:
    """Servers silently ignore deleting the SOA, and an SOA whose serial is not
    greater than the live one in serial arithmetic (RFC 2136 section 3.4.2.2, RFC 1982)."""
    if step.key.rdtype != "SOA":
        return None
    if step.after is None:
        return "the SOA cannot be deleted (servers silently ignore it)"
    if step.before is None:
        return None
    old = int(step.before.rdatas[0].split()[2])
    new = int(step.after.rdatas[0].split()[2])
    if not 0 < (new - old) % 2**32 < 2**31:
        return f"the new SOA serial {new} must be greater than the live serial {old} (RFC 1982), or servers ignore it"
    return None
