"""The DNS kind's extra health-check type, dns_resolve: ask a resolver for a name and
compare the answer with the expected records. Validation and running moved here
from changes/health.py and changes/checks.py (generic code reaches them through the
kind registry)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from adapters.errors import AdapterError
from adapters.kind import CheckContext, CheckKind, CheckRun
from adapters.plan import Plan, RRKey, Step

from .planning import canonical_rdata
from .resolve import resolve
from .resolver_checks import judge, negative_cache_ttl

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


def _lookup(check: Mapping[str, Any]) -> tuple[set[str], list[str] | None] | str:
    """(expected, answer) for a normalized check, or why there is no answer (a bad
    `expect`, or the resolver's error: no answer within the timeout, SERVFAIL...)."""
    rdtype = str(check.get("rdtype", "A")).upper()
    expected, error = expected_answers(rdtype, check.get("expect") or [])
    if expected is None:
        return error or "invalid expect"
    try:
        answer = resolve(resolver=check["resolver"], name=check["name"], rdtype=rdtype,
                         timeout=float(check.get("timeout", DEFAULT_TIMEOUT)))
    except AdapterError as exc:
        return exc.message
    return expected, answer


def _mismatch(expected: set[str], answer: list[str] | None) -> str:
    got = set(answer or ())
    parts = [f"expected {_answer_text(expected)}, got {_answer_text(answer)}"]
    if got and expected:
        if missing := expected - got:
            parts.append(f"missing {', '.join(sorted(missing))}")
        if extra := got - expected:
            parts.append(f"unexpected {', '.join(sorted(extra))}")
    return "; ".join(parts)


def run_dns_resolve(check: Mapping[str, Any]) -> tuple[bool, str]:
    looked_up = _lookup(check)
    if isinstance(looked_up, str):
        return False, looked_up
    expected, answer = looked_up
    # expect [] means "must not resolve": NXDOMAIN and NODATA both satisfy it.
    if set(answer or ()) == expected:
        return True, f"answered {_answer_text(answer)}"
    return False, _mismatch(expected, answer)


def _plan_step(check: Mapping[str, Any], plan: Plan) -> Step | None:
    """The plan's step for the name and type the check asks, if the plan changes them."""
    try:
        name = dns.name.from_text(str(check["name"]), origin=dns.name.root).canonicalize().to_text()
    except (KeyError, dns.exception.DNSException, UnicodeError, ValueError):
        return None
    key = RRKey(name, str(check.get("rdtype", "A")).upper())
    return next((step for step in plan.steps if step.key == key), None)


def _negative_ttl(plan: Plan) -> int | None:
    """The zone's negative-caching TTL when the plan carries the SOA; else unknown
    (a missing answer for a name the plan creates is then not excused, as before)."""
    return next((negative_cache_ttl(step.before) for step in plan.steps
                 if step.key.rdtype == "SOA" and step.before is not None), None)


def run_dns_resolve_in(check: Mapping[str, Any], context: CheckContext) -> CheckRun:
    """run_dns_resolve for a round that knows the applied change. When the check asks
    for a key the plan changes, the answer is judged by the resolver checks' stale
    rule (dns_adapters.resolver_checks.judge) with `expect` as the right answer: the
    plan's old value is ok but stale while a resolver may still cache it; once its
    TTL has run out, or when the resolver serves the plan's new value, an answer that
    is not `expect` is decisive. No answer at all stays an ordinary failure."""
    step = _plan_step(check, context.plan)
    if step is None:
        return CheckRun(*run_dns_resolve(check))
    looked_up = _lookup(check)
    if isinstance(looked_up, str):
        return CheckRun(False, looked_up)
    expected, answer = looked_up
    applied_at = context.applied_at
    if applied_at.tzinfo is None:  # a naive time is UTC here, as everywhere in changegate
        applied_at = applied_at.replace(tzinfo=UTC)
    verdict = judge(answer, before=step.before, after=step.after, applied_at=applied_at, now=datetime.now(UTC),
                    negative_ttl=_negative_ttl(context.plan), expect=expected)
    if verdict.stale:
        return CheckRun(True, verdict.text, stale=True)
    if verdict.ok:
        return CheckRun(True, f"answered {_answer_text(answer)}")
    detail = _mismatch(expected, answer)
    if verdict.decisive:
        detail += f" (decisive: {verdict.why})"
    return CheckRun(False, detail, decisive=verdict.decisive)


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
    run_in=run_dns_resolve_in,
)
