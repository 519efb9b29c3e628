"""The contract every target kind's adapter passes, parametrised by kind: read,
plan, apply conditional on `before`, drift refusal, rollback conditional on
`after`, verify, snapshot, rollback items, and no secret in any error.

DNS runs against each of the three real servers of the session (BIND 9, Knot DNS,
PowerDNS: tests/dns_servers.py); the in-memory kind (tests/adapters/memory_kind.py)
is registered for these tests only. A new kind (nftables next) joins by adding a
harness below."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.query
import dns.rcode
import dns.tsigkeyring
import dns.update
import pytest
from django.conf import settings

from adapters import (
    Adapter,
    AdapterError,
    ConfigError,
    DriftError,
    ItemValidationError,
    Plan,
    RRKey,
    RRValue,
    Step,
)
from adapters.kind import TargetKind
from changes.kinds import REGISTRY, kind_named

from tests.dns_servers import SERVERS, ServerUnderTest, server_for

from . import memory_kind


class Harness:
    """One kind's fixtures: a config for a live target, an item creating a key that
    is absent, a way to change the target behind the adapter's back, the secrets
    that must never show, and a config whose secret the target refuses."""

    kind: TargetKind
    config: dict[str, Any]
    new_item: dict[str, Any]
    new_key: RRKey
    new_value: RRValue
    other_value: RRValue
    existing_key: RRKey
    secrets: list[str]
    plan_zone: str  # Plan.zone of this target's plans

    def outside(self, key: RRKey, value: RRValue | None) -> None:
        raise NotImplementedError

    def refused_config(self, tmp_path: Path) -> dict[str, Any]:
        raise NotImplementedError

    def adapter(self, config: dict[str, Any] | None = None) -> Adapter:
        return self.kind.adapter(config or self.config, key_dir=settings.CHANGEGATE_KEY_DIR)


class DNSHarness(Harness):
    def __init__(self, server: ServerUnderTest, zone: str) -> None:
        self.named, self.zone = server, zone
        self.kind = kind_named("dns")
        self.config = {"zone": zone, "primary": server.primary, "tsig_key_file": str(server.key_file),
                       "timeout": 3}
        self.new_item = {"op": "upsert", "name": "contract", "type": "A", "ttl": 300, "records": ["192.0.2.77"]}
        self.new_key = RRKey(f"contract.{zone}.", "A")
        self.new_value = RRValue(300, ("192.0.2.77",))
        self.other_value = RRValue(300, ("203.0.113.9",))
        self.existing_key = RRKey(f"www.{zone}.", "A")
        self.secrets = [server.secret, *server.extra_keys.values()]
        self.plan_zone = f"{zone}."

    def outside(self, key: RRKey, value: RRValue | None) -> None:
        update = dns.update.UpdateMessage(self.zone, keyring=dns.tsigkeyring.from_file(self.named.key_file))
        if value is None:
            update.delete(key.name, key.rdtype)
        else:
            update.replace(key.name, value.ttl, key.rdtype, *value.rdatas)
        response = dns.query.tcp(update, "127.0.0.1", port=self.named.port, timeout=3)
        assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())

    def refused_config(self, tmp_path: Path) -> dict[str, Any]:
        from dns_adapters.local_named import write_key_file

        wrong = base64.b64encode(b"contract-wrong-secret-0123456789").decode()
        self.secrets.append(wrong)
        key_file = tmp_path / "wrong.key"
        write_key_file(key_file, self.named.key_name, wrong)
        return {**self.config, "tsig_key_file": str(key_file)}


class MemoryHarness(Harness):
    def __init__(self, tmp_path: Path, name: str) -> None:
        self.kind = memory_kind.MEMORY
        token = base64.b64encode(name.encode() * 4).decode()
        (tmp_path / "token").write_text(token + "\n")
        memory_kind.store_create(name, token, {RRKey("www", "A"): RRValue(0, ("1",))})
        self.store = name
        self.config = {"store": name, "token_file": str(tmp_path / "token")}
        self.new_item = {"op": "upsert", "name": "contract", "type": "A", "ttl": 0, "records": ["77"]}
        self.new_key = RRKey("contract", "A")
        self.new_value = RRValue(0, ("77",))
        self.other_value = RRValue(0, ("9",))
        self.existing_key = RRKey("www", "A")
        self.secrets = [token]
        self.plan_zone = name

    def outside(self, key: RRKey, value: RRValue | None) -> None:
        memory_kind.store_set(self.store, key, value)

    def refused_config(self, tmp_path: Path) -> dict[str, Any]:
        wrong = "contract-wrong-token-0123456789"
        self.secrets.append(wrong)
        (tmp_path / "wrong-token").write_text(wrong)
        return {**self.config, "token_file": str(tmp_path / "wrong-token")}


@pytest.fixture
def memory_registered() -> Iterator[TargetKind]:
    with REGISTRY.registered(memory_kind.MEMORY) as kind:
        yield kind


@pytest.fixture(params=[*(f"dns-{server}" for server in SERVERS), "memory"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    if request.param.startswith("dns-"):
        request.applymarker(pytest.mark.named)
        server = server_for(request.param.removeprefix("dns-"), request.config)
        return DNSHarness(server, server.fresh_zone())
    request.getfixturevalue("memory_registered")
    return MemoryHarness(tmp_path, f"store-{request.node.name}")


def planned(harness: Harness, adapter: Adapter, *items: dict[str, Any]) -> Plan:
    return adapter.plan(adapter.validate_items(list(items or [harness.new_item])))


def test_the_kind_is_asked_by_name(harness: Harness) -> None:
    assert kind_named(harness.kind.name) is harness.kind
    assert harness.kind.secret_fields <= set(harness.config)


def test_read_returns_live_values_and_none_for_absent_keys(harness: Harness) -> None:
    adapter = harness.adapter()
    try:
        live = adapter.read([harness.existing_key, harness.new_key])
        assert live[harness.new_key] is None
        assert isinstance(live[harness.existing_key], RRValue)
        assert adapter.check_reachable() >= 0
    finally:
        adapter.close()


def test_plan_reads_before_and_changes_nothing(harness: Harness) -> None:
    adapter = harness.adapter()
    try:
        plan = planned(harness, adapter)
        assert [(s.key, s.before, s.after) for s in plan.steps] == [(harness.new_key, None, harness.new_value)]
        assert adapter.read([harness.new_key])[harness.new_key] is None
        # Same live state, same items: the same fingerprint (an approval binds to it).
        assert planned(harness, adapter).fingerprint == plan.fingerprint
        harness.outside(harness.new_key, harness.other_value)
        assert planned(harness, adapter).fingerprint != plan.fingerprint
    finally:
        adapter.close()


def test_apply_is_conditional_on_before_and_a_reapply_is_a_no_op(harness: Harness) -> None:
    adapter = harness.adapter()
    try:
        plan = planned(harness, adapter)
        assert adapter.apply(plan).applied is True
        assert adapter.read([harness.new_key])[harness.new_key] == harness.new_value
        assert adapter.apply(plan).applied is False
    finally:
        adapter.close()


def test_apply_refuses_drift_and_leaves_the_outside_value(harness: Harness) -> None:
    adapter = harness.adapter()
    try:
        plan = planned(harness, adapter)
        harness.outside(harness.new_key, harness.other_value)
        with pytest.raises(DriftError) as caught:
            adapter.apply(plan)
        assert harness.new_key in caught.value.keys
        assert adapter.read([harness.new_key])[harness.new_key] == harness.other_value
    finally:
        adapter.close()


def test_rollback_is_conditional_on_after(harness: Harness) -> None:
    adapter = harness.adapter()
    try:
        plan = planned(harness, adapter)
        adapter.apply(plan)
        assert adapter.rollback(plan).applied is True
        assert adapter.read([harness.new_key])[harness.new_key] is None
        adapter.apply(plan)
        harness.outside(harness.new_key, harness.other_value)
        with pytest.raises(DriftError):
            adapter.rollback(plan)
        assert adapter.read([harness.new_key])[harness.new_key] == harness.other_value
    finally:
        adapter.close()


def test_verify_compares_every_step_with_after(harness: Harness) -> None:
    adapter = harness.adapter()
    try:
        plan = planned(harness, adapter)
        assert not adapter.verify(plan).ok
        adapter.apply(plan)
        report = adapter.verify(plan)
        assert report.ok and report.checks and all(check.key == harness.new_key for check in report.checks)
    finally:
        adapter.close()


def test_the_snapshot_holds_what_a_read_reads(harness: Harness) -> None:
    adapter = harness.adapter()
    try:
        adapter.apply(planned(harness, adapter))
        snapshot = adapter.read_zone()
        assert snapshot.get(harness.new_key) == harness.new_value
        assert snapshot.matches(harness.new_key, harness.new_value)
        assert not snapshot.matches(harness.new_key, harness.other_value)
        assert len(snapshot) == len(list(snapshot))
        live = adapter.read([harness.existing_key])[harness.existing_key]
        assert snapshot.get(harness.existing_key) == live
        records = harness.kind.snapshot_records(snapshot)
        assert records[str(harness.new_key)] == harness.new_value.to_json()
        # The drift form compares a record with itself as unchanged.
        key = str(harness.new_key)
        assert harness.kind.drift_comparable(key, records[key]) == harness.kind.drift_comparable(key, records[key])
    finally:
        adapter.close()


def test_rollback_items_plan_the_inverse(harness: Harness) -> None:
    adapter = harness.adapter()
    try:
        plan = planned(harness, adapter)
        adapter.apply(plan)
        undo = planned(harness, adapter, *harness.kind.rollback_items(plan))
        assert undo.steps == plan.inverse().steps
    finally:
        adapter.close()


def test_stored_items_validate_to_themselves(harness: Harness) -> None:
    adapter = harness.adapter()
    try:
        items = adapter.validate_items([harness.new_item])
        stored = [harness.kind.item_json(item) for item in items]
        assert [harness.kind.item_json(item) for item in adapter.validate_items(stored)] == stored
    finally:
        adapter.close()


def test_the_diff_shows_every_value_line(harness: Harness) -> None:
    adapter = harness.adapter()
    try:
        plan = planned(harness, adapter)
    finally:
        adapter.close()
    diff = harness.kind.diff(plan)
    for line in harness.kind.value_lines(harness.new_key, harness.new_value):
        assert "+" + line in diff.splitlines()


def test_invalid_items_name_the_item_and_field(harness: Harness) -> None:
    adapter = harness.adapter()
    try:
        with pytest.raises(ItemValidationError) as caught:
            adapter.validate_items([harness.new_item, {**harness.new_item, "op": "explode"}])
        assert [(e.index, e.field) for e in caught.value.errors] == [(1, "op")]
    finally:
        adapter.close()


def _must_not_leak(harness: Harness, *texts: str) -> None:
    for text in texts:
        for secret in harness.secrets:
            assert secret not in text


def test_secrets_never_appear_in_errors(harness: Harness, tmp_path: Path) -> None:
    refused = harness.refused_config(tmp_path)
    errors: list[AdapterError] = []
    try:
        adapter = harness.adapter(refused)
    except AdapterError as exc:  # refused when opened (a key file that does not parse) counts too
        errors.append(exc)
    else:
        try:
            _must_not_leak(harness, repr(adapter), str(adapter))
            plan = Plan(zone=harness.plan_zone, steps=(Step(harness.new_key, None, harness.new_value),))
            for attempt in (adapter.check_reachable, lambda: adapter.apply(plan)):
                with pytest.raises(AdapterError) as caught:
                    attempt()
                errors.append(caught.value)
        finally:
            adapter.close()
    assert errors and all(isinstance(e, ConfigError) and e.permanent for e in errors)
    _must_not_leak(harness, *(e.message for e in errors), *(str(e) for e in errors))
    # A secret file outside the key directory is a config field error, naming no secret.
    secret_field = sorted(harness.kind.secret_fields)[0]
    with pytest.raises(ItemValidationError) as caught:
        harness.kind.validate_config({**harness.config, secret_field: "/etc/passwd"},
                                     key_dir=settings.CHANGEGATE_KEY_DIR)
    assert secret_field in [e.field for e in caught.value.errors]
    _must_not_leak(harness, str(caught.value))
