"""The RFC 2136 adapter against a real BIND 9 named (see tests/conftest.py)."""

from __future__ import annotations

import tempfile

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsigkeyring
import dns.update
import pytest

from dns_adapters.base import ConfigError, DriftError, ItemValidationError, RRKey, RRValue, TransientError
from dns_adapters.local_named import LocalNamed, free_port
from dns_adapters.rfc2136 import RFC2136Adapter

pytestmark = pytest.mark.named


def adapter_for(server: LocalNamed, zone: str, **overrides) -> RFC2136Adapter:
    config = {"zone": zone, "primary": server.primary, "tsig_key_file": str(server.key_file), "timeout": 3}
    config.update(overrides)
    # Every throwaway named and tmp_path key lives under the system temp directory.
    return RFC2136Adapter(config, key_dir=tempfile.gettempdir())


@pytest.fixture
def zone(fresh_zone: str) -> str:
    return fresh_zone


@pytest.fixture
def adapter(named_server: LocalNamed, zone: str):
    adapter = adapter_for(named_server, zone)
    yield adapter
    adapter.close()


def key(zone: str, name: str, rdtype: str) -> RRKey:
    return RRKey(f"{name}.{zone}." if name != "@" else f"{zone}.", rdtype)


def ground_truth(server: LocalNamed, zone: str, name: str, rdtype: str) -> set[str] | None:
    """What named serves, asked with plain dnspython (not through the adapter)."""
    owner = f"{name}.{zone}." if name != "@" else f"{zone}."
    response = dns.query.tcp(dns.message.make_query(owner, rdtype), "127.0.0.1", port=server.port, timeout=3)
    for rrset in response.answer:
        if rrset.name.to_text() == owner and dns.rdatatype.to_text(rrset.rdtype) == rdtype:
            return {rd.to_text() for rd in rrset}
    return None


def serial(server: LocalNamed, zone: str) -> int:
    response = dns.query.tcp(dns.message.make_query(zone, "SOA"), "127.0.0.1", port=server.port, timeout=3)
    return response.answer[0][0].serial


def outside_change(server: LocalNamed, zone: str, build) -> None:
    """Somebody else changes the zone (as nsupdate would), with the same key."""
    keyring = dns.tsigkeyring.from_file(server.key_file)
    update = dns.update.UpdateMessage(zone, keyring=keyring)
    build(update)
    response = dns.query.tcp(update, "127.0.0.1", port=server.port, timeout=3)
    assert response.rcode() == dns.rcode.NOERROR


def plan_for(adapter: RFC2136Adapter, items, **kwargs):
    return adapter.plan(adapter.validate_items(items, **kwargs), **kwargs)


MULTI = [
    {"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": ["192.0.2.99"]},
    {"op": "add", "name": "new", "type": "TXT", "ttl": 60, "records": ['"hello world"']},
    {"op": "delete", "name": "api", "type": "A"},
    {"op": "upsert", "name": "c2", "type": "CNAME", "ttl": 300, "records": ["www"]},
]


def test_reachable_returns_the_zone_serial(adapter, named_server, zone):
    assert adapter.check_reachable() == serial(named_server, zone)


def test_targeted_read_returns_live_rrsets_and_absent_keys(adapter, zone):
    live = adapter.read([key(zone, "www", "A"), key(zone, "nothing", "A"), key(zone, "@", "MX"), key(zone, "www", "AAAA")])
    assert live == {
        key(zone, "www", "A"): RRValue(300, ("192.0.2.10", "192.0.2.11")),
        key(zone, "nothing", "A"): None,
        key(zone, "@", "MX"): RRValue(300, (f"10 mail.{zone}.",)),
        key(zone, "www", "AAAA"): None,
    }


def test_whole_zone_read_agrees_with_targeted_reads(adapter, zone):
    snapshot = adapter.read_zone()
    assert len(snapshot) >= 8
    for k in [key(zone, "www", "A"), key(zone, "alias", "CNAME"), key(zone, "txt", "TXT"), key(zone, "@", "NS")]:
        assert snapshot.get(k) == adapter.read([k])[k]
        assert snapshot.matches(k, adapter.read([k])[k])


