"""Running health checks after an apply: one round, and the bake that repeats it.

A round is the automatic check (every nameserver answers exactly the plan's
`after`, through the adapter's `verify`), the caches in front of the target once
the change is applied (DNS: the target's resolvers, through the adapter's
`verify_caches`), plus every declared check (validated by
`pipeline.check_specs.validate_health_checks`). Nothing here touches the database:
the caller stores the outcomes from `bake(on_round=...)`. No check ever raises:
every failure, including a bug in the check itself, is an outcome with ok=False.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import requests

from adapters import Adapter, AdapterError, Plan, RRKey, RRValue, VerifyReport
from adapters.kind import CheckContext
from changes.kinds import REGISTRY
from pipeline import check_specs as health

# The automatic check, the generic declared ones, then each kind's own (dns_resolve).
KINDS = ("verify", *health.CHECK_FIELDS)
# Enough for a health page or a status JSON; a check never downloads a release.
HTTP_BODY_LIMIT = 64 * 1024
# What a check that did not finish by the round deadline reports (a failed check).
ROUND_TIMED_OUT = "timed out at round deadline"
# Two consecutive failed rounds: one lost packet does not roll a change back, a
# real outage does within two intervals.
DEFAULT_FAILURE_THRESHOLD = 2
# The default of pipeline.check_specs for a check declared without a timeout.
DEFAULT_TIMEOUT = float(health.DEFAULT_TIMEOUT)
# Keys listed in a verify detail before "and N more".
_DETAIL_KEYS = 5
# A bake whose length follows the old values' cache time (pipeline.bake_time) ends
# about when the last cached copy expires, and a kind's stale rule allows a little
# slack past that (DNS: 1 s): the bake's rounds go on this long, plus two intervals,
# so that a stale outcome is followed by one that is not.
STALE_SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class CheckOutcome:
    """One check in one round. `name` says what was checked ("tcp 10.0.0.5:443",
    "verify ns 127.0.0.1:5300"), `detail` what was expected and what came back."""

    name: str
    kind: str
    ok: bool
    detail: str
    duration_ms: float
    # ok only because a cache may still hold the old value: not proof yet, so the
    # bake does not end on it (see `bake`).
    stale: bool = False
    # A failure that needs no second round: a definitive wrong answer at a time when
    # nothing may still legitimately serve it. `bake` fails at once.
    decisive: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "kind": self.kind, "ok": self.ok, "detail": self.detail,
                                "duration_ms": self.duration_ms}
        if self.stale:
            data["stale"] = True
        if self.decisive:
            data["decisive"] = True
        return data


def _hostport(host: str, port: int | str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _error(exc: BaseException) -> str:
    message = exc.message if isinstance(exc, AdapterError) else str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


# ---------------------------------------------------------------------------
# Declared checks


def check_name(check: Mapping[str, Any]) -> str:
    """The human name of a normalized declared check (stable across rounds)."""
    kind = check.get("type")
    if kind == "tcp":
        return f"tcp {_hostport(str(check.get('host')), check.get('port', '?'))}"
    if kind == "http":
        return f"http {check.get('url')}"
    check_kind = REGISTRY.check_kind(str(kind))
    if check_kind is not None:
        return check_kind.describe(check)
    return f"{kind} (unknown check type)"


def _run_tcp(check: Mapping[str, Any]) -> tuple[bool, str]:
    host, port, timeout = check["host"], check["port"], float(check.get("timeout", DEFAULT_TIMEOUT))
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except TimeoutError:
        return False, f"no connection within {timeout:g}s"
    except OSError as exc:
        return False, _error(exc)
    return True, "connected"


def _contains(body: bytes, needle: str, encoding: str | None) -> bool:
    if needle.encode("utf-8") in body:
        return True
    try:
        return needle in body.decode(encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return False


def _run_http(check: Mapping[str, Any]) -> tuple[bool, str]:
    url, expect = check["url"], int(check.get("expect_status", 200))
    timeout = float(check.get("timeout", DEFAULT_TIMEOUT))
    needle = check.get("contains")
    # requests' timeout is per socket operation; the deadline also bounds a server
    # that drips the body slowly.
    deadline = time.monotonic() + timeout
    try:
        with requests.get(url, timeout=timeout, allow_redirects=False, stream=True) as response:
            if response.status_code != expect:
                return False, f"expected status {expect}, got {response.status_code} {response.reason or ''}".rstrip()
            if not needle:
                return True, f"status {response.status_code}"
            body = bytearray()
            for chunk in response.iter_content(chunk_size=8192):
                body += chunk
                if len(body) >= HTTP_BODY_LIMIT or time.monotonic() > deadline:
                    break
            body = body[:HTTP_BODY_LIMIT]
            if _contains(bytes(body), needle, response.encoding):
                return True, f"status {response.status_code}, body contains {needle!r}"
            return False, f"status {response.status_code}, but the first {len(body)} bytes of the body lack {needle!r}"
    except Exception as exc:  # any failure is the check's result
        return False, _error(exc)


_RUNNERS: dict[str, Callable[[Mapping[str, Any]], tuple[bool, str]]] = {
    "tcp": _run_tcp,
    "http": _run_http,
}


def run_declared(check: Mapping[str, Any], context: CheckContext | None = None) -> CheckOutcome:
    """Run one normalized declared check (tcp, http or a kind's own, such as
    dns_resolve). With a `context` (the applied change), a kind's check that can
    judge against the plan does so (`CheckKind.run_in`): its outcome may be stale
    or decisive. Never raises."""
    kind = str(check.get("type"))
    started = time.perf_counter()
    stale = decisive = False
    try:
        name = check_name(check)
        check_kind = REGISTRY.check_kind(kind)
        runner = _RUNNERS.get(kind) or (check_kind.run if check_kind is not None else None)
        if runner is None:
            ok, detail = False, f"unknown check type {kind!r}"
        elif context is not None and check_kind is not None and check_kind.run_in is not None:
            result = check_kind.run_in(check, context)
            ok, detail = result.ok, result.detail
            stale, decisive = result.ok and result.stale, not result.ok and result.decisive
        else:
            ok, detail = runner(check)
    except Exception as exc:  # a malformed check is a failed check, not a crashed bake
        name, ok, detail = f"{kind} check", False, f"check could not run: {_error(exc)}"
        stale = decisive = False
    return CheckOutcome(name=name, kind=kind, ok=ok, detail=detail, duration_ms=_elapsed_ms(started),
                        stale=stale, decisive=decisive)


# ---------------------------------------------------------------------------
# The automatic check: every nameserver answers the plan's `after`


def _value_text(value: RRValue | None) -> str:
    if value is None:
        return "absent"
    return f"ttl {value.ttl} [{', '.join(value.rdatas)}]"


def _verify_detail(failures: Sequence[Any], expected: Mapping[RRKey, RRValue | None]) -> str:
    errors = list(dict.fromkeys(check.error for check in failures if check.error))
    if errors and all(check.error for check in failures):
        return f"no answer: {'; '.join(errors)}"
    lines = []
    for check in failures[:_DETAIL_KEYS]:
        if check.error:
            lines.append(f"{check.key}: {check.error}")
        else:
            want, got = _value_text(expected.get(check.key)), _value_text(check.answer)
            lines.append(f"{check.key}: expected {want}, got {got}")
    if len(failures) > _DETAIL_KEYS:
        lines.append(f"and {len(failures) - _DETAIL_KEYS} more")
    return "; ".join(lines)


def run_verify(adapter: Adapter, plan: Plan) -> list[CheckOutcome]:
    """One outcome per nameserver, in the adapter's order: ok when it answers
    exactly `after` for every step (absent for deletions). `duration_ms` is that of
    the whole verify call. An adapter that raises gives one failed outcome."""
    started = time.perf_counter()
    try:
        report: VerifyReport = adapter.verify(plan)
    except Exception as exc:  # a check never raises
        return [CheckOutcome(name=f"verify {plan.zone}", kind="verify", ok=False,
                             detail=f"verify failed: {_error(exc)}", duration_ms=_elapsed_ms(started))]
    duration = _elapsed_ms(started)
    expected = {step.key: step.after for step in plan.steps}
    by_server: dict[str, list[Any]] = {}
    for check in report.checks:
        by_server.setdefault(check.server, []).append(check)
    outcomes = []
    for server, checks in by_server.items():
        failures = [check for check in checks if not check.ok]
        detail = _verify_detail(failures, expected) if failures else f"{len(checks)} RRset(s) as planned"
        outcomes.append(CheckOutcome(name=f"verify ns {server}", kind="verify", ok=not failures, detail=detail,
                                     duration_ms=duration))
    return outcomes


def run_caches(adapter: Adapter, plan: Plan, applied_at: datetime) -> list[CheckOutcome]:
    """One outcome per cache the adapter declares (DNS: per resolver), judged by the
    kind's stale rule; `duration_ms` is that of the whole call. An adapter that
    raises gives one failed outcome."""
    started = time.perf_counter()
    try:
        caches = adapter.verify_caches(plan, applied_at=applied_at)
    except Exception as exc:  # a check never raises
        return [CheckOutcome(name=f"caches {plan.zone}", kind="cache", ok=False,
                             detail=f"cache check failed: {_error(exc)}", duration_ms=_elapsed_ms(started))]
    duration = _elapsed_ms(started)
    return [CheckOutcome(name=cache.name, kind=cache.kind, ok=cache.ok, detail=cache.detail, duration_ms=duration,
                         stale=cache.ok and cache.stale, decisive=not cache.ok and cache.decisive)
            for cache in caches]


# ---------------------------------------------------------------------------
# A round and a bake


def _late(*, name: str, kind: str, deadline: float) -> CheckOutcome:
    return CheckOutcome(name=name, kind=kind, ok=False, detail=f"{ROUND_TIMED_OUT} ({deadline:g}s)",
                        duration_ms=round(deadline * 1000, 3))


def _declared_name(check: Mapping[str, Any]) -> str:
    try:
        return check_name(check)
    except Exception:  # same fallback as run_declared
        return f"{check.get('type')} check"


def run_round(*, adapter: Adapter | None, plan: Plan | None,
              checks: Sequence[Mapping[str, Any]], deadline: float | None = None,
              applied_at: datetime | None = None) -> list[CheckOutcome]:
    """Verify outcomes (one per nameserver; none without adapter or plan), then the
    cache outcomes (one per cache the adapter declares; none without `applied_at`,
    the time the change was applied, which the stale rule counts from), then one
    outcome per declared check in input order (judged against the plan, when the
    check's kind can, given `plan` and `applied_at`: `run_declared`). Never raises.

    Every check runs at once, each in its own thread (pipeline.check_specs bounds their
    number), so the round lasts as long as its slowest check; and never longer than
    `deadline` seconds (default CHANGEGATE_CHECK_ROUND_SECONDS, shorter than the
    lease): a check still running then is a failed outcome, ROUND_TIMED_OUT, one
    like any other (stored, counted by the bake), never dropped."""
    deadline = health.round_deadline_seconds() if deadline is None else deadline
    verify = adapter is not None and plan is not None and not plan.is_empty
    caches = verify and applied_at is not None
    tasks = len(checks) + (1 if verify else 0) + (1 if caches else 0)
    if tasks == 0:
        return []
    pool = ThreadPoolExecutor(max_workers=tasks, thread_name_prefix="check")
    try:
        verify_future: Future[list[CheckOutcome]] | None = None
        caches_future: Future[list[CheckOutcome]] | None = None
        if adapter is not None and plan is not None and verify:
            verify_future = pool.submit(run_verify, adapter, plan)
            if applied_at is not None:
                caches_future = pool.submit(run_caches, adapter, plan, applied_at)
        # The declared checks judge against the change only once it is applied (the
        # stale rule counts from applied_at), like the cache outcomes.
        context = CheckContext(plan=plan, applied_at=applied_at) if plan is not None and applied_at is not None \
            else None
        declared = [pool.submit(run_declared, check, context) for check in checks]
        wait([*declared, *(f for f in (verify_future, caches_future) if f is not None)], timeout=deadline)
    finally:
        # Never wait for a check past the deadline (the `with` form would): its thread
        # ends on its own socket timeout and its late result is not wanted. The
        # adapter's verify opens its own connections, so a late one shares nothing
        # with the rollback that may follow.
        pool.shutdown(wait=False, cancel_futures=True)
    outcomes: list[CheckOutcome] = []
    if verify_future is not None and plan is not None:
        outcomes += verify_future.result() if verify_future.done() else [
            _late(name=f"verify {plan.zone}", kind="verify", deadline=deadline)]
    if caches_future is not None and plan is not None:
        outcomes += caches_future.result() if caches_future.done() else [
            _late(name=f"caches {plan.zone}", kind="cache", deadline=deadline)]
    for check, future in zip(checks, declared, strict=True):
        outcomes.append(future.result() if future.done() else
                        _late(name=_declared_name(check), kind=str(check.get("type")), deadline=deadline))
    return outcomes


@dataclass
class BakePolicy:
    """How long and how often to check after an apply.

    `interval` defaults to bake/5 clamped to [0.2, 5] seconds (so a short bake still
    gets a few rounds and a long one is checked every 5 s); `failure_threshold` is
    the number of consecutive failed rounds of one check that fails the bake
    (default 2); `round_deadline` bounds every round (default
    CHANGEGATE_CHECK_ROUND_SECONDS); `settle_seconds` is how long past
    `bake_seconds` the bake goes on while an outcome is still stale (default two
    intervals plus STALE_SETTLE_SECONDS)."""

    bake_seconds: float
    interval: float | None = None
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    round_deadline: float | None = None
    settle_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.bake_seconds < 0:
            raise ValueError("bake_seconds must be >= 0")
        if self.interval is None:
            self.interval = min(5.0, max(0.2, self.bake_seconds / 5))
        if self.interval <= 0:
            raise ValueError("interval must be > 0")
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if self.round_deadline is None:
            self.round_deadline = health.round_deadline_seconds()
        if self.round_deadline <= 0:
            raise ValueError("round_deadline must be > 0")
        if self.settle_seconds is None:
            self.settle_seconds = 2 * self.interval + STALE_SETTLE_SECONDS
        if self.settle_seconds < 0:
            raise ValueError("settle_seconds must be >= 0")


@dataclass(frozen=True)
class BakeResult:
    """ok: no check reached the threshold. `failed` holds the last outcome of every
    check that did (empty when ok)."""

    ok: bool
    rounds: int
    failed: list[CheckOutcome] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "rounds": self.rounds, "failed": [o.to_json() for o in self.failed]}


def _identities(outcomes: Sequence[CheckOutcome]) -> list[tuple[str, str, int]]:
    """Keys that follow one check across rounds: (kind, name, n-th of that name)."""
    seen: dict[tuple[str, str], int] = {}
    keys = []
    for outcome in outcomes:
        n = seen.get((outcome.kind, outcome.name), 0)
        seen[(outcome.kind, outcome.name)] = n + 1
        keys.append((outcome.kind, outcome.name, n))
    return keys


def bake(
    *,
    adapter: Adapter | None,
    plan: Plan | None,
    checks: Sequence[Mapping[str, Any]],
    policy: BakePolicy,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_round: Callable[[int, list[CheckOutcome]], None] | None = None,
    applied_at: datetime | None = None,
) -> BakeResult:
    """Run rounds every `policy.interval` seconds for `policy.bake_seconds` (at least
    one round). `on_round(round_no, outcomes)` is called after every round, before
    anything is decided, so the failing round is stored too; what it raises
    propagates.

    Returns as soon as one check has failed `failure_threshold` consecutive rounds,
    or once with a decisive outcome, so the rollback can start at once. A check
    that is failing when the bake time is up is not forgiven for lack of time:
    rounds go on until it passes again or reaches the threshold (at most
    threshold - 1 extra rounds). Nor does a stale outcome end the bake (ok, but only
    because a cache may still hold the old value): rounds go on until it is
    settled or `policy.settle_seconds` past the bake time, so a failure that shows
    once the caches let go of the old value is seen inside the bake. `applied_at`
    (when the change was applied) enables the cache outcomes and the declared checks'
    judging against the plan (`run_round`).
    """
    assert policy.interval is not None and policy.settle_seconds is not None  # filled in by __post_init__
    start = clock()
    deadline = start + policy.bake_seconds
    settle_deadline = deadline + policy.settle_seconds
    next_at = start
    streaks: dict[tuple[str, str, int], int] = {}
    round_no = 0
    while True:
        round_no += 1
        outcomes = run_round(adapter=adapter, plan=plan, checks=checks, deadline=policy.round_deadline,
                             applied_at=applied_at)
        if on_round is not None:
            on_round(round_no, outcomes)
        failed = []
        for key, outcome in zip(_identities(outcomes), outcomes, strict=True):
            streaks[key] = 0 if outcome.ok else streaks.get(key, 0) + 1
            if streaks[key] >= policy.failure_threshold or (not outcome.ok and outcome.decisive):
                failed.append(outcome)
        if failed:
            return BakeResult(ok=False, rounds=round_no, failed=failed)
        next_at += policy.interval
        if next_at > deadline and all(outcome.ok for outcome in outcomes) and (
                not any(outcome.stale for outcome in outcomes) or next_at > settle_deadline):
            return BakeResult(ok=True, rounds=round_no)
        delay = next_at - clock()
        if delay > 0:
            sleep(delay)  # the bake interval itself
        else:
            next_at = clock()  # a round longer than the interval: go on, do not catch up with a burst
