"""Zone-file syntax in and out: the `patch` text engineers write, the unified diff
reviewers read, and the risk flags computed on a plan. Pure functions."""

from __future__ import annotations

import re
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass

from adapters.kind import PatchItem

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


# One parsed patch line: the kind-generic PatchItem(line, item).
PatchLine = PatchItem


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
    "delegation": "delegates a name below the apex to other nameservers (NS)",
    "dname": "redirects a whole subtree of names elsewhere (DNAME)",
    "dnssec": "changes DNSSEC delegation or keys (DS/DNSKEY/CDS/CDNSKEY)",
    "mail": "changes mail routing or mail authentication (MX, SPF, DMARC, DKIM)",
    "wildcard": "changes a wildcard name",
    "ttl_over_day": "raises a TTL above one day (a mistake would be cached for long)",
    "mass_delete": "deletes more than 25% of the zone's RRsets",
}
DAY = 86400

# Owner names whose every record (of any type: TXT, a CNAME or DNAME elsewhere, an
# NS delegation) is mail authentication, matched on whole labels: DMARC (RFC 7489),
# DKIM keys (RFC 6376), MTA-STS (RFC 8461), SMTP TLS reporting (RFC 8460).
_MAIL_FIRST_LABELS = (("_dmarc",), ("_mta-sts",), ("_smtp", "_tls"))
_MAIL_ANY_LABEL = b"_domainkey"
# Records that are mail authentication by content, wherever they sit. Matched after
# joining the TXT character-strings, as receivers do (RFC 7208 section 3.3, RFC 6376
# section 3.6.2.2): '"v=sp" "f1 ..."' is an SPF record. The version tags are
# case-insensitive. A DKIM key need not carry v=DKIM1 but must carry a p= tag
# (RFC 6376 section 3.6.1), so any tag-list with p= counts (DMARC's p= too).
_MAIL_VERSION_RE = re.compile(r"v\s*=\s*(?:spf1|dmarc1|dkim1|stsv1|tlsrptv1)\b", re.IGNORECASE)
_DKIM_KEY_RE = re.compile(r"(?:^|;)\s*p\s*=", re.IGNORECASE)


def _labels(name: str) -> tuple[bytes, ...]:
    try:
        return tuple(label.lower() for label in dns.name.from_text(name).labels)
    except dns.exception.DNSException:
        return tuple(label.encode().lower() for label in name.split("."))


def _is_mail_name(name: str) -> bool:
    labels = _labels(name)
    if _MAIL_ANY_LABEL in labels:
        return True
    return any(labels[: len(first)] == tuple(x.encode() for x in first) for first in _MAIL_FIRST_LABELS)


def _joined_texts(rdtype: str, value: RRValue | None) -> list[str]:
    """Each TXT/SPF record as the one string a receiver reads (its
    character-strings joined, escapes decoded)."""
    texts = []
    for rdata in value.rdatas if value else ():
        try:
            parsed = dns.rdata.from_text(dns.rdataclass.IN, rdtype, rdata)
            texts.append(b"".join(parsed.strings).decode("utf-8", "replace"))
        except (dns.exception.DNSException, ValueError):  # not expected from canonical rdata: judge the text
            texts.append(rdata)
    return texts


def _is_mail_step(step: Step) -> bool:
    """MX, SPF, or any record at a mail-authentication name, or a TXT that reads as
    SPF/DMARC/DKIM/MTA-STS/TLS-RPT before or after the change (removing one is as
    risky as adding one).

    Following CNAMEs inside the zone: a `_dmarc` or `_domainkey` CNAME is flagged by
    its name; the TXT it points at is flagged by its content, since a receiver
    ignores a DMARC/SPF record without its version tag and a DKIM key without p=,
    so the record at the CNAME target cannot matter to mail unless its (joined)
    content says so, before or after. Not seen from a plan alone: re-pointing an
    intermediate CNAME in a chain (`_dmarc CNAME hop`, change `hop CNAME ...`)."""
    if step.key.rdtype in ("MX", "SPF") or _is_mail_name(step.key.name):
        return True
    if step.key.rdtype == "TXT":
        texts = _joined_texts("TXT", step.before) + _joined_texts("TXT", step.after)
        return any(_MAIL_VERSION_RE.search(text) or _DKIM_KEY_RE.search(text) for text in texts)
    return False


def risk_flags(plan: Plan, *, zone_rrsets: int | None) -> list[str]:
    """Flags for plans that deserve an extra pair of eyes. `zone_rrsets` is a cached
    count (from the last whole-zone read); None skips the mass-delete check."""
    flags: set[str] = set()
    deletes = 0
    for step in plan.steps:
        at_apex = step.key.name == plan.zone
        if at_apex and step.key.rdtype in ("NS", "SOA"):
            flags.add("apex_ns_soa")
        if step.key.rdtype == "NS" and not at_apex:
            # A sub-delegation hands the name and everything below it to other
            # servers, outside this gateway's control.
            flags.add("delegation")
        if step.key.rdtype == "DNAME":
            flags.add("dname")
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