def test_multi_rrset_plan_applies_in_one_update(adapter, named_server, zone):
    plan = plan_for(adapter, MULTI)
    assert len(plan.steps) == 4
    before_serial = serial(named_server, zone)
    result = adapter.apply(plan)
    assert result.applied
    assert ground_truth(named_server, zone, "www", "A") == {"192.0.2.99"}
    assert ground_truth(named_server, zone, "new", "TXT") == {'"hello world"'}
    assert ground_truth(named_server, zone, "api", "A") is None
    assert ground_truth(named_server, zone, "c2", "CNAME") == {f"www.{zone}."}
    assert serial(named_server, zone) == before_serial + 1  # one UPDATE, one serial bump
    assert adapter.verify(plan).ok


def test_reapplying_an_applied_plan_is_a_no_op(adapter, named_server, zone):
    plan = plan_for(adapter, MULTI)
    assert adapter.apply(plan).applied
    after_serial = serial(named_server, zone)
    again = adapter.apply(plan)
    assert not again.applied
    assert serial(named_server, zone) == after_serial


def test_outside_change_between_plan_and_apply_is_drift_and_zone_is_untouched(adapter, named_server, zone):
    plan = plan_for(adapter, MULTI)
    outside_change(named_server, zone, lambda u: u.replace("www", 300, "A", "198.51.100.1"))
    before_serial = serial(named_server, zone)
    with pytest.raises(DriftError) as info:
        adapter.apply(plan)
    assert info.value.keys == [key(zone, "www", "A")]
    assert info.value.permanent
    assert serial(named_server, zone) == before_serial
    assert ground_truth(named_server, zone, "www", "A") == {"198.51.100.1"}
    assert ground_truth(named_server, zone, "new", "TXT") is None
    assert ground_truth(named_server, zone, "api", "A") == {"192.0.2.20"}


def test_one_failed_prerequisite_among_many_changes_nothing(adapter, named_server, zone):
    plan = plan_for(adapter, MULTI)
    # Only the last step's key moves: a new name appears where the CNAME was to go.
    outside_change(named_server, zone, lambda u: u.add("c2", 300, "TXT", '"squatter"'))
    before_serial = serial(named_server, zone)
    with pytest.raises(DriftError):
        adapter.apply(plan)
    assert serial(named_server, zone) == before_serial
    assert ground_truth(named_server, zone, "www", "A") == {"192.0.2.10", "192.0.2.11"}
    assert ground_truth(named_server, zone, "api", "A") == {"192.0.2.20"}


def test_cname_appearing_at_a_name_getting_data_is_caught_by_the_guard(adapter, named_server, zone):
    plan = plan_for(adapter, [{"op": "upsert", "name": "fresh", "type": "A", "ttl": 60, "records": ["192.0.2.5"]}])
    outside_change(named_server, zone, lambda u: u.add("fresh", 300, "CNAME", "www"))
    with pytest.raises(DriftError):
        adapter.apply(plan)
    assert ground_truth(named_server, zone, "fresh", "CNAME") == {f"www.{zone}."}


def test_rollback_restores_before_exactly(adapter, named_server, zone):
    plan = plan_for(adapter, MULTI + [{"op": "upsert", "name": "mail", "type": "A", "ttl": 86400, "records": ["192.0.2.25"]}])
    snapshot_before = {k: v for k, v in adapter.read_zone().items() if k.rdtype != "SOA"}
    adapter.apply(plan)
    assert ground_truth(named_server, zone, "mail", "A") == {"192.0.2.25"}
    assert adapter.read([key(zone, "mail", "A")])[key(zone, "mail", "A")].ttl == 86400  # TTL-only change applied
    assert adapter.rollback(plan).applied
    snapshot_after = {k: v for k, v in adapter.read_zone().items() if k.rdtype != "SOA"}
    assert snapshot_after == snapshot_before


def test_rollback_after_an_outside_change_refuses(adapter, named_server, zone):
    plan = plan_for(adapter, MULTI)
    adapter.apply(plan)
    outside_change(named_server, zone, lambda u: u.replace("www", 300, "A", "203.0.113.7"))
    with pytest.raises(DriftError) as info:
        adapter.rollback(plan)
    assert key(zone, "www", "A") in info.value.keys
    assert ground_truth(named_server, zone, "www", "A") == {"203.0.113.7"}
    assert ground_truth(named_server, zone, "new", "TXT") == {'"hello world"'}


def test_key_not_allowed_to_update_is_refused_and_serial_unchanged(named_server, zone):
    intruder = adapter_for(named_server, zone, tsig_key_file=str(named_server.extra_key_file("intruder-key")))
    plan = plan_for(intruder, MULTI)
    before_serial = serial(named_server, zone)
    with pytest.raises(ConfigError) as info:
        intruder.apply(plan)
    assert "REFUSED" in str(info.value)
    assert serial(named_server, zone) == before_serial


