"""Out-of-band detection on an nftables target (drift.sweep.oob_check_target): the
first check records the baseline, an outside rule is an out_of_band_change with the
rule diff, an unchanged host is answered by the generation poll alone (no whole-table
read), and a reordered chain is a change (order decides verdicts)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from changes.models import AuditEvent, Baseline
from drift.sweep import oob_check_target
from firewall_adapters.transport import NetnsTransport
from tests.factories import approved, run

from .fw_pipeline import TABLE, State, nft_target, rule_item

pytestmark = pytest.mark.django_db
INPUT = f"{TABLE} input chain"


@pytest.fixture
def helper_calls(monkeypatch) -> Iterator[Counter[str]]:
    """Every operation the adapter asks of the host-side helper, counted (the helper
    itself still runs, in the namespace)."""
    calls: Counter[str] = Counter()
    real = NetnsTransport.call

    def counted(self: NetnsTransport, op: str, request: dict[str, Any]) -> dict[str, Any]:
        calls[op] += 1
        return real(self, op, request)

    monkeypatch.setattr(NetnsTransport, "call", counted)
    yield calls


@pytest.fixture
def target(fw_host, operator, author, reviewer):
    return nft_target(operator, fw_host, roles=[("engineer", author), ("reviewer", reviewer)])


def oob_events() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="out_of_band_change").order_by("seq"))


def test_the_first_check_records_the_baseline_and_an_unchanged_host_is_not_read(target, helper_calls):
    assert oob_check_target(target=target).status == "baseline"
    baseline = Baseline.objects.get(target=target)
    assert baseline.records[INPUT]["rdatas"][1:] == [
        "ct state established,related accept", "tcp dport 22 accept", "ip saddr @partners_v4 tcp dport 8443 accept"]
    assert helper_calls["dump"] == 1
    for _ in range(3):
        assert oob_check_target(target=target).status == "unchanged"
    assert helper_calls["dump"] == 1  # the generation poll answered; the tables were never read again
    assert oob_events() == []


def test_an_outside_rule_is_an_out_of_band_change_with_the_rule_diff(fw_host, target, helper_calls):
    oob_check_target(target=target)
    fw_host.nft("add", "rule", "inet", "changegate", "input", "tcp", "dport", "9999", "accept")
    result = oob_check_target(target=target)
    assert result.status == "changed"
    (event,) = oob_events()
    (entry,) = event.payload["diff"]
    assert (entry["name"], entry["type"]) == (f"{TABLE} input", "chain")
    assert entry["after"]["rdatas"] == [*entry["before"]["rdatas"], "tcp dport 9999 accept"]
    assert (event.payload["changed"], event.payload["total"]) == (1, 1)
    # Reported once: the next check finds the new baseline.
    assert oob_check_target(target=target).status == "unchanged"
    assert len(oob_events()) == 1


def test_a_reordered_chain_is_an_out_of_band_change(fw_host, target):
    oob_check_target(target=target)
    listing = fw_host.nft("-a", "list", "chain", "inet", "changegate", "input")
    (handle,) = [line.split("# handle ")[1] for line in listing.splitlines() if "tcp dport 22 accept" in line]
    # The same rules in another order: ssh now above the established/related accept.
    fw_host.nft("-f", "-", stdin=f"delete rule inet changegate input handle {handle}\n"
                                 "insert rule inet changegate input tcp dport 22 accept\n")
    result = oob_check_target(target=target)
    assert result.status == "changed"
    (event,) = oob_events()
    (entry,) = event.payload["diff"]
    assert sorted(entry["before"]["rdatas"]) == sorted(entry["after"]["rdatas"])
    assert entry["after"]["rdatas"][1] == "tcp dport 22 accept"


def test_changegates_own_apply_is_not_out_of_band(fw_host, target, author, reviewer):
    oob_check_target(target=target)
    change = approved(author, reviewer, target, [rule_item("tcp dport 8443 ip saddr 192.0.2.0/24 accept")])
    assert run(change) == State.APPLIED
    assert oob_check_target(target=target).status == "unchanged"
    assert oob_events() == []
