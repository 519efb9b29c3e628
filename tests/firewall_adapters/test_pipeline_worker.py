"""nftables changes through a real Celery worker process and a real redis-server:
approve -> applied and confirmed; and a worker killed with kill -9 right after the
send, whose change the host reverts by itself at the confirmation deadline and a
later worker records as rolled back (reverted_by_target)."""

from __future__ import annotations

import time

import pytest

from changes.models import TERMINAL, AuditEvent, ChangeRequest
from pipeline.execution import execution_sweep
from tests.polling import wait_for
from tests.worker_fixtures import broker, worker  # noqa: F401 - fixtures

from .firewall_host import BLOCKABLE_PORT
from .fw_pipeline import State, approve, chain_rules, nft_target, propose, rule_item

# Real commits: the worker process reads the database through its own connection.
pytestmark = pytest.mark.django_db(transaction=True)
OPEN_8443 = rule_item("tcp dport 8443 ip saddr 192.0.2.0/24 accept")


def state_of(change: ChangeRequest) -> str:
    return ChangeRequest.objects.values_list("state", flat=True).get(pk=change.pk)


def wait_end(change: ChangeRequest, *, timeout: float = 60, sweep: bool = False) -> str:
    """Follow the change until it ends; with `sweep`, run the beat's sweep meanwhile
    (what hands a dead worker's change to a live one)."""
    def read() -> str:
        if sweep:
            execution_sweep()
        return state_of(change)

    return wait_for(read, lambda state: state in TERMINAL or state == State.DRIFTED, timeout=timeout,
                    what=f"change #{change.pk} to end")


def test_the_worker_process_applies_an_approved_nft_change_and_confirms_it(fw_host, operator, author, reviewer,
                                                                          worker):
    target = nft_target(operator, fw_host, revert_seconds=30, roles=[("engineer", author), ("reviewer", reviewer)])
    worker()
    change = approve(reviewer, propose(author, target, [OPEN_8443]))
    assert wait_end(change) == State.APPLIED
    assert "tcp dport 8443 ip saddr 192.0.2.0/24 accept" in chain_rules(fw_host)
    (verified,) = AuditEvent.objects.filter(change=change, action="change_verified")
    assert verified.payload["confirmed"]["revert"] == {"id": change.fingerprint[:32], "status": "confirmed"}


def test_a_worker_killed_after_the_send_is_reverted_by_the_host_and_recorded_as_rolled_back(
        fw_host, fw_adapter, operator, author, reviewer, second_reviewer, worker):
    target = nft_target(operator, fw_host, revert_seconds=3, roles=[
        ("engineer", author), ("reviewer", reviewer), ("reviewer", second_reviewer)])
    block = rule_item(f"tcp dport {BLOCKABLE_PORT} drop", op="insert", position=0)
    crashing = worker(CHANGEGATE_CRASH_AT="after_send")
    change = approve(reviewer, propose(author, target, [block]), second_reviewer)
    assert crashing.wait_dead() == -9  # SIGKILL right after the batch reached the host
    assert state_of(change) == State.APPLYING
    sent_at = time.monotonic()
    assert fw_host.probe(BLOCKABLE_PORT) == "filtered"
    # Nobody confirms: the host's watchdog puts `before` back on its own.
    record = wait_for(lambda: fw_adapter.revert_status(change.fingerprint[:32]), lambda r: r["final"], timeout=30,
                      what="the host's revert")
    assert record["status"] == "reverted", record
    assert fw_host.probe(BLOCKABLE_PORT) == "open"
    assert time.monotonic() - sent_at < 20
    # A worker takes the change over: it must record what the host did, not send again.
    worker()
    assert wait_end(change, sweep=True) == State.ROLLED_BACK
    assert f"tcp dport {BLOCKABLE_PORT} drop" not in chain_rules(fw_host)
    assert fw_host.probe(BLOCKABLE_PORT) == "open"
    (rolled_back,) = AuditEvent.objects.filter(change=change, action="change_rolled_back")
    assert "reverted the change itself" in rolled_back.payload["reverted_by_target"]
    assert not AuditEvent.objects.filter(change=change, action="change_verified").exists()


def test_a_worker_killed_before_the_send_leaves_nothing_armed_and_the_next_one_applies(
        fw_host, operator, author, reviewer, worker):
    target = nft_target(operator, fw_host, revert_seconds=30, roles=[("engineer", author), ("reviewer", reviewer)])
    crashing = worker(CHANGEGATE_CRASH_AT="before_send")
    change = approve(reviewer, propose(author, target, [OPEN_8443]))
    assert crashing.wait_dead() == -9
    assert state_of(change) == State.APPLYING
    assert "tcp dport 8443 ip saddr 192.0.2.0/24 accept" not in chain_rules(fw_host)
    # The next worker asks the host whether it reverted the change: no revert was
    # ever armed for it, which is "no", not an error.
    worker()
    assert wait_end(change, sweep=True) == State.APPLIED
    assert "tcp dport 8443 ip saddr 192.0.2.0/24 accept" in chain_rules(fw_host)
    assert AuditEvent.objects.filter(change=change, action="change_applied").count() == 1
