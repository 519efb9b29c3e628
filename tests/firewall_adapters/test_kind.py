"""The nft kind's presentation and rules, without a host: patch lines, the per-chain
diff in rule order with context, risk flags, rollback items and live-read keys."""

from __future__ import annotations

import pytest

from adapters import ItemValidationError, Plan, RRKey, RRValue, Step
from firewall_adapters.kind import NFT, parse_key, rollback_items
from firewall_adapters.presentation import risk_flags

TABLE = "inet changegate"
INPUT = RRKey(f"{TABLE} input", "chain")
PARTNERS = RRKey(f"{TABLE} partners_v4", "set")
HEADER = "type filter hook input priority filter; policy accept;"
BASE = (HEADER, "ct state established,related accept", "tcp dport 22 accept", "tcp dport 80 accept")


def chain_plan(*after: str, before: tuple[str, ...] = BASE) -> Plan:
    return Plan(zone=TABLE, steps=(Step(INPUT, RRValue(0, before), RRValue(0, tuple(after))),))


def set_plan(before: list[str], after: list[str]) -> Plan:
    head = ("type ipv4_addr", "flags interval")
    return Plan(zone=TABLE, steps=(Step(PARTNERS, RRValue(0, head + tuple(f"element {e}" for e in before)),
                                        RRValue(0, head + tuple(f"element {e}" for e in after))),))


def test_patch_lines_become_items() -> None:
    parsed = NFT.parse_patch(
        "# comment\n"
        "inet changegate input: tcp dport 8443 accept\n"
        "inet changegate input[0]: tcp dport 8081 drop\n"
        "-inet changegate input: tcp dport 22 accept\n"
        "inet changegate input policy drop\n"
        "inet changegate partners_v4 += 192.0.2.10, 198.51.100.0/24\n"
        "inet changegate partners_v4 -= 192.0.2.11\n")
    assert [(p.line, p.item) for p in parsed] == [
        (2, {"op": "append", "table": TABLE, "chain": "input", "rule": "tcp dport 8443 accept"}),
        (3, {"op": "insert", "table": TABLE, "chain": "input", "position": 0, "rule": "tcp dport 8081 drop"}),
        (4, {"op": "delete", "table": TABLE, "chain": "input", "rule": "tcp dport 22 accept"}),
        (5, {"op": "policy", "table": TABLE, "chain": "input", "policy": "drop"}),
        (6, {"op": "add_element", "table": TABLE, "set": "partners_v4", "elements": ["192.0.2.10", "198.51.100.0/24"]}),
        (7, {"op": "delete_element", "table": TABLE, "set": "partners_v4", "elements": ["192.0.2.11"]}),
    ]


def test_a_bad_patch_line_is_named_by_its_number() -> None:
    with pytest.raises(ItemValidationError) as caught:
        NFT.parse_patch("inet changegate input: accept\nthis is not a patch line\n")
    assert [(e.field, e.message.split(":")[0]) for e in caught.value.errors] == [("patch", "line 2")]


def test_the_diff_is_per_chain_in_rule_order_with_context() -> None:
    plan = chain_plan(HEADER, "ct state established,related accept", "tcp dport 22 accept",
                      "tcp dport 8443 accept", "tcp dport 80 accept")
    lines = NFT.diff(plan).splitlines()
    at = lines.index("+tcp dport 8443 accept")
    assert lines[at - 2:at + 2] == [" ct state established,related accept", " tcp dport 22 accept",
                                    "+tcp dport 8443 accept", " tcp dport 80 accept"]
    assert f"@@ chain {TABLE} input @@" in lines


def test_set_elements_are_plus_and_minus_lines() -> None:
    lines = NFT.diff(set_plan(["192.0.2.10", "192.0.2.11"], ["192.0.2.10", "198.51.100.0/24"])).splitlines()
    assert "-element 192.0.2.11" in lines and "+element 198.51.100.0/24" in lines
    assert "+element 192.0.2.10" not in lines


@pytest.mark.parametrize(("plan", "flags"), [
    (chain_plan(*BASE, "tcp dport 8443 ip saddr 192.0.2.0/24 accept"), []),
    (chain_plan(*BASE, "tcp dport 8081 drop"), ["fw_drop"]),
    (chain_plan(*BASE, "ip saddr 192.0.2.1 reject"), ["fw_drop"]),
    (chain_plan(HEADER.replace("accept;", "drop;"), *BASE[1:]), ["fw_drop"]),
    (chain_plan(HEADER, "tcp dport 8443 ip saddr 192.0.2.0/24 accept", *BASE[1:]), ["fw_above_established"]),
    (chain_plan(*BASE, "tcp dport { 22, 443 } ip saddr 192.0.2.0/24 accept"), ["fw_management_port"]),
    (chain_plan(*BASE, "tcp dport 20-30 ip saddr 192.0.2.0/24 accept"), ["fw_management_port"]),
    (chain_plan(HEADER, "ct state established,related accept", "tcp dport 80 accept"), ["fw_management_port"]),
    (chain_plan(*BASE, "accept"), ["fw_broad_accept"]),
    (chain_plan(*BASE, "meta l4proto tcp accept"), ["fw_broad_accept"]),
    (set_plan([f"192.0.2.{i}" for i in range(6)], []), ["fw_bulk_delete"]),
    (set_plan([f"192.0.2.{i}" for i in range(4)], []), []),
], ids=["benign", "drop", "reject", "policy-drop", "above-established", "ssh-in-set", "ssh-in-range",
        "ssh-accept-deleted", "accept-all", "accept-any-tcp", "bulk-elements", "few-elements"])
def test_risk_flags(plan: Plan, flags: list[str]) -> None:
    assert NFT.risk_flags(plan, item_count=None) == flags
    assert set(flags) <= set(NFT.risks)


def test_the_management_port_can_be_another_than_22() -> None:
    assert risk_flags(chain_plan(*BASE, "tcp dport 2222 drop"), management_port=2222) == [
        "fw_drop", "fw_management_port"]


def test_rollback_items_restore_rules_policy_and_elements() -> None:
    plan = chain_plan(HEADER.replace("accept;", "drop;"), *BASE[1:], "tcp dport 8443 accept")
    assert rollback_items(plan) == [
        {"op": "set_chain", "table": TABLE, "chain": "input", "rules": list(BASE[1:])},
        {"op": "policy", "table": TABLE, "chain": "input", "policy": "accept"}]
    assert rollback_items(set_plan(["192.0.2.1"], ["192.0.2.2"])) == [
        {"op": "delete_element", "table": TABLE, "set": "partners_v4", "elements": ["192.0.2.2"]},
        {"op": "add_element", "table": TABLE, "set": "partners_v4", "elements": ["192.0.2.1"]}]


def test_a_live_read_names_a_chain_or_set_of_an_owned_table() -> None:
    config = {"tables": [TABLE]}
    assert parse_key(config, "input", "chain") == (INPUT, [])
    assert parse_key(config, f"{TABLE} partners_v4", "set") == (PARTNERS, [])
    assert parse_key(config, "inet filter input", "chain")[1] == [("name", "that table is not managed by this target")]
    assert parse_key(config, "input", "rule")[1][0][0] == "type"
