"""The commit-confirmed revert: armed on the host before the batch, it restores
`before` at its deadline unless confirmed, by itself (no worker, no changegate), and
only over exactly `after`. Each test waits for the watchdog's own record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from adapters import RRKey, TransientError
from firewall_adapters.adapter import NftAdapter, revert_id
from firewall_adapters.kind import NFT
from firewall_adapters.presentation import risk_flags
from tests.polling import wait_for

from .firewall_host import BLOCKABLE_PORT, SERVICE_PORT, FirewallHost
from .ssh_host import SSH_PORT, SshHost

TABLE = "inet changegate"
INPUT = RRKey(f"{TABLE} input", "chain")
BLOCK = {"op": "insert", "table": TABLE, "chain": "input", "position": 0, "rule": f"tcp dport {BLOCKABLE_PORT} drop"}


def armed_adapter(host: FirewallHost, seconds: int = 1) -> NftAdapter:
    config = NFT.validate_config(host.config(revert_seconds=seconds), key_dir=settings.CHANGEGATE_KEY_DIR)
    return NFT.adapter(config, key_dir=settings.CHANGEGATE_KEY_DIR)  # type: ignore[return-value]


def final_record(adapter: NftAdapter, revert: str) -> dict[str, Any]:
    return wait_for(lambda: adapter.revert_status(revert), lambda status: status["final"], timeout=20,
                    what="the revert watchdog's record")


def test_an_unconfirmed_block_is_reverted_by_the_host_alone(fw_host: FirewallHost) -> None:
    adapter = armed_adapter(fw_host)
    plan = adapter.plan(adapter.validate_items([BLOCK]))
    result = adapter.apply(plan)
    assert adapter.last_revert is not None and adapter.last_revert["id"] == revert_id(plan)
    assert "armed" in result.detail
    assert fw_host.probe(BLOCKABLE_PORT) == "filtered"
    assert fw_host.probe(SERVICE_PORT) == "open"
    # Nobody calls changegate again: the detached watchdog fires at its deadline.
    record = final_record(adapter, revert_id(plan))
    assert record["status"] == "reverted", record
    assert fw_host.probe(BLOCKABLE_PORT) == "open"
    assert adapter.read([INPUT])[INPUT] == plan.steps[0].before


def test_a_confirmed_change_is_left_alone(fw_host: FirewallHost) -> None:
    adapter = armed_adapter(fw_host)
    plan = adapter.plan(adapter.validate_items([BLOCK]))
    adapter.apply(plan)
    assert adapter.confirm_revert(revert_id(plan))["status"] == "confirmed"
    record = final_record(adapter, revert_id(plan))
    assert record["status"] == "confirmed"
    assert adapter.read([INPUT])[INPUT] == plan.steps[0].after
    assert fw_host.probe(BLOCKABLE_PORT) == "filtered"


def test_an_outside_edit_after_apply_makes_the_watchdog_refuse(fw_host: FirewallHost) -> None:
    adapter = armed_adapter(fw_host)
    plan = adapter.plan(adapter.validate_items([BLOCK]))
    adapter.apply(plan)
    fw_host.nft("add", "rule", "inet", "changegate", "input", "tcp", "dport", "9999", "accept")
    record = final_record(adapter, revert_id(plan))
    assert record["status"] == "refused", record
    live = adapter.read([INPUT])[INPUT]
    assert live is not None and "tcp dport 9999 accept" in live.rdatas
    assert f"tcp dport {BLOCKABLE_PORT} drop" in live.rdatas


def test_a_rolled_back_change_leaves_the_watchdog_nothing_to_do(fw_host: FirewallHost) -> None:
    adapter = armed_adapter(fw_host)
    plan = adapter.plan(adapter.validate_items([BLOCK]))
    adapter.apply(plan)
    adapter.rollback(plan)  # a failed health check: the pipeline rolls back before the deadline
    record = final_record(adapter, revert_id(plan))
    assert record["status"] == "not_needed"
    assert fw_host.probe(BLOCKABLE_PORT) == "open"


def test_a_confirm_after_the_revert_fired_reports_the_revert(fw_host: FirewallHost) -> None:
    adapter = armed_adapter(fw_host)
    plan = adapter.plan(adapter.validate_items([BLOCK]))
    adapter.apply(plan)
    final_record(adapter, revert_id(plan))
    assert adapter.confirm_revert(revert_id(plan))["status"] == "reverted"


def test_a_change_that_locks_out_changegates_ssh_comes_back_by_itself(ssh_host: SshHost) -> None:
    config = NFT.validate_config(ssh_host.config(revert_seconds=4, timeout=1.5, management_port=SSH_PORT),
                                 key_dir=settings.CHANGEGATE_KEY_DIR)
    adapter: NftAdapter = NFT.adapter(config, key_dir=settings.CHANGEGATE_KEY_DIR)  # type: ignore[assignment]
    lockout = {**BLOCK, "rule": f"tcp dport {SSH_PORT} drop"}
    plan = adapter.plan(adapter.validate_items([lockout]))
    assert "fw_management_port" in risk_flags(plan, management_port=SSH_PORT)
    adapter.apply(plan)
    with pytest.raises(TransientError):  # changegate cannot reach the host any more
        adapter.check_reachable()

    def status() -> dict[str, Any]:
        try:
            return adapter.revert_status(revert_id(plan))
        except TransientError:
            return {"final": False, "status": "unreachable"}

    record = wait_for(status, lambda s: s["final"], timeout=30, what="the host to revert the lockout")
    assert record["status"] == "reverted"
    assert adapter.read([INPUT])[INPUT] == plan.steps[0].before


WORKER = """
import json, sys
from firewall_adapters.kind import NFT
config = json.loads(sys.argv[1])
adapter = NFT.adapter(config, key_dir="/")
plan = adapter.plan(adapter.validate_items([json.loads(sys.argv[2])]))
adapter.apply(plan)
print(plan.fingerprint[:32], flush=True)
sys.stdin.read()  # a worker that is still "baking" when it is killed
"""


def test_the_revert_fires_when_the_applying_worker_is_killed(fw_host: FirewallHost) -> None:
    config = NFT.validate_config(fw_host.config(revert_seconds=2), key_dir=settings.CHANGEGATE_KEY_DIR)
    worker = subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(config), json.dumps(BLOCK)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
                              cwd=str(Path(__file__).resolve().parents[2]))
    assert worker.stdout is not None
    revert = worker.stdout.readline().strip()
    assert fw_host.probe(BLOCKABLE_PORT) == "filtered"
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its whole process group
    worker.wait()
    adapter = armed_adapter(fw_host)
    assert final_record(adapter, revert)["status"] == "reverted"
    assert fw_host.probe(BLOCKABLE_PORT) == "open"
