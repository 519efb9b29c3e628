"""Apply against a real nftables host: conditional on `before`, outside changes are
never overwritten, a racing writer never loses a rule, and every bad item is refused
by index and field with nothing changed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from adapters import DriftError, ItemValidationError, RRKey
from firewall_adapters.adapter import NftAdapter

from .firewall_host import FirewallHost

TABLE = "inet changegate"
INPUT = RRKey(f"{TABLE} input", "chain")
PARTNERS = RRKey(f"{TABLE} partners_v4", "set")
OPEN_8443 = {"op": "append", "table": TABLE, "chain": "input", "rule": "tcp dport 8443 ip saddr 192.0.2.0/24 accept"}


def test_an_outside_rule_added_between_plan_and_apply_is_drift_and_is_kept(fw_host: FirewallHost,
                                                                            fw_adapter: NftAdapter) -> None:
    plan = fw_adapter.plan(fw_adapter.validate_items([OPEN_8443]))
    fw_host.nft("add", "rule", "inet", "changegate", "input", "tcp", "dport", "9999", "accept")
    with pytest.raises(DriftError) as caught:
        fw_adapter.apply(plan)
    assert caught.value.keys == [INPUT]
    live = fw_adapter.read([INPUT])[INPUT]
    assert live is not None and "tcp dport 9999 accept" in live.rdatas
    assert "tcp dport 8443 ip saddr 192.0.2.0/24 accept" not in live.rdatas


def test_an_outside_delete_between_plan_and_apply_is_drift(fw_host: FirewallHost, fw_adapter: NftAdapter) -> None:
    plan = fw_adapter.plan(fw_adapter.validate_items([
        {"op": "delete", "table": TABLE, "chain": "input", "rule": "tcp dport 22 accept"}]))
    # Another rule than the one the change deletes (deleting that same rule would make
    # the plan's `after` live: a no-op, not drift).
    handles = [line for line in fw_host.nft("-a", "list", "chain", "inet", "changegate", "input").splitlines()
               if "ct state established,related accept" in line]
    fw_host.nft("delete", "rule", "inet", "changegate", "input", "handle", handles[0].split("# handle ")[1])
    with pytest.raises(DriftError):
        fw_adapter.apply(plan)


def test_the_plan_is_what_nft_prints_and_apply_lands_exactly_it(fw_adapter: NftAdapter) -> None:
    items = fw_adapter.validate_items([
        {"op": "insert", "table": TABLE, "chain": "input", "position": 1, "rule": "tcp dport 8081 drop"},
        {"op": "add_element", "table": TABLE, "set": "partners_v4", "elements": ["203.0.113.0/24"]},
        {"op": "policy", "table": TABLE, "chain": "input", "policy": "drop"}])
    plan = fw_adapter.plan(items)
    assert plan.keys() == [INPUT, PARTNERS]
    after = plan.steps[0].after
    assert after is not None and after.rdatas[:3] == (
        "type filter hook input priority filter; policy drop;", "ct state established,related accept",
        "tcp dport 8081 drop")
    result = fw_adapter.apply(plan)
    assert result.applied and "WARNING" not in result.detail
    assert fw_adapter.verify(plan).ok
    assert fw_adapter.rollback(plan).applied
    assert fw_adapter.read(plan.keys()) == {step.key: step.before for step in plan.steps}


def test_a_racing_writer_never_loses_a_rule(fw_host: FirewallHost, fw_adapter: NftAdapter) -> None:
    writer = subprocess.Popen(
        ["ip", "netns", "exec", fw_host.netns, "sh", "-c",
         "for i in $(seq 1 150); do nft add rule inet changegate input tcp dport $((20000+i)) accept; done"])
    outcomes = []
    try:
        while writer.poll() is None:
            try:
                plan = fw_adapter.plan(fw_adapter.validate_items([OPEN_8443]))
                fw_adapter.apply(plan)
                outcomes.append("applied")
                fw_adapter.rollback(plan)
            except DriftError:
                outcomes.append("drift")
    finally:
        writer.wait()
    live = fw_adapter.read([INPUT])[INPUT]
    assert live is not None
    assert {f"tcp dport {20000 + i} accept" for i in range(1, 151)} <= set(live.rdatas)
    assert outcomes, "the loop never ran an apply"


BAD = [
    ({"op": "append", "table": TABLE, "chain": "input", "rule": "tcp dport 80 acept"}, "rule"),
    ({"op": "append", "table": TABLE, "chain": "input", "rule": "ip saddr www.example.com accept"}, "rule"),
    ({"op": "append", "table": TABLE, "chain": "input", "rule": "ip saddr localhost accept"}, "rule"),
    ({"op": "append", "table": TABLE, "chain": "input", "rule": "accept; flush ruleset"}, "rule"),
    ({"op": "append", "table": "inet filter", "chain": "input", "rule": "accept"}, "table"),
    ({"op": "append", "table": TABLE, "chain": "nosuch", "rule": "accept"}, "chain"),
    ({"op": "insert", "table": TABLE, "chain": "input", "position": 99, "rule": "accept"}, "position"),
    ({"op": "delete", "table": TABLE, "chain": "input", "rule": "tcp dport 23 accept"}, "rule"),
    ({"op": "add_element", "table": TABLE, "set": "partners_v4", "elements": ["2001:db8::1"]}, "elements"),
    ({"op": "add_element", "table": TABLE, "set": "partners_v4", "elements": ["gw.example.com"]}, "elements"),
    ({"op": "delete_element", "table": TABLE, "set": "partners_v4", "elements": ["192.0.2.99"]}, "elements"),
    ({"op": "policy", "table": TABLE, "chain": "input", "policy": "reject"}, "policy"),
]


@pytest.mark.parametrize(("item", "field"), BAD, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD)])
def test_a_bad_item_is_refused_by_index_and_field_and_nothing_changes(fw_host: FirewallHost, fw_adapter: NftAdapter,
                                                                      item: dict, field: str) -> None:
    before = fw_host.nft("list", "table", "inet", "changegate")
    with pytest.raises(ItemValidationError) as caught:
        fw_adapter.validate_items([OPEN_8443, item])
    assert [(e.index, e.field) for e in caught.value.errors] == [(1, field)]
    assert fw_host.nft("list", "table", "inet", "changegate") == before


@pytest.mark.parametrize("script", ["host_helper.py", "host_tables.py"])
def test_the_helper_runs_with_the_standard_library_only(script: str) -> None:
    # The host has no changegate installed: the helper's two files import nothing else
    # (-I -S: no site-packages, no environment, no current directory).
    from firewall_adapters.transport import HELPER

    code = f"import sys; sys.path.insert(0, {str(HELPER.parent)!r}); import {script[:-3]}"
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_persist_writes_a_file_that_restores_the_owned_tables_at_boot(fw_host: FirewallHost,
                                                                        fw_adapter: NftAdapter) -> None:
    before = fw_host.nft("list", "table", "inet", "changegate")
    plan = fw_adapter.plan(fw_adapter.validate_items([OPEN_8443]))
    fw_adapter.apply(plan)
    path = fw_adapter.persist()["path"]
    approved = fw_host.nft("list", "table", "inet", "changegate")
    fw_host.nft("flush", "table", "inet", "changegate")
    # "Boot": load the file over whatever the table holds now.
    fw_host.nft("-f", path)
    assert fw_host.nft("list", "table", "inet", "changegate") == approved
    # A rollback writes the file too: a reboot does not resurrect the rolled-back change.
    fw_adapter.rollback(plan)
    fw_host.nft("-f", path)
    assert fw_host.nft("list", "table", "inet", "changegate") == before


def test_a_forced_command_pins_the_state_dir(fw_host: FirewallHost, tmp_path) -> None:
    from firewall_adapters.transport import HELPER

    pinned = tmp_path / "pinned"
    done = subprocess.run(
        ["ip", "netns", "exec", fw_host.netns, sys.executable, "-I", "-S", str(HELPER), "--state-dir", str(pinned)],
        input='{"state_dir": "/nonexistent/elsewhere", "tables": ["inet changegate"]}', check=True,
        capture_output=True, text=True, env={"SSH_ORIGINAL_COMMAND": "changegate-nft-helper persist", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert '"ok": true' in done.stdout, done.stdout
    assert (pinned / "ruleset.nft").is_file()


def test_the_generation_moves_on_every_commit_and_not_on_reads(fw_host: FirewallHost, fw_adapter: NftAdapter) -> None:
    start = fw_adapter.generation()
    fw_adapter.read([INPUT, PARTNERS])
    fw_adapter.read_zone()
    assert fw_adapter.generation() == start
    fw_host.nft("add", "element", "inet", "changegate", "partners_v4", "{ 203.0.113.7 }")
    assert fw_adapter.generation() == start + 1
    # The in-process read (root may join the namespace) and the helper's agree.
    assert fw_adapter.transport.generation() == start + 1  # type: ignore[attr-defined]
    assert fw_adapter.transport.call("generation", {})["generation"] == start + 1


def test_a_rule_matching_an_interface_of_the_host_validates_in_the_copy(fw_adapter: NftAdapter) -> None:
    # The throwaway namespace has no cgfw0; nft resolves `iif` names at load time.
    rule = {**OPEN_8443, "rule": 'iif "cgfw0" tcp dport 8443 accept'}
    plan = fw_adapter.plan(fw_adapter.validate_items([rule]))
    fw_adapter.apply(plan)
    assert fw_adapter.verify(plan).ok
    with pytest.raises(ItemValidationError):
        fw_adapter.validate_items([{**rule, "rule": 'iif "nosuch0" tcp dport 8443 accept'}])
