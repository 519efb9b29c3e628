"""Issue 12, defects 7 and 8, the plan-time refusals of updates servers would silently
ignore, and the reviewer warnings; against BIND 9, Knot DNS and PowerDNS
(tests/dns_servers.py) wherever the live zone is read."""

from __future__ import annotations

import dataclasses

import pytest

from dns_adapters.base import ItemValidationError, Plan, RRKey, RRValue, Step
from dns_adapters.update import MAX_MESSAGE

from .test_interop import adapter_for, plan_for, truth

pytestmark = pytest.mark.named


@pytest.fixture
def zone(dns_server) -> str:
    return dns_server.fresh_zone()


@pytest.fixture
def adapter(dns_server, zone: str):
    adapter = adapter_for(dns_server, zone)
    yield adapter
    adapter.close()


# -- 7. one change is one UPDATE message ------------------------------------------------------


def big_items(count: int) -> list[dict]:
    return [{"op": "upsert", "name": f"host-{i:04d}-{'x' * 40}", "type": "A", "ttl": 300,
             "records": [f"10.0.{i // 250}.{i % 250 + 1}"]} for i in range(count)]


def test_a_change_larger_than_one_message_is_refused_at_plan_time(dns_server, adapter, zone):
    """Before: planned and approved, then apply failed as "transient" five times."""
    with pytest.raises(ItemValidationError) as caught:
        plan_for(adapter, big_items(1000))
    (error,) = caught.value.errors
    assert error.index is None and error.field == "items"
    size = int(error.message.split(" bytes")[0].rsplit(" ", 1)[1].replace(",", ""))
    assert size > MAX_MESSAGE and "65,535" in error.message
    assert truth(dns_server, zone, f"host-0000-{'x' * 40}", "A") is None


def test_a_change_just_under_the_limit_plans_and_applies(dns_server, adapter, zone):
    plan = plan_for(adapter, big_items(300))
    assert adapter.apply(plan).applied is True
    assert truth(dns_server, zone, f"host-0299-{'x' * 40}", "A") == (300, {"10.0.1.50"})


def test_applying_a_too_large_plan_is_permanent_not_transient(adapter, zone):
    steps = tuple(Step(RRKey(f"h{i}-{'y' * 50}.{zone}.", "A"), None, RRValue(300, ("192.0.2.1",)))
                  for i in range(1500))
    with pytest.raises(ItemValidationError) as caught:
        adapter.apply(Plan(zone=f"{zone}.", steps=steps))
    assert caught.value.permanent and "65,535" in caught.value.message


# -- 8. owner names ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "rdtype", "records"), [
    ("w w", "A", ["192.0.2.1"]),
    ("_x", "A", ["192.0.2.1"]),
    ("-lead", "AAAA", ["2001:db8::1"]),
    ("mail_in", "MX", ["10 mail"]),
    ("_sip._tcp.a b", "SRV", ["10 5 5060 www"]),
    ("say hi", "TXT", ['"x"']),
])
def test_owner_names_no_server_takes_as_host_names_are_refused(adapter, name, rdtype, records):
    """Before: stored (201) and sent."""
    with pytest.raises(ItemValidationError) as caught:
        adapter.validate_items([{"op": "upsert", "name": name, "type": rdtype, "ttl": 300, "records": records}])
    assert [(e.index, e.field) for e in caught.value.errors] == [(0, "name")]


@pytest.mark.parametrize(("name", "rdtype", "records"), [
    ("_sip._tcp", "SRV", ["10 5 5060 www"]),
    ("_443._tcp.www", "TLSA", ["3 1 1 " + "ab" * 32]),
    ("_dmarc", "TXT", ['"v=DMARC1; p=none"']),
    ("sel._domainkey", "TXT", ['"v=DKIM1; p="']),
    ("*.wild", "A", ["192.0.2.1"]),
    ("xn--bcher-kva", "A", ["192.0.2.1"]),
    ("bücher", "AAAA", ["2001:db8::1"]),
])
def test_conventional_owner_names_are_accepted_by_the_adapter_and_the_server(dns_server, adapter, zone,
                                                                             name, rdtype, records):
    plan = plan_for(adapter, [{"op": "upsert", "name": name, "type": rdtype, "ttl": 300, "records": records}])
    assert adapter.apply(plan).applied is True


def test_a_bad_name_can_still_be_deleted(adapter, zone):
    (item,) = adapter.validate_items([{"op": "delete", "name": "w w", "type": "A"}])
    assert item.name == f"w\\032w.{zone}."


# -- updates servers silently ignore are refused when planned ---------------------------------


def test_an_soa_whose_serial_does_not_increase_is_refused(adapter, zone):
    with pytest.raises(ItemValidationError) as caught:
        plan_for(adapter, [{"op": "upsert", "name": "@", "type": "SOA", "ttl": 3600,
                            "records": [f"ns1.{zone}. hostmaster.{zone}. 0 3600 600 604800 300"]}], allow_apex=True)
    assert "serial" in caught.value.message


