"""Issue 12, defects 1-6 and 9: the adapter against real BIND 9, Knot DNS and PowerDNS
(tests/dns_servers.py), every test once per server. Each test failed on the servers
named in its docstring before the fix; ground truth is read with plain dnspython,
not through the adapter."""

from __future__ import annotations

import tempfile

import dns.message
import dns.query
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.tsigkeyring
import dns.update
import pytest

from adapters.errors import DataRefusedError, PartialApplyError
from dns_adapters.base import ConfigError, DriftError, Plan, RRKey, RRValue, Step
from dns_adapters.local_named import write_key_file
from dns_adapters.rfc2136 import RFC2136Adapter
from tests.dns_servers import LONG_TXT, ServerUnderTest

pytestmark = pytest.mark.named


@pytest.fixture
def zone(dns_server: ServerUnderTest) -> str:
    return dns_server.fresh_zone()


@pytest.fixture
def adapter(dns_server: ServerUnderTest, zone: str):
    adapter = adapter_for(dns_server, zone)
    yield adapter
    adapter.close()


def adapter_for(server: ServerUnderTest, zone: str, **overrides) -> RFC2136Adapter:
    config = {"zone": zone, "primary": server.primary, "tsig_key_file": str(server.key_file), "timeout": 3}
    config.update(overrides)
    return RFC2136Adapter(config, key_dir=tempfile.gettempdir())


def owner(zone: str, name: str) -> str:
    return f"{zone}." if name == "@" else f"{name}.{zone}."


def truth(server: ServerUnderTest, zone: str, name: str, rdtype: str) -> tuple[int, set[str]] | None:
    """(ttl, rdata exactly as the server serves them), or None."""
    query = dns.message.make_query(owner(zone, name), rdtype)
    response = dns.query.tcp(query, "127.0.0.1", port=server.port, timeout=3)
    for rrset in response.answer:
        if rrset.name.to_text().lower() == owner(zone, name).lower() and dns.rdatatype.to_text(rrset.rdtype) == rdtype:
            return rrset.ttl, {rd.to_text() for rd in rrset}
    return None


def outside(server: ServerUnderTest, zone: str, build) -> None:
    """Somebody else changes the zone with the same key (as nsupdate would)."""
    update = dns.update.UpdateMessage(zone, keyring=dns.tsigkeyring.from_file(server.key_file))
    build(update)
    response = dns.query.tcp(update, "127.0.0.1", port=server.port, timeout=3)
    assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())


def plan_for(adapter: RFC2136Adapter, items, **kwargs) -> Plan:
    return adapter.plan(adapter.validate_items(items, **kwargs), **kwargs)


# -- 1. a CNAME replacing data ---------------------------------------------------------


def test_cname_replacing_data_is_not_half_applied_when_data_appears(dns_server, adapter, zone):
    """Before: BIND and Knot deleted the A, ignored the CNAME and answered NOERROR
    (RFC 2136 section 3.4.2.2); PowerDNS refused and it was reported as a config error."""
    plan = plan_for(adapter, [{"op": "delete", "name": "old", "type": "A"},
                              {"op": "upsert", "name": "old", "type": "CNAME", "ttl": 300, "records": ["www"]}])
    outside(dns_server, zone, lambda u: u.add(owner(zone, "old"), 300, "TXT", '"appeared"'))
    with pytest.raises(DriftError):
        adapter.apply(plan)
    assert truth(dns_server, zone, "old", "A") == (300, {"192.0.2.40"})
    assert truth(dns_server, zone, "old", "CNAME") is None


def test_cname_replacing_data_applies_when_nothing_appeared(dns_server, adapter, zone):
    plan = plan_for(adapter, [{"op": "delete", "name": "old", "type": "A"},
                              {"op": "upsert", "name": "old", "type": "CNAME", "ttl": 300, "records": ["www"]}])
    assert adapter.apply(plan).applied is True
    assert truth(dns_server, zone, "old", "A") is None
    assert truth(dns_server, zone, "old", "CNAME") == (300, {f"www.{zone}."})


