"""Zone-file syntax in and out: the `patch` text engineers write, the unified diff
reviewers read, and the risk flags computed on a plan. Pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .base import FieldError, ItemValidationError, Plan, RRValue, Step

# "+ www 300 IN A 192.0.2.10": op, name, optional TTL, optional class, type, rdata.
_LINE_RE = re.compile(
    r"^(?P<op>[+=-])\s+(?P<name>\S+)(?:\s+(?P<ttl>\d+))?(?:\s+(?i:IN))?\s+(?P<type>[A-Za-z][A-Za-z0-9]*)(?:\s+(?P<rdata>.+?))?\s*$"
)

PATCH_SYNTAX = """\
One change per line; '#' starts a comment.
  = NAME TTL [IN] TYPE RDATA   upsert: the RRset becomes exactly the '=' lines given for NAME/TYPE
  + NAME [TTL] [IN] TYPE RDATA add one record (TTL needed when the RRset does not exist yet)
  - NAME [TTL] [IN] TYPE RDATA remove one record
  - NAME [IN] TYPE             delete the whole RRset
NAME is relative to the zone unless it ends in '.'; '@' is the apex."""


@dataclass(frozen=True)
class PatchLine:
    line: int
    item: dict[str, Any]


def parse_patch(text: str) -> list[PatchLine]:
    """Turn patch text into raw items (validated later like JSON items). Consecutive
    or scattered '=' lines for the same name and type merge into one upsert.
    Raises ItemValidationError with field "patch" and the line number."""
    if not isinstance(text, str):
        raise ItemValidationError([FieldError(None, "patch", "patch must be text")])
    result: list[PatchLine] = []
    upserts: dict[tuple[str, str], dict[str, Any]] = {}
    errors: list[FieldError] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE_RE.match(line)
        if not match:
            errors.append(FieldError(None, "patch", f"line {number}: expected '[+-=] NAME [TTL] [IN] TYPE [RDATA]'"))
            continue
        op, name, ttl, rdtype, rdata = match.group("op", "name", "ttl", "type", "rdata")
        item: dict[str, Any] = {"name": name, "type": rdtype.upper()}
        if ttl is not None:
            item["ttl"] = int(ttl)
        if op == "=":
            if rdata is None:
                errors.append(FieldError(None, "patch", f"line {number}: '=' needs record data"))
                continue
            key = (name.lower(), rdtype.upper())
            if key in upserts:
                upserts[key]["records"].append(rdata)
                if ttl is not None and upserts[key].get("ttl") != int(ttl):
                    errors.append(FieldError(None, "patch", f"line {number}: TTL differs from the earlier '=' line"))
                continue
            item.update(op="upsert", records=[rdata])
            upserts[key] = item
        elif op == "+":
            if rdata is None:
                errors.append(FieldError(None, "patch", f"line {number}: '+' needs record data"))
                continue
            item.update(op="add", records=[rdata])
        else:
            item.update(op="remove", records=[rdata]) if rdata is not None else item.update(op="delete")
            if rdata is None:
                item.pop("ttl", None)
        result.append(PatchLine(line=number, item=item))
    if errors:
        raise ItemValidationError(errors)
    if not result:
        raise ItemValidationError([FieldError(None, "patch", "no change lines found")])
    return result


def rrset_lines(step_key_name: str, rdtype: str, value: RRValue | None) -> list[str]:
    if value is None:
        return []
    return [f"{step_key_name} {value.ttl} IN {rdtype} {rdata}" for rdata in value.rdatas]


def unified_diff(plan: Plan) -> str:
    """The plan as a unified diff of zone-file lines, one hunk per RRset."""
    out = [f"--- {plan.zone} (live)", f"+++ {plan.zone} (planned)"]
    for step in plan.steps:
        before = rrset_lines(step.key.name, step.key.rdtype, step.before)
        after = rrset_lines(step.key.name, step.key.rdtype, step.after)
        out.append(f"@@ {step.key.name} {step.key.rdtype} @@")
        same_ttl = bool(step.before and step.after and step.before.ttl == step.after.ttl)
        kept = set(before) & set(after) if same_ttl else set()
        out += [(" " if line in kept else "-") + line for line in before]
        out += ["+" + line for line in after if line not in kept]
    return "\n".join(out) + "\n"


RISKS = {
    "apex_ns_soa": "changes the zone apex NS or SOA",
    "dnssec": "changes DNSSEC delegation or keys (DS/DNSKEY/CDS/CDNSKEY)",
    "mail": "changes mail routing or mail authentication (MX, SPF, DMARC, DKIM)",
    "wildcard": "changes a wildcard name",
    "ttl_over_day": "raises a TTL above one day (a mistake would be cached for long)",
    "mass_delete": "deletes more than 25% of the zone's RRsets",
}
DAY = 86400


def _is_mail_step(step: Step) -> bool:
    if step.key.rdtype == "MX":
        return True
    labels = step.key.name.split(".")
    if step.key.rdtype == "TXT":
        if labels[0] == "_dmarc" or "_domainkey" in labels:
            return True
        texts = (step.before.rdatas if step.before else ()) + (step.after.rdatas if step.after else ())
        return any("v=spf1" in text.lower() for text in texts)
    return False


def risk_flags(plan: Plan, *, zone_rrsets: int | None) -> list[str]:
    """Flags for plans that deserve an extra pair of eyes. `zone_rrsets` is a cached
    count (from the last whole-zone read); None skips the mass-delete check."""
    flags: set[str] = set()
    deletes = 0
    for step in plan.steps:
        if step.key.name == plan.zone and step.key.rdtype in ("NS", "SOA"):
            flags.add("apex_ns_soa")
        if step.key.rdtype in ("DS", "DNSKEY", "CDS", "CDNSKEY"):
            flags.add("dnssec")
        if _is_mail_step(step):
            flags.add("mail")
        if step.key.name.startswith("*."):
            flags.add("wildcard")
        if step.after and step.after.ttl > DAY and (step.before is None or step.after.ttl > step.before.ttl):
            flags.add("ttl_over_day")
        if step.after is None:
            deletes += 1
    if zone_rrsets and deletes * 4 > zone_rrsets:
        flags.add("mass_delete")
    return sorted(flags)
