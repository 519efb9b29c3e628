"""The DNS kind's extra health-check type, dns_resolve: ask a resolver for a name and
compare the answer with the expected records. Validation and running moved here
from changes/health.py and changes/checks.py (generic code reaches them through the
kind registry)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from adapters.errors import AdapterError
from adapters.kind import CheckKind

from .planning import canonical_rdata
from .resolve import resolve

DEFAULT_TIMEOUT = 2.0


def expected_answers(rdtype: str, expect: Sequence[str]) -> tuple[set[str] | None, str | None]:
    """Canonical rdata strings for the `expect` list, or (None, why one is invalid).
    Names in expect values are taken as absolute ("www" means "www.")."""
    answers: set[str] = set()
    for text in expect:
        try:
            rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, text, origin=dns.name.root, relativize=False)
        except (dns.exception.DNSException, ValueError, UnicodeError) as exc:
            return None, f"expect value {text!r} is not valid {rdtype} data ({exc})"
        answers.add(canonical_rdata(rdata))
    return answers, None


def _answer_text(values: set[str] | list[str] | None) -> str:
    if values is None:
        return "NXDOMAIN"
    return ", ".join(sorted(values)) or "no data"


def run_dns_resolve(check: Mapping[str, Any]) -> tuple[bool, str]:
    rdtype = str(check.get("rdtype", "A")).upper()
    expected, error = expected_answers(rdtype, check.get("expect") or [])
    if expected is None:
        return False, error or "invalid expect"
    try:
        answer = resolve(resolver=check["resolver"], name=check["name"], rdtype=rdtype,
                         timeout=float(check.get("timeout", DEFAULT_TIMEOUT)))
    except AdapterError as exc:
        return False, exc.message
    # expect [] means "must not resolve": NXDOMAIN and NODATA both satisfy it.
    got = set(answer or ())
    if got == expected:
        return True, f"answered {_answer_text(answer)}"
    parts = [f"expected {_answer_text(expected)}, got {_answer_text(answer)}"]
    if got and expected:
        if missing := expected - got:
            parts.append(f"missing {', '.join(sorted(missing))}")
        if extra := got - expected:
            parts.append(f"unexpected {', '.join(sorted(extra))}")
    return False, "; ".join(parts)


def _port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def validate_dns_resolve(check: Mapping[str, Any], bad: Callable[[str, str], None]) -> dict[str, Any]:
    resolver = check.get("resolver")
    try:
        host, _, port = str(resolver).rpartition(":")
        ipaddress.ip_address(host.strip("[]"))
        if not _port(int(port)):
            raise ValueError
    except ValueError:
        bad("resolver", "resolver must be ip:port")
    if not isinstance(check.get("name"), str) or not check["name"].strip():
        bad("name", "name is required")
    try:
        rdtype = dns.rdatatype.to_text(dns.rdatatype.from_text(str(check.get("rdtype", "A")).upper()))
    except dns.exception.DNSException:
        bad("rdtype", "unknown record type")
        rdtype = "A"
    expect = check.get("expect")
    if not isinstance(expect, list) or not all(isinstance(e, str) for e in expect):
        bad("expect", "expect must be a list of record strings")
    return {"resolver": resolver, "name": check.get("name"), "rdtype": rdtype, "expect": expect}


def describe_dns_resolve(check: Mapping[str, Any]) -> str:
    return f"dns_resolve {check.get('name')} {check.get('rdtype', 'A')} @{check.get('resolver')}"


DNS_RESOLVE = CheckKind(
    name="dns_resolve",
    fields=frozenset({"type", "resolver", "name", "rdtype", "expect", "timeout"}),
    validate=validate_dns_resolve,
    run=run_dns_resolve,
    describe=describe_dns_resolve,
)
