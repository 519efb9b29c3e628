"""Checks through the target's caching resolvers during the bake (issue 16): what
clients behind the company's resolvers see, not only what the authoritative
servers say.

Every round asks each declared resolver for every changed key (recursion desired,
dns_adapters.resolve) and judges each answer with `judge`, the stale rule:

- the plan's `after` (absent for a deletion): ok;
- the plan's `before` (absent for a new RRset) while a resolver may still cache it,
  i.e. before applied_at + old TTL + STALE_SLACK_SECONDS: ok, but stale (the bake
  does not end on it). The old TTL is `before.ttl`; for a new RRset it is the
  zone's negative-caching TTL (RFC 2308 section 5: min(SOA TTL, SOA minimum)).
  applied_at is recorded after the UPDATE was confirmed, so every cached copy of
  the old answer was fetched before it: none outlives applied_at + TTL;
- anything else is a failure. Once the old TTL has run out, a definitive answer
  that is not `after` (the old one included) is decisive: no resolver may still
  legitimately serve it, so the bake fails at once instead of waiting for a second
  round. Before that, and for no answer at all (timeout, SERVFAIL), it is an
  ordinary failure: a lost packet must not roll a change back.

A declared dns_resolve check asking for one of the plan's keys follows the same
rule (dns_adapters.checks), with its own `expect` as the right answer (`judge`'s
`expect`); there the plan's `after` that is not `expect` is decisive at once (the
change itself is what the check rejects).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from adapters.errors import AdapterError
from adapters.interface import CacheCheck
from adapters.plan import Plan, RRValue

from .resolve import resolve

# Clock skew and the time between the resolver's answer and our reading of the clock.
STALE_SLACK_SECONDS = 1.0
# Per query; a round's deadline bounds them all (pipeline.checks).
RESOLVER_TIMEOUT = 2.0
# Keys listed in a failure detail before "and N more".
_DETAIL_KEYS = 5


@dataclass(frozen=True)
class Verdict:
    """One key's answer through one resolver, judged. `window` says how long the old
    value may still be cached ("old TTL runs out in 3 s", "the old TTL of 3 s ran out
    at 10:00:03Z, 1.0 s ago"); "" when its TTL is unknown. `why`: for a failure,
    what the answer is and why that counts (the part of `text` in parentheses)."""

    ok: bool
    text: str
    stale: bool = False
    decisive: bool = False
    window: str = ""
    why: str = ""


def negative_cache_ttl(soa: RRValue | None) -> int | None:
    """How long a resolver may cache "no such record" for the zone (RFC 2308
    section 5: the SOA's TTL and its MINIMUM field, whichever is lower); None
    without a usable SOA."""
    if soa is None or not soa.rdatas:
        return None
    fields = soa.rdatas[0].split()
    if len(fields) != 7 or not fields[6].isdigit():
        return None
    return min(soa.ttl, int(fields[6]))


def _rdatas(value: RRValue | None) -> frozenset[str]:
    return frozenset(value.rdatas) if value is not None else frozenset()


def _text(rdatas: frozenset[str] | Sequence[str]) -> str:
    return f"[{', '.join(sorted(rdatas))}]" if rdatas else "absent"


def _seconds(delta: timedelta) -> str:
    return f"{delta.total_seconds():.1f} s"


def judge(answer: Sequence[str] | None, *, before: RRValue | None, after: RRValue | None,
          applied_at: datetime, now: datetime, negative_ttl: int | None,
          expect: Collection[str] | None = None) -> Verdict:
    """The stale rule for one answer (`resolve`'s result: canonical rdata, [] for
    NODATA, None for NXDOMAIN; both mean absent). `negative_ttl` stands in for the
    old TTL when `before` is absent (None: unknown, so a missing answer is never
    excused). TTLs in the answer are not compared: a resolver counts them down.

    `expect` is the right answer when it is not the plan's `after` (a declared
    dns_resolve check's own expectation, canonical rdata). Then the old answer is
    still only stale while it may be cached, even when it is what `expect` says: it
    proves nothing about the change yet. And the plan's `after` that is not
    `expect` is decisive at once: the change itself reached the cache and is wrong,
    and waiting cannot make it right."""
    got = frozenset(answer or ())
    old, new = _rdatas(before), _rdatas(after)
    want = new if expect is None else frozenset(expect)
    old_ttl = before.ttl if before is not None else negative_ttl
    expiry = applied_at + timedelta(seconds=old_ttl) if old_ttl is not None else None
    expired = expiry is not None and now >= expiry + timedelta(seconds=STALE_SLACK_SECONDS)
    if expiry is None:
        window = ""
    elif expired:
        window = f"the old TTL of {old_ttl} s ran out at {expiry.astimezone(UTC):%H:%M:%S}Z, {_seconds(now - expiry)} ago"
    elif now < expiry:
        window = f"old TTL runs out in {math.ceil((expiry - now).total_seconds())} s"
    else:
        window = f"old TTL ran out {_seconds(now - expiry)} ago, within the {STALE_SLACK_SECONDS:g} s slack"
    is_old = got == old and old != new
    if is_old and expiry is not None and not expired:
        return Verdict(True, f"stale ({window})", stale=True, window=window)
    if got == want:
        return Verdict(True, "as planned" if expect is None else "as expected", window=window)
    expected = f"expected {_text(want)}, got {_text(got)}"
    if got == new and old != new:
        why = "the change's new answer"
        return Verdict(False, f"{expected} ({why})", decisive=True, window=window, why=why)
    which = ("the old answer" if before is not None else "the old negative answer") if got == old else \
        "neither the old nor the new answer"
    if expiry is None:
        why = which + (", and the zone's negative-caching TTL is unknown" if got == old else "")
        return Verdict(False, f"{expected} ({why})", why=why)
    why = f"{which}; {window}"
    return Verdict(False, f"{expected} ({why})", decisive=expired, window=window, why=why)


def verify_resolver(resolver: str, plan: Plan, *, applied_at: datetime, negative_ttl: int | None,
                    timeout: float = RESOLVER_TIMEOUT,
                    clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> CacheCheck:
    """Every step's key through `resolver`, judged by `judge`: one CacheCheck. The
    first key without an answer ends the resolver's turn (the rest would only wait
    for the same timeout)."""
    if applied_at.tzinfo is None:  # a naive time is UTC here, as everywhere in changegate
        applied_at = applied_at.replace(tzinfo=UTC)
    verdicts: list[tuple[str, Verdict]] = []
    for step in plan.steps:
        try:
            answer = resolve(resolver=resolver, name=step.key.name, rdtype=step.key.rdtype, timeout=timeout)
        except AdapterError as exc:
            verdicts.append((str(step.key), Verdict(False, f"no answer: {exc.message}")))
            break
        verdicts.append((str(step.key), judge(answer, before=step.before, after=step.after, applied_at=applied_at,
                                              now=clock(), negative_ttl=negative_ttl)))
    failures = [(key, verdict) for key, verdict in verdicts if not verdict.ok]
    name = f"resolver {resolver}"
    if failures:
        lines = [f"{key}: {verdict.text}" for key, verdict in failures[:_DETAIL_KEYS]]
        if len(failures) > _DETAIL_KEYS:
            lines.append(f"and {len(failures) - _DETAIL_KEYS} more")
        return CacheCheck(name=name, kind="resolver", ok=False, detail="; ".join(lines),
                          decisive=any(verdict.decisive for _, verdict in failures))
    stale = [f"{key}: {verdict.text}" for key, verdict in verdicts if verdict.stale]
    planned = len(verdicts) - len(stale)
    more = [f"and {len(stale) - _DETAIL_KEYS} more stale"] if len(stale) > _DETAIL_KEYS else []
    detail = "; ".join([*stale[:_DETAIL_KEYS], *more, *([f"{planned} RRset(s) as planned"] if planned else [])])
    return CacheCheck(name=name, kind="resolver", ok=True, detail=detail, stale=bool(stale))
