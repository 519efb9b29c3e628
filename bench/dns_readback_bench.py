"""What the read-back after every UPDATE costs, on BIND 9, Knot DNS and PowerDNS
(issue 12; see bench/README.md).

    .venv/bin/python -m bench.dns_readback_bench [--quick] [--servers bind,knot,pdns] [--runs 3] [--repeat 20]

Each server is a throwaway process on a free loopback port (dns_adapters.local_named,
dns_adapters.local_servers) serving one zone with host-0..host-9 A records; everything
is TSIG-signed. Variants are interleaved per round (bench.stats.interleaved: each
round times every variant once, the order rotating); a run is `--repeat` rounds and
reports each variant's median and the ratio of medians (one BENCH-TARGET line per
server and run); the summary is the median over `--runs` runs and the spread of the
ratios. ratio = ours / reference (lower is better). --quick (make bench-quick): BIND
only, 3 runs of 15 rounds.

  (1) send -> restored: a 10-RRset plan plus an SOA step every server silently
      ignores (a lower serial, RFC 2136 section 3.4.2.2): the server answers NOERROR
      and applies the ten RRsets, the read-back finds the SOA not landed, and the
      adapter restores the ten RRsets. The time is PartialApplyError.elapsed_ms:
      from sending the UPDATE to the end of the restore's read-back. Reference: one
      bare UPDATE round trip for the same ten RRsets (target: under 50 ms).
  (2) apply with read-back: RFC2136Adapter.apply / rollback of a 10-RRset plan,
      alternating so every apply changes the zone. References: (a) a bare TSIG-signed
      UPDATE that replaces the same ten RRsets (no prerequisites, no read-back), sent
      with dns.query.tcp on a fresh connection (target: within 2x); (b) the same
      adapter UPDATE (prerequisites) without the read-back, i.e. the cost of the
      read-back alone.

A benchmark, not a test: it prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import dns.query
import dns.tsigkeyring
import dns.update

from adapters.errors import PartialApplyError
from bench import stats
from dns_adapters.base import Plan, RRKey, RRValue, Step
from dns_adapters.local_named import LocalNamed, default_zone_text, find_named
from dns_adapters.local_servers import LocalKnot, LocalPdns, find_knotd, find_pdns
from dns_adapters.rfc2136 import RFC2136Adapter
from dns_adapters.update import build_update

ZONE = "bench.test"
CHANGED = 10
RECORDS = "".join(f"host-{i} 300 IN A 10.0.0.{i + 1}\n" for i in range(CHANGED))
SERVERS: dict[str, tuple[Callable[[], Any], Callable[..., Any]]] = {
    "bind": (find_named, LocalNamed), "knot": (find_knotd, LocalKnot), "pdns": (find_pdns, LocalPdns)}


def keys() -> list[RRKey]:
    return [RRKey(f"host-{i}.{ZONE}.", "A") for i in range(CHANGED)]


def value(i: int, flip: int) -> RRValue:
    return RRValue(300, (f"10.{flip}.0.{i + 1}",))


def ten_step_plan(adapter: RFC2136Adapter) -> Plan:
    live = adapter.read(keys())
    return Plan(zone=f"{ZONE}.", steps=tuple(Step(k, live[k], value(i, 9)) for i, k in enumerate(keys())))


def bare_update(server: Any, keyring: Any, flip: int) -> float:
    update = dns.update.UpdateMessage(ZONE, keyring=keyring)
    for i, key in enumerate(keys()):
        update.replace(key.name, 300, "A", *value(i, flip).rdatas)
    started = time.perf_counter()
    dns.query.tcp(update, "127.0.0.1", port=server.port, timeout=5)
    return (time.perf_counter() - started) * 1000


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


class Variants:
    """The measured operations of one server; each leaves the zone as it found it."""

    def __init__(self, server: Any, adapter: RFC2136Adapter) -> None:
        self.server, self.adapter = server, adapter
        self.keyring = dns.tsigkeyring.from_file(str(server.key_file))
        self.plan = ten_step_plan(adapter)
        soa_key = RRKey(f"{ZONE}.", "SOA")
        self.soa_key = soa_key

    def restored(self) -> float:
        soa = self.adapter.read([self.soa_key])[self.soa_key]
        assert soa is not None
        lower = RRValue(soa.ttl, (f"ns1.{ZONE}. hostmaster.{ZONE}. 0 3600 600 604800 300",))
        plan = Plan(zone=self.plan.zone, steps=(*self.plan.steps, Step(self.soa_key, soa, lower)))
        try:
            self.adapter.apply(plan)
        except PartialApplyError as exc:
            assert exc.restored, exc.message
            return exc.elapsed_ms
        raise AssertionError("the SOA step was expected to be ignored")

    def apply_with_readback(self) -> float:
        ms = timed(lambda: self.adapter.apply(self.plan))
        self.adapter.rollback(self.plan)
        return ms

    def update_without_readback(self) -> float:
        update = build_update(self.plan, origin=self.adapter.origin, key=self.adapter._key)
        ms = timed(lambda: self.adapter._send_update(update))
        self.adapter.rollback(self.plan)
        return ms

    def bare(self) -> float:
        ms = bare_update(self.server, self.keyring, 7)
        bare_update(self.server, self.keyring, 0)  # back to the zone's values (10.0.0.N)
        return ms


def bench_server(name: str, runs: int, repeat: int) -> list[str]:
    find, cls = SERVERS[name]
    if find() is None:
        return [f"{name}: not installed, skipped"]
    server = cls({ZONE: default_zone_text(ZONE, RECORDS)})
    server.start()
    adapter = RFC2136Adapter({"zone": ZONE, "primary": server.primary, "tsig_key_file": str(server.key_file),
                              "timeout": 5}, key_dir=server.key_dir)
    try:
        variants = Variants(server, adapter)
        order = ["restored", "apply_with_readback", "update_without_readback", "bare"]
        medians: dict[str, list[float]] = {v: [] for v in order}
        ratios: list[float] = []
        rows = [f"{name} ({server.primary}): {runs} runs of {repeat} interleaved rounds"]
        for run in range(1, runs + 1):
            # Each round times every variant once, the order rotating (bench.stats.interleaved).
            samples = stats.interleaved({v: getattr(variants, v) for v in order}, repeat)
            run_fig = {v: statistics.median(samples[v]) for v in order}
            for v in order:
                medians[v].append(run_fig[v])
            ratio = run_fig["apply_with_readback"] / run_fig["bare"]
            ratios.append(ratio)
            p95 = stats.percentile(samples["apply_with_readback"], 95)
            rows.append(
                f"  run {run}: send -> restored {run_fig['restored']:5.1f} ms, apply with read-back "
                f"{run_fig['apply_with_readback']:5.1f} ms (p95 {p95:.1f}),"
                f" bare UPDATE {run_fig['bare']:5.1f} ms, ratio {ratio:.2f}x, no read-back "
                f"{run_fig['update_without_readback']:5.1f} ms"
            )
            stats.target("readback-apply-vs-bare-update", value=ratio, unit="x", goal="<= 2x", met=ratio <= 2,
                         server=name, run=run)
        fig = {v: statistics.median(values) for v, values in medians.items()}
        spread = {v: (min(values), max(values)) for v, values in medians.items()}
        restored, bare, applied, alone = (fig["restored"], fig["bare"], fig["apply_with_readback"],
                                          fig["update_without_readback"])
        low, high = spread["restored"]
        return rows + [
            f"  median over {runs} runs:",
            (f"  (1) send -> restored          {restored:6.1f} ms   (bare UPDATE: {bare:.1f} ms)   ratio "
             f"{restored / bare:.2f}x   [runs {low:.1f}-{high:.1f} ms; target < 50 ms: "
             f"{'met' if restored < 50 else 'missed'}]"),
            (f"  (2) apply with read-back      {applied:6.1f} ms   (bare UPDATE: {bare:.1f} ms)   ratio "
             f"{stats.spread(ratios)}x over runs   [target <= 2x: met in {sum(r <= 2 for r in ratios)}/{runs} runs]"),
            (f"      vs without the read-back  {applied:6.1f} ms   (adapter UPDATE alone: {alone:.1f} ms)   ratio "
             f"{applied / alone:.2f}x"),
        ]
    finally:
        adapter.close()
        server.stop()


QUICK = {"servers": "bind", "runs": 3, "repeat": 15}
FULL = {"servers": "bind,knot,pdns", "runs": 3, "repeat": 20}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"make bench-quick: {QUICK} (flags override)")
    parser.add_argument("--servers", help=f"comma-separated: bind, knot, pdns; default {FULL['servers']}")
    parser.add_argument("--runs", type=int, help=f"runs per server (>= 3 for a spread); default {FULL['runs']}")
    parser.add_argument("--repeat", type=int, help=f"interleaved rounds per run (median); default {FULL['repeat']}")
    args = parser.parse_args(argv)
    for key, default in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; ratio = ours / reference (lower is better)")
    print(f"{'quick' if args.quick else 'full'} mode: servers {args.servers}, {args.runs} runs of {args.repeat} rounds",
          flush=True)
    started = time.perf_counter()
    for name in [s.strip() for s in args.servers.split(",") if s.strip()]:
        print("\n".join(bench_server(name, max(1, args.runs), max(1, args.repeat))), flush=True)
    print(f"dns_readback_bench wall time {time.perf_counter() - started:.1f} s (after imports)")


if __name__ == "__main__":
    main()