def test_cname_listed_before_the_delete_of_the_data_it_replaces_applies(dns_server, adapter, zone):
    """The items' order must not matter: a server that saw the CNAME added while the
    A was still there would ignore it (found while fixing defect 1)."""
    plan = plan_for(adapter, [{"op": "upsert", "name": "old", "type": "CNAME", "ttl": 300, "records": ["www"]},
                              {"op": "delete", "name": "old", "type": "A"}])
    assert adapter.apply(plan).applied is True
    assert truth(dns_server, zone, "old", "CNAME") == (300, {f"www.{zone}."})


def test_a_silently_ignored_part_is_detected_and_the_rest_restored(dns_server, adapter, zone):
    """Every server answers NOERROR to an UPDATE whose SOA has a lower serial and
    ignores that SOA (RFC 2136 section 3.4.2.2) while applying the rest. Planning
    refuses such an SOA (see test_interop_limits); a plan built by hand must still
    never be reported as applied: the read-back catches it and undoes the rest."""
    soa_key = RRKey(f"{zone}.", "SOA")
    soa = adapter.read([soa_key])[soa_key]
    assert soa is not None
    lower = RRValue(soa.ttl, (f"ns1.{zone}. hostmaster.{zone}. 0 3600 600 604800 300",))
    new_key = RRKey(owner(zone, "landed"), "A")
    plan = Plan(zone=f"{zone}.", steps=(Step(new_key, None, RRValue(300, ("192.0.2.77",))),
                                         Step(soa_key, soa, lower)))
    with pytest.raises(PartialApplyError) as caught:
        adapter.apply(plan)
    error = caught.value
    assert error.permanent and error.restored is True
    assert soa_key in error.keys and new_key not in error.keys
    assert f"{zone}. SOA" in error.message and "restored" in error.message
    assert truth(dns_server, zone, "landed", "A") is None


# -- 2. PowerDNS deletes single records case-sensitively ------------------------------------


def test_removing_a_record_stored_with_mixed_case_removes_it(dns_server, adapter, zone):
    """Before: PowerDNS answered NOERROR and deleted nothing (the adapter sent lower case)."""
    plan = plan_for(adapter, [{"op": "remove", "name": "@", "type": "MX", "records": [f"20 Mail2.{zone}."]}])
    assert adapter.apply(plan).applied is True
    _ttl, rdatas = truth(dns_server, zone, "@", "MX")
    assert {r.lower() for r in rdatas} == {f"10 mail.{zone}."}


def test_upserting_an_srv_whose_target_has_mixed_case_replaces_it(dns_server, adapter, zone):
    plan = plan_for(adapter, [{"op": "upsert", "name": "_sip._tcp", "type": "SRV", "ttl": 300,
                               "records": ["10 5 5061 www"]}])
    assert adapter.apply(plan).applied is True
    assert truth(dns_server, zone, "_sip._tcp", "SRV") == (300, {f"10 5 5061 www.{zone}."})


# -- 3. PowerDNS compares prerequisites case-insensitively ----------------------------------


def test_an_outside_case_only_change_of_a_txt_is_drift(dns_server, adapter, zone):
    """Before: PowerDNS let the prerequisite "abc" match "ABC" and the zone ended with both."""
    plan = plan_for(adapter, [{"op": "upsert", "name": "case", "type": "TXT", "ttl": 300, "records": ['"xyz"']}])
    outside(dns_server, zone, lambda u: u.replace(owner(zone, "case"), 300, "TXT", '"ABC"'))
    with pytest.raises(DriftError):
        adapter.apply(plan)
    assert truth(dns_server, zone, "case", "TXT") == (300, {'"ABC"'})


# -- 4. TXT strings over 255 bytes ----------------------------------------------------------


@pytest.mark.parametrize("op", ["upsert", "delete"])
def test_a_long_txt_can_be_changed(dns_server, adapter, zone, op):
    """Before: on PowerDNS (which stores the text as one string) every change failed as drift."""
    item = {"op": op, "name": "long", "type": "TXT"}
    if op == "upsert":
        item.update(ttl=300, records=['"short now"'])
    plan = plan_for(adapter, [item])
    assert plan.steps[0].before is not None
    assert "".join(plan.steps[0].before.rdatas).count("x") == LONG_TXT.count("x")
    assert adapter.apply(plan).applied is True
    assert truth(dns_server, zone, "long", "TXT") == ((300, {'"short now"'}) if op == "upsert" else None)


# -- 5. a bad TSIG key ------------------------------------------------------------------------