def test_wrong_secret_is_refused_without_echoing_it(named_server, zone, tmp_path):
    forged = tmp_path / "forged.key"
    secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0xMjM0NTY3OA=="
    forged.write_text(f'key "{named_server.key_name}" {{ algorithm hmac-sha256; secret "{secret}"; }};\n')
    adapter = adapter_for(named_server, zone, tsig_key_file=str(forged))
    before_serial = serial(named_server, zone)
    for call in (adapter.check_reachable, lambda: adapter.apply(plan_for(adapter_for(named_server, zone), MULTI))):
        with pytest.raises(ConfigError) as info:
            call()
        assert secret not in str(info.value)
    assert serial(named_server, zone) == before_serial
    assert secret not in repr(adapter) and secret not in str(adapter.config)


def test_unreachable_server_is_transient(named_server, zone):
    adapter = adapter_for(named_server, zone, primary=f"127.0.0.1:{free_port()}", timeout=1)
    with pytest.raises(TransientError):
        adapter.check_reachable()
    with pytest.raises(TransientError):
        adapter.read([key(zone, "www", "A")])


def test_apply_to_a_dead_server_is_transient_not_applied(named_server, zone):
    plan = plan_for(adapter_for(named_server, zone), MULTI)
    dead = adapter_for(named_server, zone, primary=f"127.0.0.1:{free_port()}", timeout=1)
    with pytest.raises(TransientError):
        dead.apply(plan)
    assert ground_truth(named_server, zone, "www", "A") == {"192.0.2.10", "192.0.2.11"}


def test_zone_the_server_does_not_serve_is_a_config_error(named_server):
    adapter = adapter_for(named_server, "not-served.test")
    with pytest.raises(ConfigError):
        adapter.check_reachable()


def test_live_cname_conflicts_are_refused_at_plan_time(adapter, zone):
    with pytest.raises(ItemValidationError) as info:
        plan_for(adapter, [{"op": "add", "name": "alias", "type": "TXT", "ttl": 60, "records": ["x"]}])
    assert (info.value.errors[0].index, info.value.errors[0].field) == (0, "type")
    with pytest.raises(ItemValidationError) as info:
        plan_for(adapter, [{"op": "upsert", "name": "www", "type": "CNAME", "ttl": 60, "records": ["api"]}])
    assert "A" in info.value.errors[0].message


def test_new_cname_where_data_appears_after_planning_is_caught(adapter, named_server, zone):
    plan = plan_for(adapter, [{"op": "upsert", "name": "fresh2", "type": "CNAME", "ttl": 60, "records": ["www"]}])
    outside_change(named_server, zone, lambda u: u.add("fresh2", 300, "TXT", '"mine"'))
    with pytest.raises(DriftError):
        adapter.apply(plan)
    assert ground_truth(named_server, zone, "fresh2", "CNAME") is None


def test_verify_reports_per_server(named_server, zone):
    dead = f"127.0.0.1:{free_port()}"
    adapter = adapter_for(named_server, zone, nameservers=[named_server.primary, dead], timeout=1)
    plan = plan_for(adapter, MULTI)
    before = adapter.verify(plan)
    assert not before.ok and before.by_server()[named_server.primary] is False
    adapter.apply(plan)
    report = adapter.verify(plan)
    assert report.by_server() == {named_server.primary: True, dead: False}


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"primary": "localhost:53"}, "primary"),
        ({"primary": "127.0.0.1"}, "primary"),
        ({"primary": "127.0.0.1:70000"}, "primary"),
        ({"tsig_key_file": "relative.key"}, "tsig_key_file"),
        ({"tsig_key_file": "/nonexistent/key"}, "tsig_key_file"),
        ({"zone": ""}, "zone"),
        ({"nameservers": ["nope"]}, "nameservers[0]"),
        ({"timeout": 0}, "timeout"),
        ({"secret": "abc"}, "secret"),
    ],
)
def test_bad_target_config_names_the_field(named_server, config, field):
    base = {"zone": "demo.test", "primary": named_server.primary, "tsig_key_file": str(named_server.key_file)}
    base.update(config)
    with pytest.raises(ItemValidationError) as info:
        RFC2136Adapter.validate_config(base, key_dir=tempfile.gettempdir())
    assert [e.field for e in info.value.errors] == [field]
