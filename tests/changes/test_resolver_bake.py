"""Checks through resolvers during the bake (issue 16), end to end: a real
authoritative named, a real caching resolver in front of it (tests/conftest.py
`caching_resolver`), the worker's code run in this process (tests.factories.run).
The old records get TTL 3 so every bake lasts a few seconds. Also the bake's two
new rules (a decisive outcome fails at once, a stale one does not end the bake),
and the registration API refusing a bad resolver."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dns.query
import dns.rcode
import dns.tsigkeyring
import dns.update
import pytest

from adapters.interface import CacheCheck, VerifyReport
from changes.models import AuditEvent, ChangeRequest, CheckResult, Target
from dns_adapters.local_named import LocalNamed, LocalResolver, default_zone_text
from dns_adapters.resolve import resolve
from pipeline.checks import BakePolicy, CheckOutcome, bake
from tests.adapters.memory_kind import MemoryAdapter
from tests.conftest import grant
from tests.factories import api_client, approved, run, upsert

State = ChangeRequest.State
HEALTHY, BROKEN = "192.0.2.1", "198.51.100.9"


def set_www(server: LocalNamed, zone: str, address: str, ttl: int = 3) -> None:
    """Somebody sets www directly on the authoritative server (as nsupdate would)."""
    update = dns.update.UpdateMessage(zone, keyring=dns.tsigkeyring.from_file(server.key_file))
    update.replace("www", ttl, "A", address)
    assert dns.query.tcp(update, "127.0.0.1", port=server.port, timeout=3).rcode() == dns.rcode.NOERROR


def resolver_target(operator, author, reviewer, named_server, zone: str, resolvers: list[str],
                    health_checks: list[dict[str, Any]] = ()) -> Target:
    """A target whose bake follows the old TTL (3 s here), with resolvers and no
    watch window (this module is about the bake)."""
    from changes.services import target_register

    target = target_register(actor=operator, name=zone, bake_seconds=0, bake_max_seconds=60, watch_seconds=0,
                             health_checks=list(health_checks), config={
                                 "zone": zone, "primary": named_server.primary,
                                 "tsig_key_file": str(named_server.key_file), "timeout": 3, "resolvers": resolvers})
    grant(author, "engineer", target)
    grant(reviewer, "reviewer", target)
    return target


def through(resolver: LocalResolver, zone: str) -> list[str] | None:
    return resolve(resolver=resolver.address, name=f"www.{zone}.", rdtype="A", timeout=2)


def authoritative(server: LocalNamed, zone: str) -> list[str]:
    response = dns.query.tcp(dns.message.make_query(f"www.{zone}.", "A"), "127.0.0.1", port=server.port, timeout=3)
    return sorted(rd.to_text() for rrset in response.answer for rd in rrset)


def rows(change, kind: str) -> list[tuple[int, bool, str]]:
    return list(CheckResult.objects.filter(execution__change=change, phase="apply", kind=kind)
                .order_by("round").values_list("round", "ok", "detail"))


@pytest.fixture
def other_copy(fresh_zone) -> Iterator[LocalResolver]:
    """A resolver that forwards to a second authoritative server holding its own copy
    of the zone (www = HEALTHY, TTL 3): it never sees changegate's change."""
    copy = LocalNamed({fresh_zone: default_zone_text(fresh_zone, f"www 3 IN A {HEALTHY}\n")})
    copy.start()
    resolver = LocalResolver(copy.primary, zones=[fresh_zone])
    try:
        resolver.start()
        yield resolver
    finally:
        resolver.stop()
        copy.stop()


# ---------------------------------------------------------------------------
# A bad change that shows only once the old TTL has run out


@pytest.mark.django_db
@pytest.mark.named
def test_a_bad_change_seen_only_after_the_old_ttl_is_caught_inside_the_bake_and_rolled_back(
        operator, author, reviewer, named_server, caching_resolver, fresh_zone):
    set_www(named_server, fresh_zone, HEALTHY)
    healthy = {"type": "dns_resolve", "resolver": caching_resolver.address, "name": f"www.{fresh_zone}",
               "rdtype": "A", "expect": [HEALTHY], "timeout": 1}
    target = resolver_target(operator, author, reviewer, named_server, fresh_zone, [caching_resolver.address],
                             health_checks=[healthy])
    change = approved(author, reviewer, target, upsert("www", BROKEN, ttl=3))
    assert through(caching_resolver, fresh_zone) == [HEALTHY]  # the resolver caches the old answer now

    assert run(change) == State.ROLLED_BACK

    declared = rows(change, "dns_resolve")
    # Stale (not yet proof) while the resolver served the cached old answer; the first
    # round that saw the change's wrong answer rolled it back, without a second one.
    assert declared[0][1] and declared[0][2].startswith("stale (old TTL runs out in "), declared
    assert [ok for _, ok, _ in declared].count(False) == 1 and not declared[-1][1], declared
    assert declared[-1][2] == (f"expected {HEALTHY}, got {BROKEN}; missing {HEALTHY}; unexpected {BROKEN} "
                               "(decisive: the change's new answer)")
    last_round = CheckResult.objects.filter(execution__change=change, phase="apply").order_by("-round")[0].round
    assert declared[-1][0] == last_round
    resolver = rows(change, "resolver")
    assert any(ok and "stale (old TTL runs out in" in detail for _, ok, detail in resolver), resolver
    assert resolver[-1][1] and resolver[-1][2] == "1 RRset(s) as planned"  # the change itself reached the resolver
    failed = AuditEvent.objects.get(change=change, action="rollback_started").payload["failed_checks"]
    assert [(check["kind"], check.get("decisive")) for check in failed] == [("dns_resolve", True)]
    assert authoritative(named_server, fresh_zone) == [HEALTHY]


