"""nftables adapter benchmark: prints figures next to references measured in the same
run (ratio = ours / reference); asserts nothing about time. Needs root, nft, iproute2.

    .venv/bin/python -m bench.nft_bench [--sizes 100,1000,10000] [--repeat 10]

For each size a throwaway firewall host (tests/firewall_adapters/firewall_host.py) gets
a regular chain `bulk` of that many rules beside the small base chain `input`.
(a) plan of a one-rule append to `bulk` vs `nft -j list chain` of `bulk`;
(b) plan of a one-rule append to `input` while `bulk` holds N rules (independence);
(c) apply (lock + re-read + compare + commit + read-back), alternating with its
    rollback, vs a bare `nft -f` of the same one-rule add/delete;
(d) out-of-band poll of an unchanged host (the generation id) vs `nft list table`;
(e) failed check detected -> path restored: the rollback of a rule that blocks the
    service, until a connect from the client namespace succeeds again.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from firewall_adapters.kind import NFT
from tests.firewall_adapters.firewall_host import BLOCKABLE_PORT, FirewallHost

TABLE = "inet changegate"


def median_ms(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def fill(host: FirewallHost, size: int) -> None:
    rules = [f"add rule {TABLE} bulk tcp dport {1024 + i % 60000} ip saddr 10.{i // 65536 % 256}.{i // 256 % 256}."
             f"{i % 256} accept" for i in range(size)]
    host.nft("-f", "-", stdin=f"add chain {TABLE} bulk\n" + "\n".join(rules) + "\n")


def line(name: str, ours: float, reference: float, what: str) -> None:
    print(f"  {name:<44} {ours:9.1f} ms  vs {what:<34} {reference:9.1f} ms  = {ours / reference:5.2f}x")


def bench_size(size: int, repeat: int) -> None:
    host = FirewallHost(Path(tempfile.mkdtemp(prefix="nft-bench-")) / "state").start()
    try:
        fill(host, size)
        adapter = NFT.adapter(NFT.validate_config(host.config(), key_dir="/tmp"), key_dir="/tmp")
        print(f"{size} rules in chain bulk")
        bulk_item = {"op": "append", "table": TABLE, "chain": "bulk", "rule": "tcp dport 9 accept"}
        items = adapter.validate_items([bulk_item])
        list_bulk = lambda: host.nft("-j", "list", "chain", "inet", "changegate", "bulk")
        line("(a) plan one-rule append to bulk", median_ms(lambda: adapter.plan(items), repeat),
             median_ms(list_bulk, repeat), "nft -j list chain bulk")
        small = adapter.validate_items([{**bulk_item, "chain": "input"}])
        list_input = lambda: host.nft("-j", "list", "chain", "inet", "changegate", "input")
        line("(b) plan one-rule append to input", median_ms(lambda: adapter.plan(small), repeat),
             median_ms(list_input, repeat), "nft -j list chain input")
        plan = adapter.plan(items)
        ours = timed_pairs(lambda: adapter.apply(plan), lambda: adapter.rollback(plan), repeat)
        reference = timed_pairs(lambda: host.nft("-f", "-", stdin=f"add rule {TABLE} bulk tcp dport 9 accept\n"),
                                lambda: delete_last(host), repeat)
        line("(c) apply one rule (lock..read-back)", ours, reference, "bare nft -f of the same add")
        line("(d) out-of-band poll (generation id)", median_ms(adapter.generation, repeat),
             median_ms(lambda: host.nft("list", "table", "inet", "changegate"), repeat), "nft list table")
        restored = []
        block = adapter.plan(adapter.validate_items([{"op": "insert", "table": TABLE, "chain": "input",
                                                       "position": 0, "rule": f"tcp dport {BLOCKABLE_PORT} drop"}]))
        for _ in range(max(3, repeat // 3)):
            adapter.apply(block)
            start = time.perf_counter()
            adapter.rollback(block)
            while host.probe(BLOCKABLE_PORT, timeout=0.2) != "open":
                pass
            restored.append((time.perf_counter() - start) * 1000)
        print(f"  (e) detected -> path restored (rollback + first good connect): "
              f"{statistics.median(restored):.1f} ms median")
    finally:
        host.stop()


def timed_pairs(action: Callable[[], object], undo: Callable[[], object], repeat: int) -> float:
    """Median time of `action`; `undo` (untimed) puts the host back after each."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
        undo()
    return statistics.median(times)


def delete_last(host: FirewallHost) -> None:
    handle = host.nft("-a", "list", "chain", "inet", "changegate", "bulk").splitlines()[-3].split("# handle ")[1]
    host.nft("delete", "rule", "inet", "changegate", "bulk", "handle", handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    print(subprocess.run(["nft", "--version"], capture_output=True, text=True, check=True).stdout.strip())
    for size in (int(s) for s in args.sizes.split(",")):
        bench_size(size, args.repeat)


if __name__ == "__main__":
    main()
