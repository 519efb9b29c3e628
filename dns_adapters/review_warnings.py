"""Warnings for the reviewer: things that are legal DNS but probably not meant.
They go on `Plan.warnings`, outside the fingerprint (adapters/plan.py).

* an MX, SRV, CNAME or NS whose target is a name in this zone with no address (A/AAAA)
  after the change: dangling, or missing (BIND even refuses such an MX or SRV: see
  apply.classify_refusal). Read per target name (A, AAAA, CNAME), never a zone transfer;
* a target, or a record's own name, that looks like a name outside the zone written
  without its trailing dot, which made it relative (`cdn.example.com` -> `cdn.example.com.demo.test.`);
* a change that deletes the last address of a name an MX or SRV points at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import dns.name
import dns.rdata
import dns.rdataclass

from .base import AdapterError, Plan, RRKey, RRValue, ZoneSnapshot

Reader = Callable[[Iterable[RRKey]], dict[RRKey, RRValue | None]]
TARGET_TYPES = ("MX", "SRV", "CNAME", "NS")
ADDRESS_TYPES = ("A", "AAAA")
# Last labels that make a relative-looking target suspicious: common top-level
# domains, plus the zone's own (a doubled zone name: www.demo.test.demo.test.).
COMMON_TLDS = frozenset({
    "com", "net", "org", "info", "biz", "io", "co", "app", "dev", "cloud", "eu", "de", "uk", "fr", "nl", "be",
    "ch", "at", "it", "es", "se", "no", "dk", "fi", "pl", "cz", "ie", "pt", "us", "ca", "au", "jp", "cn", "in",
    "br", "ru", "arpa", "example", "test", "local", "internal", "invalid", "localhost",
})


def target(rdtype: str, text: str) -> str | None:
    """The absolute lower-case target name of an MX/SRV/CNAME/NS rdata; None for the
    null MX / SRV "." (RFC 7505, RFC 2782: no service)."""
    rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)
    name = rdata.exchange if rdtype == "MX" else rdata.target
    return None if name == dns.name.root else name.canonicalize().to_text()


def _new_targets(plan: Plan) -> list[tuple[RRKey, str, str]]:
    """(key, rdata, target) for every MX/SRV/CNAME/NS rdata the plan adds."""
    found = []
    for step in plan.steps:
        if step.key.rdtype not in TARGET_TYPES or step.after is None:
            continue
        old = set(step.before.rdatas) if step.before else set()
        for text in step.after.rdatas:
            name = target(step.key.rdtype, text) if text not in old else None
            if name:
                found.append((step.key, text, name))
    return found


def _final(plan: Plan, read: Reader, keys: Sequence[RRKey]) -> dict[RRKey, RRValue | None]:
    """Values after the plan: the plan's `after` where it has a step, else live."""
    planned = {s.key: s.after for s in plan.steps}
    live = read([k for k in keys if k not in planned]) if any(k not in planned for k in keys) else {}
    return {k: planned[k] if k in planned else live.get(k) for k in keys}


def target_problems(plan: Plan, *, origin: dns.name.Name, read: Reader) -> list[str]:
    """In-zone targets of new MX/SRV/CNAME/NS rdata with no address after the plan."""
    zone = origin.to_text()
    in_zone = [(k, t, n) for k, t, n in _new_targets(plan)
               if dns.name.from_text(n).is_subdomain(origin) and not _glue(k, n, origin)]
    names = list(dict.fromkeys(n for _, _, n in in_zone))
    keys = [RRKey(n, rdtype) for n in names for rdtype in (*ADDRESS_TYPES, "CNAME")]
    final = _final(plan, read, keys) if keys else {}
    problems = []
    for key, text, name in in_zone:
        if any(final.get(RRKey(name, t)) for t in (*ADDRESS_TYPES, "CNAME")):
            continue  # an address, or a CNAME the resolver follows
        problems.append(f"{key} {text}: {name} is in zone {zone} and has no address (A/AAAA)")
    return problems