@pytest.mark.django_db
@pytest.mark.named
def test_a_resolver_still_serving_the_old_answer_after_its_ttl_rolls_the_change_back_at_once(
        operator, author, reviewer, named_server, other_copy, fresh_zone):
    set_www(named_server, fresh_zone, HEALTHY)
    target = resolver_target(operator, author, reviewer, named_server, fresh_zone, [other_copy.address])
    change = approved(author, reviewer, target, upsert("www", BROKEN, ttl=3))

    assert run(change) == State.ROLLED_BACK

    resolver = rows(change, "resolver")
    assert resolver[0][1] and "stale" in resolver[0][2], resolver  # within the old TTL: not a failure
    # One wrong answer after the old TTL ran out is enough: no second round.
    assert [ok for _, ok, _ in resolver].count(False) == 1 and not resolver[-1][1], resolver
    (failed,) = AuditEvent.objects.get(change=change, action="rollback_started").payload["failed_checks"]
    assert failed["name"] == f"resolver {other_copy.address}" and failed["kind"] == "resolver"
    assert failed["decisive"] is True
    assert failed["detail"].startswith(f"www.{fresh_zone}. A: expected [{BROKEN}], got [{HEALTHY}] (the old answer; "
                                       "the old TTL of 3 s ran out at ")
    assert authoritative(named_server, fresh_zone) == [HEALTHY]


# ---------------------------------------------------------------------------
# A good change: the stale answer during the old TTL is not a failure


@pytest.mark.django_db
@pytest.mark.named
def test_a_good_change_with_a_stale_answer_during_the_old_ttl_is_not_rolled_back(
        operator, author, reviewer, named_server, caching_resolver, fresh_zone):
    set_www(named_server, fresh_zone, HEALTHY)
    target = resolver_target(operator, author, reviewer, named_server, fresh_zone, [caching_resolver.address])
    change = approved(author, reviewer, target, upsert("www", "192.0.2.2", ttl=3))
    assert through(caching_resolver, fresh_zone) == [HEALTHY]

    assert run(change) == State.APPLIED

    resolver = rows(change, "resolver")
    assert all(ok for _, ok, _ in resolver), resolver
    details = [detail for _, _, detail in resolver]
    stale = [i for i, detail in enumerate(details) if detail.startswith(f"www.{fresh_zone}. A: stale (")]
    planned = [i for i, detail in enumerate(details) if detail == "1 RRset(s) as planned"]
    assert stale and planned and max(stale) < min(planned), details
    # The bake did not end on a stale answer: its last round saw the new one.
    assert details[-1] == "1 RRset(s) as planned"
    assert through(caching_resolver, fresh_zone) == ["192.0.2.2"]


@pytest.mark.django_db
@pytest.mark.named
def test_a_good_change_whose_declared_check_expects_the_new_answer_is_not_rolled_back_while_the_old_is_cached(
        operator, author, reviewer, named_server, caching_resolver, fresh_zone):
    set_www(named_server, fresh_zone, HEALTHY)
    new = {"type": "dns_resolve", "resolver": caching_resolver.address, "name": f"www.{fresh_zone}",
           "rdtype": "A", "expect": ["192.0.2.2"], "timeout": 1}
    target = resolver_target(operator, author, reviewer, named_server, fresh_zone, [], health_checks=[new])
    change = approved(author, reviewer, target, upsert("www", "192.0.2.2", ttl=3))
    assert through(caching_resolver, fresh_zone) == [HEALTHY]

    assert run(change) == State.APPLIED

    declared = rows(change, "dns_resolve")
    assert all(ok for _, ok, _ in declared), declared
    details = [detail for _, _, detail in declared]
    stale = [i for i, detail in enumerate(details) if detail.startswith("stale (old TTL ")]
    answered = [i for i, detail in enumerate(details) if detail == "answered 192.0.2.2"]
    assert stale and answered and max(stale) < min(answered), details
    assert details[-1] == "answered 192.0.2.2"  # the bake did not end on a stale answer