def test_an_soa_with_a_greater_serial_lands(dns_server, adapter, zone):
    plan = plan_for(adapter, [{"op": "upsert", "name": "@", "type": "SOA", "ttl": 3600,
                               "records": [f"ns1.{zone}. hostmaster.{zone}. 2030010100 3600 900 604800 300"]}],
                    allow_apex=True)
    assert adapter.apply(plan).applied is True
    assert truth(dns_server, zone, "@", "SOA")[1] == {f"ns1.{zone}. hostmaster.{zone}. 2030010100 3600 900 604800 300"}


def test_deleting_the_apex_ns_rrset_is_refused_even_with_allow_apex(adapter):
    with pytest.raises(ItemValidationError) as caught:
        plan_for(adapter, [{"op": "delete", "name": "@", "type": "NS"}], allow_apex=True)
    assert "silently ignore" in caught.value.message


# -- warnings for the reviewer ---------------------------------------------------------------


def test_warnings_name_targets_without_address_and_relative_targets(adapter, zone):
    plan = plan_for(adapter, [
        {"op": "upsert", "name": "cdn", "type": "CNAME", "ttl": 300, "records": ["cdn.example.com"]},
        {"op": "upsert", "name": "_xmpp._tcp", "type": "SRV", "ttl": 300, "records": ["10 5 5222 chat"]},
        {"op": "upsert", "name": "www2", "type": "CNAME", "ttl": 300, "records": ["www"]},
        {"op": "upsert", "name": "ext", "type": "MX", "ttl": 300, "records": ["10 mx.example.net."]},
    ])
    text = "\n".join(plan.warnings)
    assert f"cdn.example.com.{zone}." in text and "trailing dot" in text
    assert f"_xmpp._tcp.{zone}. SRV 10 5 5222 chat.{zone}.: chat.{zone}. is in zone" in text
    assert "www2" not in text and "mx.example.net" not in text
    assert len(plan.warnings) == 3  # cdn: relative and without address


def test_a_record_name_that_looks_absolute_but_was_made_relative_warns(adapter, zone):
    """Issue 15: `cdn.example.com` in zone Z is cdn.example.com.Z. (a doubled zone name too)."""
    plan = plan_for(adapter, [
        {"op": "upsert", "name": "cdn.example.com", "type": "A", "ttl": 300, "records": ["192.0.2.40"]},
        {"op": "upsert", "name": f"www2.{zone}", "type": "A", "ttl": 300, "records": ["192.0.2.41"]},
        {"op": "upsert", "name": "shop.eu-west", "type": "A", "ttl": 300, "records": ["192.0.2.42"]},
    ])
    assert plan.warnings == (
        f"cdn.example.com.{zone}. A: the name cdn.example.com.{zone}. looks like cdn.example.com. written without "
        f"its trailing dot, which made it relative to the zone; if you meant cdn.example.com. write it with the "
        f"trailing dot (a name outside {zone}. belongs to another target)",
        f"www2.{zone}.{zone}. A: the name www2.{zone}.{zone}. looks like www2.{zone}. written without "
        f"its trailing dot, which made it relative to the zone; if you meant www2.{zone}. write it with the "
        f"trailing dot (a name outside {zone}. belongs to another target)",
    )


def test_an_ns_whose_in_zone_target_does_not_exist_warns_but_glue_does_not(adapter, zone):
    plan = plan_for(adapter, [
        {"op": "upsert", "name": "lab", "type": "NS", "ttl": 300, "records": ["ns1.nowhere", "ns.example.org."]},
        {"op": "upsert", "name": "sub", "type": "NS", "ttl": 300, "records": ["ns.sub"]},
        {"op": "upsert", "name": "ok", "type": "NS", "ttl": 300, "records": ["mail"]},
    ])
    assert plan.warnings == (
        f"lab.{zone}. NS ns1.nowhere.{zone}.: ns1.nowhere.{zone}. is in zone {zone}. and has no address (A/AAAA)",)


def test_deleting_the_last_address_behind_an_mx_warns(adapter, zone):
    plan = plan_for(adapter, [{"op": "delete", "name": "mail", "type": "A"}])
    expected = f"mail.{zone}. loses its last address (A/AAAA) but {zone}. MX 10 mail.{zone}. still points at it"
    assert plan.warnings == (expected,)
    assert not plan_for(adapter, [{"op": "delete", "name": "api", "type": "A"}]).warnings


def test_warnings_are_outside_the_fingerprint(adapter, zone):
    plan = plan_for(adapter, [{"op": "delete", "name": "mail", "type": "A"}])
    bare = dataclasses.replace(plan, warnings=())
    assert plan.warnings and plan == bare and plan.fingerprint == bare.fingerprint
    assert plan.canonical() == Plan.from_json(plan.to_json()).canonical()
    assert "warnings" not in plan.to_json()