def _glue(key: RRKey, name: str, origin: dns.name.Name) -> bool:
    """A delegation's name server at or below the delegated name: its address is glue,
    which the zone's authoritative answers do not show (a read there is a referral)."""
    owner = dns.name.from_text(key.name)
    return key.rdtype == "NS" and owner != origin and dns.name.from_text(name).is_subdomain(owner)


def _meant_absolute(absolute: dns.name.Name, origin: dns.name.Name) -> dns.name.Name | None:
    """The name as written, when an in-zone name looks like one outside the zone that
    lost its trailing dot: two labels or more, the last a common top-level domain or
    the zone's own (a doubled zone name: www.demo.test.demo.test.). Else None."""
    if not absolute.is_subdomain(origin) or absolute == origin:
        return None
    zone_tld = origin.labels[-2].decode().lower() if len(origin.labels) > 1 else ""
    relative = absolute.relativize(origin)
    last = relative.labels[-1].decode().lower()
    return relative if len(relative.labels) >= 2 and (last in COMMON_TLDS or last == zone_tld) else None


def relative_targets(plan: Plan, *, origin: dns.name.Name) -> list[str]:
    warnings = []
    for key, text, name in _new_targets(plan):
        relative = _meant_absolute(dns.name.from_text(name), origin)
        if relative is not None:
            warnings.append(f"{key} {text}: the target {name} looks like {relative.to_text()}. written without "
                            "its trailing dot, which made it relative to the zone")
    return warnings


def relative_names(plan: Plan, *, origin: dns.name.Name) -> list[str]:
    """Records the plan writes at a name that looks like an outside name made relative
    (`cdn.example.com` in zone demo.test is cdn.example.com.demo.test.). Deletions are
    left out: removing such a record is the repair."""
    warnings = []
    for step in plan.steps:
        if step.after is None:
            continue
        relative = _meant_absolute(dns.name.from_text(step.key.name), origin)
        if relative is not None:
            outside = relative.to_text()
            warnings.append(f"{step.key}: the name {step.key.name} looks like {outside}. written without its "
                            f"trailing dot, which made it relative to the zone; if you meant {outside}. write it "
                            f"with the trailing dot (a name outside {origin.to_text()} belongs to another target)")
    return warnings


def lost_addresses(plan: Plan, *, read: Reader, snapshot: Callable[[], ZoneSnapshot]) -> list[str]:
    """Names whose last address the plan deletes while an MX/SRV points at them."""
    candidates = {s.key.name for s in plan.steps if s.key.rdtype in ADDRESS_TYPES and s.before and not s.after}
    if not candidates:
        return []
    final = _final(plan, read, [RRKey(n, t) for n in candidates for t in ADDRESS_TYPES])
    orphaned = {n for n in candidates if not any(final.get(RRKey(n, t)) for t in ADDRESS_TYPES)}
    if not orphaned:
        return []
    planned = {s.key: s.after for s in plan.steps}
    try:
        zone = snapshot()  # only when an address really goes: a whole-zone read
    except AdapterError as exc:  # a warning must never make the plan fail
        names = ", ".join(sorted(orphaned))
        reason = f"could not be checked ({exc.message})"
        return [f"{names} lose their last address; whether an MX or SRV points at them {reason}"]
    pointers: dict[str, list[str]] = {}
    held = set(zone)
    for key in [*held, *(k for k in planned if k not in held)]:
        if key.rdtype not in ("MX", "SRV"):
            continue
        value = planned[key] if key in planned else zone.get(key)
        for text in value.rdatas if value else ():
            name = target(key.rdtype, text)
            if name in orphaned:
                pointers.setdefault(name, []).append(f"{key} {text}")
    return [f"{name} loses its last address (A/AAAA) but {', '.join(sorted(refs))} still points at it"
            for name, refs in sorted(pointers.items())]


def plan_warnings(plan: Plan, *, origin: dns.name.Name, read: Reader,
                  snapshot: Callable[[], ZoneSnapshot]) -> tuple[str, ...]:
    return tuple(target_problems(plan, origin=origin, read=read) + relative_targets(plan, origin=origin)
                 + relative_names(plan, origin=origin) + lost_addresses(plan, read=read, snapshot=snapshot))
