"""Checks through caching resolvers (issue 16): the stale rule as a pure function,
the config field, and the DNS adapter asking a real caching resolver (a second
named in front of the session's one, tests/conftest.py `caching_resolver`)."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta

import pytest

from adapters.plan import Plan, RRKey, RRValue, Step
from dns_adapters.base import ItemValidationError
from dns_adapters.local_named import free_port
from dns_adapters.resolve import resolve
from dns_adapters.resolver_checks import judge, negative_cache_ttl
from dns_adapters.rfc2136 import RFC2136Adapter
from tests.dns_adapters.test_rfc2136 import adapter_for, outside_change

APPLIED = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
OLD = RRValue(3, ("192.0.2.1",))
NEW = RRValue(3, ("198.51.100.9",))


def at(seconds: float) -> datetime:
    return APPLIED + timedelta(seconds=seconds)


def verdict(answer, *, before=OLD, after=NEW, now: float, negative_ttl: int | None = None):
    return judge(answer, before=before, after=after, applied_at=APPLIED, now=at(now), negative_ttl=negative_ttl)


# ---------------------------------------------------------------------------
# The stale rule


def test_the_new_answer_is_ok_at_any_time():
    for now in (0, 2.9, 3.5, 600):
        result = verdict(["198.51.100.9"], now=now)
        assert (result.ok, result.stale, result.decisive, result.text) == (True, False, False, "as planned")


def test_the_old_answer_is_stale_but_ok_while_its_ttl_may_still_be_cached():
    early = verdict(["192.0.2.1"], now=0.5)
    assert (early.ok, early.stale, early.decisive) == (True, True, False)
    assert early.text == "stale (old TTL runs out in 3 s)"
    # One second of slack past the TTL (clocks, the time between answer and reading).
    slack = verdict(["192.0.2.1"], now=3.4)
    assert (slack.ok, slack.stale) == (True, True)
    assert slack.text == "stale (old TTL ran out 0.4 s ago, within the 1 s slack)"


def test_the_old_answer_after_its_ttl_ran_out_is_a_decisive_failure():
    late = verdict(["192.0.2.1"], now=4.0)
    assert (late.ok, late.stale, late.decisive) == (False, False, True)
    assert late.text == ("expected [198.51.100.9], got [192.0.2.1] (the old answer; the old TTL of 3 s ran out at "
                         "10:00:03Z, 1.0 s ago)")


def test_a_third_answer_fails_and_is_decisive_only_once_the_old_ttl_ran_out():
    during = verdict(["203.0.113.5"], now=1.0)
    assert (during.ok, during.decisive) == (False, False)
    assert during.text == ("expected [198.51.100.9], got [203.0.113.5] (neither the old nor the new answer; "
                           "old TTL runs out in 2 s)")
    after = verdict(["203.0.113.5"], now=10.0)
    assert (after.ok, after.decisive) == (False, True)
    # A missing answer (NXDOMAIN or NODATA) for a name that should exist is just as wrong.
    for missing in (None, []):
        gone = verdict(missing, now=10.0)
        assert (gone.ok, gone.decisive) == (False, True)
        assert gone.text.startswith("expected [198.51.100.9], got absent (neither the old nor the new answer")


def test_a_deletion_expects_no_answer_and_the_old_records_are_stale_for_their_ttl():
    assert verdict(None, after=None, now=0.1).ok
    assert verdict([], after=None, now=0.1).ok  # NODATA: the name holds other types
    still = verdict(["192.0.2.1"], after=None, now=1.0)
    assert (still.ok, still.stale) == (True, True)
    late = verdict(["192.0.2.1"], after=None, now=5.0)
    assert (late.ok, late.decisive) == (False, True)
    assert late.text.startswith("expected absent, got [192.0.2.1] (the old answer;")


def test_a_new_name_may_be_missing_for_the_zones_negative_caching_ttl():
    result = verdict(None, before=None, now=100, negative_ttl=300)
    assert (result.ok, result.stale, result.text) == (True, True, "stale (old TTL runs out in 200 s)")
    expired = verdict(None, before=None, now=302, negative_ttl=300)
    assert (expired.ok, expired.decisive) == (False, True)
    assert "(the old negative answer; the old TTL of 300 s ran out at 10:05:00Z, 2.0 s ago)" in expired.text
    # Without the SOA (its read failed) a missing answer is never excused, nor decisive.
    unknown = verdict(None, before=None, now=1, negative_ttl=None)
    assert (unknown.ok, unknown.decisive) == (False, False)
    assert unknown.text == ("expected [198.51.100.9], got absent (the old negative answer, and the zone's "
                            "negative-caching TTL is unknown)")


def test_the_negative_caching_ttl_is_the_lower_of_the_soa_ttl_and_its_minimum():
    soa = "ns1.demo.test. hostmaster.demo.test. 7 3600 600 604800 300"
    assert negative_cache_ttl(RRValue(3600, (soa,))) == 300
    assert negative_cache_ttl(RRValue(60, (soa,))) == 60
    assert negative_cache_ttl(None) is None
    assert negative_cache_ttl(RRValue(60, ("not an soa",))) is None


# ---------------------------------------------------------------------------
# The config field


@pytest.mark.parametrize(("resolvers", "fields"), [
    (["nope"], ["resolvers[0]"]),
    (["127.0.0.1:5300", "resolver.example:53"], ["resolvers[1]"]),
    (["127.0.0.1:70000"], ["resolvers[0]"]),
    (["127.0.0.1:5300", "127.0.0.1:5300"], ["resolvers[1]"]),
    ([53], ["resolvers[0]"]),
    ("127.0.0.1:5300", ["resolvers"]),
    ([f"127.0.0.1:{5300 + i}" for i in range(17)], ["resolvers"]),
])
def test_bad_resolvers_name_the_entry(named_server, resolvers, fields):
    config = {"zone": "demo.test", "primary": named_server.primary, "tsig_key_file": str(named_server.key_file),
              "resolvers": resolvers}
    with pytest.raises(ItemValidationError) as info:
        RFC2136Adapter.validate_config(config, key_dir=tempfile.gettempdir())
    assert [e.field for e in info.value.errors] == fields


def test_resolvers_are_optional_and_normalized(named_server):
    base = {"zone": "demo.test", "primary": named_server.primary, "tsig_key_file": str(named_server.key_file)}
    assert RFC2136Adapter.validate_config(base, key_dir=tempfile.gettempdir())["resolvers"] == []
    given = RFC2136Adapter.validate_config({**base, "resolvers": [" 127.0.0.1:5399", "[::1]:53"]},
                                           key_dir=tempfile.gettempdir())
    assert given["resolvers"] == ["127.0.0.1:5399", "[::1]:53"]


# ---------------------------------------------------------------------------
# The adapter through a real caching resolver


def www_plan(zone: str, before: RRValue | None, after: RRValue | None, name: str = "www") -> Plan:
    return Plan(zone=f"{zone}.", steps=(Step(key=RRKey(f"{name}.{zone}.", "A"), before=before, after=after),))


@pytest.mark.named
def test_a_target_without_resolvers_checks_no_cache(named_server, fresh_zone):
    adapter = adapter_for(named_server, fresh_zone)
    try:
        assert adapter.verify_caches(www_plan(fresh_zone, OLD, NEW), applied_at=APPLIED) == []
    finally:
        adapter.close()


@pytest.mark.named
def test_a_resolver_serving_the_cached_old_answer_is_stale_then_the_new_one_as_planned(
        named_server, caching_resolver, fresh_zone):
    outside_change(named_server, fresh_zone, lambda u: u.replace("www", 3, "A", "192.0.2.1"))
    owner = f"www.{fresh_zone}."
    assert resolve(resolver=caching_resolver.address, name=owner, rdtype="A", timeout=2) == ["192.0.2.1"]
    outside_change(named_server, fresh_zone, lambda u: u.replace("www", 3, "A", "198.51.100.9"))
    applied_at = datetime.now(UTC)
    adapter = adapter_for(named_server, fresh_zone, resolvers=[caching_resolver.address])
    try:
        (cached,) = adapter.verify_caches(www_plan(fresh_zone, OLD, NEW), applied_at=applied_at)
        assert (cached.name, cached.kind, cached.ok, cached.stale) == (
            f"resolver {caching_resolver.address}", "resolver", True, True)
        assert cached.detail.startswith(f"{owner} A: stale (old TTL runs out in ")
        # As if applied long ago: the old answer cached now is a decisive failure.
        (late,) = adapter.verify_caches(www_plan(fresh_zone, OLD, NEW), applied_at=applied_at - timedelta(seconds=60))
        assert (late.ok, late.decisive) == (False, True)
        assert late.detail.startswith(f"{owner} A: expected [198.51.100.9], got [192.0.2.1] (the old answer;")
    finally:
        adapter.close()


@pytest.mark.named
def test_a_new_name_cached_as_missing_is_stale_for_the_zones_negative_ttl(named_server, caching_resolver, fresh_zone):
    owner = f"fresh.{fresh_zone}."
    assert resolve(resolver=caching_resolver.address, name=owner, rdtype="A", timeout=2) is None  # NXDOMAIN, cached
    outside_change(named_server, fresh_zone, lambda u: u.add("fresh", 3, "A", "198.51.100.9"))
    adapter = adapter_for(named_server, fresh_zone, resolvers=[caching_resolver.address])
    try:
        # The test zones' SOA: TTL 3600, minimum 300 -> 300 s, read from the primary.
        (cached,) = adapter.verify_caches(www_plan(fresh_zone, None, NEW, name="fresh"), applied_at=datetime.now(UTC))
        assert (cached.ok, cached.stale) == (True, True)
        assert cached.detail in (f"{owner} A: stale (old TTL runs out in {s} s)" for s in (299, 300))
    finally:
        adapter.close()


@pytest.mark.named
def test_a_resolver_that_does_not_answer_is_a_failure_but_not_decisive(named_server, fresh_zone):
    silent = f"127.0.0.1:{free_port()}"
    adapter = adapter_for(named_server, fresh_zone, resolvers=[silent], timeout=0.5)
    try:
        (check,) = adapter.verify_caches(www_plan(fresh_zone, OLD, NEW), applied_at=APPLIED)
        assert (check.ok, check.decisive, check.stale) == (False, False, False)
        assert check.detail.startswith(f"www.{fresh_zone}. A: no answer: resolver {silent}")
    finally:
        adapter.close()


# ---------------------------------------------------------------------------
# A declared dns_resolve check for one of the plan's keys: the same stale rule,
# with the check's own `expect` as the right answer


def test_with_an_expect_the_old_answer_is_stale_even_when_it_is_what_is_expected():
    # Served from a cache it proves nothing about the change yet.
    result = judge(["192.0.2.1"], before=OLD, after=NEW, applied_at=APPLIED, now=at(1), negative_ttl=None,
                   expect=["192.0.2.1"])
    assert (result.ok, result.stale, result.text) == (True, True, "stale (old TTL runs out in 2 s)")
    expected = judge(["192.0.2.1"], before=OLD, after=NEW, applied_at=APPLIED, now=at(5), negative_ttl=None,
                     expect=["192.0.2.1"])
    assert (expected.ok, expected.stale, expected.text) == (True, False, "as expected")


def test_with_an_expect_the_changes_new_answer_that_is_not_expected_is_decisive_at_once():
    result = judge(["198.51.100.9"], before=OLD, after=NEW, applied_at=APPLIED, now=at(0.5), negative_ttl=None,
                   expect=["192.0.2.1"])
    assert (result.ok, result.decisive) == (False, True)
    assert result.text == "expected [192.0.2.1], got [198.51.100.9] (the change's new answer)"
    # A third answer waits for the old TTL (and its slack) like the resolver checks.
    third = judge(["203.0.113.5"], before=OLD, after=NEW, applied_at=APPLIED, now=at(0.5), negative_ttl=None,
                  expect=["198.51.100.9"])
    assert (third.ok, third.decisive) == (False, False)
    assert judge(["203.0.113.5"], before=OLD, after=NEW, applied_at=APPLIED, now=at(4.5), negative_ttl=None,
                 expect=["198.51.100.9"]).decisive


def dns_resolve(resolver: str, zone: str, expect: list[str], name: str = "www") -> dict:
    return {"type": "dns_resolve", "resolver": resolver, "name": f"{name}.{zone}", "rdtype": "A", "expect": expect,
            "timeout": 1}


@pytest.mark.named
def test_a_declared_check_is_judged_by_the_stale_rule_when_the_plan_changes_its_key(named_server, fresh_zone):
    from adapters.kind import CheckContext
    from dns_adapters.checks import run_dns_resolve_in

    # The named server answers recursion-desired queries for its own zones: a resolver
    # whose "cache" still holds the old answer, as long as the test likes.
    outside_change(named_server, fresh_zone, lambda u: u.replace("www", 3, "A", "192.0.2.1"))
    check = dns_resolve(named_server.primary, fresh_zone, ["198.51.100.9"])
    plan, now = www_plan(fresh_zone, OLD, NEW), datetime.now(UTC)

    stale = run_dns_resolve_in(check, CheckContext(plan=plan, applied_at=now))
    assert (stale.ok, stale.stale, stale.decisive) == (True, True, False)
    assert stale.detail == "stale (old TTL runs out in 3 s)"
    late = run_dns_resolve_in(check, CheckContext(plan=plan, applied_at=now - timedelta(seconds=10)))
    assert (late.ok, late.stale, late.decisive) == (False, False, True)
    assert late.detail.startswith("expected 198.51.100.9, got 192.0.2.1; missing 198.51.100.9; unexpected 192.0.2.1 "
                                  "(decisive: the old answer; the old TTL of 3 s ran out at ")
    # A bad change: the check expects the old address, the resolver serves the plan's new one.
    bad = run_dns_resolve_in(dns_resolve(named_server.primary, fresh_zone, ["203.0.113.5"]),
                             CheckContext(plan=www_plan(fresh_zone, RRValue(3, ("203.0.113.5",)), OLD), applied_at=now))
    assert (bad.ok, bad.decisive) == (False, True)
    assert bad.detail.endswith("(decisive: the change's new answer)")


@pytest.mark.named
def test_a_declared_check_is_unchanged_without_the_applied_change_or_for_a_key_the_plan_does_not_change(
        named_server, fresh_zone):
    from adapters.kind import CheckContext
    from dns_adapters.checks import run_dns_resolve_in
    from pipeline.checks import run_round

    outside_change(named_server, fresh_zone, lambda u: u.replace("www", 3, "A", "192.0.2.1"))
    check = dns_resolve(named_server.primary, fresh_zone, ["198.51.100.9"])
    plan, long_ago = www_plan(fresh_zone, OLD, NEW), datetime.now(UTC) - timedelta(hours=1)
    unchanged = "expected 198.51.100.9, got 192.0.2.1; missing 198.51.100.9; unexpected 192.0.2.1"

    # Through a round: judged against the plan only when the round knows when it was applied.
    (judged,) = run_round(adapter=None, plan=plan, checks=[check], applied_at=long_ago)
    assert (judged.ok, judged.decisive) == (False, True)
    (plain,) = run_round(adapter=None, plan=plan, checks=[check])
    assert (plain.ok, plain.stale, plain.decisive, plain.detail) == (False, False, False, unchanged)
    (no_plan,) = run_round(adapter=None, plan=None, checks=[check], applied_at=long_ago)
    assert (no_plan.ok, no_plan.decisive, no_plan.detail) == (False, False, unchanged)
    # A key the plan does not change.
    other = run_dns_resolve_in(check, CheckContext(plan=www_plan(fresh_zone, OLD, NEW, name="api"),
                                                   applied_at=long_ago))
    assert (other.ok, other.stale, other.decisive, other.detail) == (False, False, False, unchanged)
    # No answer at all stays an ordinary failure, even long after the old TTL.
    silent = run_dns_resolve_in(dns_resolve(f"127.0.0.1:{free_port()}", fresh_zone, ["198.51.100.9"]),
                                CheckContext(plan=plan, applied_at=long_ago))
    assert (silent.ok, silent.decisive) == (False, False)
    assert silent.detail.startswith("resolver 127.0.0.1:")