def test_a_wrong_secret_is_a_config_error_naming_the_key_not_the_secret(dns_server, zone, tmp_path):
    """Before: PowerDNS answered NOTAUTH / REFUSED without a TSIG record and the adapter
    raised TransientError (retried forever)."""
    wrong = "d3Jvbmctc2VjcmV0LWZvci1jaGFuZ2VnYXRlLXRlc3Q="
    key_file = tmp_path / "wrong.key"
    write_key_file(key_file, dns_server.key_name, wrong)
    adapter = adapter_for(dns_server, zone, tsig_key_file=str(key_file))
    try:
        for attempt in (adapter.check_reachable,
                        lambda: adapter.apply(Plan(zone=f"{zone}.", steps=(
                            Step(RRKey(owner(zone, "n"), "A"), None, RRValue(300, ("192.0.2.1",))),)))):
            with pytest.raises(ConfigError) as caught:
                attempt()
            assert dns_server.key_name in caught.value.message
            assert wrong not in caught.value.message and dns_server.secret not in caught.value.message
    finally:
        adapter.close()
    assert truth(dns_server, zone, "n", "A") is None


def test_a_key_the_server_knows_but_does_not_allow_is_a_config_error(dns_server, adapter, zone):
    plan = plan_for(adapter, [{"op": "upsert", "name": "n", "type": "A", "ttl": 300, "records": ["192.0.2.1"]}])
    adapter = adapter_for(dns_server, zone, tsig_key_file=str(dns_server.process.extra_key_file("intruder-key")))
    try:
        with pytest.raises(ConfigError) as caught:
            adapter.apply(plan)
        assert not isinstance(caught.value, DataRefusedError)
    finally:
        adapter.close()
    assert truth(dns_server, zone, "n", "A") is None


# -- 6. Knot ignores TTL-only changes -----------------------------------------------------------


def test_a_ttl_only_change_lands(dns_server, adapter, zone):
    """Before: Knot answered NOERROR and kept the old TTL; apply reported success."""
    plan = plan_for(adapter, [{"op": "upsert", "name": "www", "type": "A", "ttl": 600,
                               "records": ["192.0.2.10", "192.0.2.11"]}])
    assert adapter.apply(plan).applied is True
    assert truth(dns_server, zone, "www", "A") == (600, {"192.0.2.10", "192.0.2.11"})
    assert adapter.rollback(plan).applied is True
    assert truth(dns_server, zone, "www", "A") == (300, {"192.0.2.10", "192.0.2.11"})


# -- 9. data refusals are not configuration errors -------------------------------------------


def test_an_mx_to_an_in_zone_name_without_address(dns_server, adapter, zone):
    """BIND refuses it (REFUSED); before, that was reported as a configuration error.
    Knot and PowerDNS take it. Every server: the plan warns the reviewer."""
    plan = plan_for(adapter, [{"op": "upsert", "name": "shop", "type": "MX", "ttl": 300, "records": ["10 nohost"]}])
    assert any(f"nohost.{zone}." in warning and "no address" in warning for warning in plan.warnings)
    if dns_server.kind == "bind":
        with pytest.raises(DataRefusedError) as caught:
            adapter.apply(plan)
        assert caught.value.permanent and f"shop.{zone}. MX" in caught.value.message
        assert truth(dns_server, zone, "shop", "MX") is None
    else:
        assert adapter.apply(plan).applied is True


# -- what a server cannot do is refused on that server -------------------------------------------


def test_an_apex_ns_ttl_change(dns_server, adapter, zone):
    """The apex NS RRset cannot be replaced whole (deleting it is ignored, RFC 2136
    section 3.4.2.4), and Knot ignores an add that changes only the TTL: on Knot the
    change cannot land, the read-back says so and nothing stays changed."""
    plan = plan_for(adapter, [{"op": "upsert", "name": "@", "type": "NS", "ttl": 7200, "records": [f"ns1.{zone}."]}],
                    allow_apex=True)
    if dns_server.kind == "knot":
        with pytest.raises(PartialApplyError) as caught:
            adapter.apply(plan)
        assert caught.value.restored and caught.value.keys == [RRKey(f"{zone}.", "NS")]
        assert truth(dns_server, zone, "@", "NS") == (3600, {f"ns1.{zone}."})
    else:
        assert adapter.apply(plan).applied is True
        assert truth(dns_server, zone, "@", "NS") == (7200, {f"ns1.{zone}."})