# ---------------------------------------------------------------------------
# The registration API


@pytest.mark.django_db
@pytest.mark.named
@pytest.mark.parametrize(("resolvers", "field"), [
    (["not-an-address"], "config.resolvers[0]"),
    (["127.0.0.1:5399", "127.0.0.1:0"], "config.resolvers[1]"),
    ("127.0.0.1:5399", "config.resolvers"),
])
def test_a_bad_resolver_is_refused_naming_it_and_registers_nothing(operator, named_server, fresh_zone,
                                                                   resolvers, field):
    body = {"name": fresh_zone, "config": {"zone": fresh_zone, "primary": named_server.primary,
                                           "tsig_key_file": str(named_server.key_file), "resolvers": resolvers}}
    response = api_client(operator).post("/api/v1/targets/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in {e["field"] for e in response.json()["errors"]}
    assert not Target.objects.filter(name=fresh_zone).exists()


@pytest.mark.django_db
@pytest.mark.named
def test_a_target_registers_with_its_resolvers(operator, named_server, caching_resolver, fresh_zone):
    body = {"name": fresh_zone, "config": {"zone": fresh_zone, "primary": named_server.primary,
                                           "tsig_key_file": str(named_server.key_file),
                                           "resolvers": [caching_resolver.address]}}
    response = api_client(operator).post("/api/v1/targets/", body, format="json")
    assert response.status_code == 201, response.content
    assert Target.objects.get(name=fresh_zone).config["resolvers"] == [caching_resolver.address]


# ---------------------------------------------------------------------------
# The bake's rules for cache outcomes (a scripted adapter in this process)


class ScriptedCaches(MemoryAdapter):
    """verify answers nothing; verify_caches plays the given rounds in order."""

    def __init__(self, rounds: list[CacheCheck]) -> None:
        self.zone, self.rounds = "scripted", list(rounds)

    def verify(self, plan):
        return VerifyReport(())

    def verify_caches(self, plan, *, applied_at):
        return [self.rounds.pop(0)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def cache(*, ok: bool = True, stale: bool = False, decisive: bool = False) -> CacheCheck:
    return CacheCheck(name="resolver 127.0.0.1:5399", kind="resolver", ok=ok, detail="d", stale=stale,
                      decisive=decisive)


def scripted_bake(rounds: list[CacheCheck], *, bake_seconds: float = 1, applied_at=datetime.now(UTC), **policy):
    from adapters.plan import Plan, RRKey, RRValue, Step

    plan = Plan(zone="scripted", steps=(Step(key=RRKey("k", "t"), before=None, after=RRValue(0, ("v",))),))
    adapter, clock, seen = ScriptedCaches(rounds), FakeClock(), []
    result = bake(adapter=adapter, plan=plan, checks=[], applied_at=applied_at, clock=clock, sleep=clock.sleep,
                  policy=BakePolicy(bake_seconds=bake_seconds, interval=0.5, **policy),
                  on_round=lambda n, outcomes: seen.append(outcomes))
    return result, seen


def test_a_decisive_failure_fails_the_bake_in_its_first_round():
    result, seen = scripted_bake([cache(stale=True), cache(ok=False, decisive=True)])
    assert (result.ok, result.rounds) == (False, 2)
    assert result.failed == [CheckOutcome(name="resolver 127.0.0.1:5399", kind="resolver", ok=False, detail="d",
                                          duration_ms=result.failed[0].duration_ms, decisive=True)]
    assert result.failed[0].to_json()["decisive"] is True


def test_an_ordinary_failure_still_needs_the_threshold():
    result, _ = scripted_bake([cache(ok=False), cache(), cache(), cache()])
    assert (result.ok, result.rounds) == (True, 3)  # forgiven: it did not repeat


def test_a_stale_outcome_does_not_end_the_bake_until_it_settles():
    # bake 1 s, interval 0.5: three rounds would do; the stale ones keep it going.
    result, seen = scripted_bake([cache(stale=True)] * 4 + [cache()] + [cache()] * 5)
    assert (result.ok, result.rounds) == (True, 5)
    assert [outcomes[0].stale for outcomes in seen] == [True] * 4 + [False]


def test_a_stale_outcome_extends_the_bake_only_for_the_settle_time():
    result, seen = scripted_bake([cache(stale=True)] * 20, settle_seconds=1)
    assert (result.ok, result.rounds) == (True, 5)  # 0 .. 2 s: the bake's 1 s plus 1 s to settle


def test_without_applied_at_no_cache_is_asked():
    result, seen = scripted_bake([], applied_at=None)
    assert result.ok and seen == [[]] * result.rounds
