"""DNS adapter benchmark against a throwaway BIND (see bench/README.md).

    .venv/bin/python -m bench.dns_bench [--quick] [--sizes 10000,100000] [--runs 3] [--repeat 300]
                                        [--apply-repeat N] [--xfr-repeat 3]

For each zone size a zone of that many records is generated and served by a
`LocalNamed` on a free loopback port. Ours and the reference are interleaved per
round (bench.stats.interleaved: each round times each variant once, order rotating),
so background load lands on both sides alike; ratio = ours / reference of the
medians of the same rounds (below 1.00x: ours is faster or smaller). (a) and (c) are
repeated for --runs runs, each reporting median, p95 and p99 of both sides, and the
spread of the ratios over the runs is printed at the end.

  (a) targeted plan of a 10-RRset change (RFC2136Adapter.plan, adapter reused, so
      its connection is reused and the ten reads are pipelined on it) vs ten
      sequential TSIG-signed `dns.query.tcp` queries for the same keys on one reused
      TCP connection. --repeat rounds per run. Also the pipelined-read tail (issue 14,
      finding 3): p99/p50 of the plans, and how many plans took over 30 ms (a
      delayed-ACK stall costs 40 ms).
  (b) whole-zone read: `read_zone_axfr` vs `dns.zone.from_xfr(dns.query.xfr(...))`,
      time and peak RSS, each in its own child process (so the peaks are
      independent); `dig AXFR` time as the floor. --xfr-repeat interleaved rounds.
  (c) apply of the 10-RRset plan (RFC2136Adapter.apply, read-back included; the
      rollback that restores the zone is not timed) vs a bare TSIG-signed
      `dns.update.UpdateMessage` replacing the same RRsets, sent with `dns.query.tcp`
      (the restoring UPDATE not timed). --apply-repeat rounds per run.

--quick (make bench-quick) uses one 10,000-record zone, 3 runs of 300 plans and
fewer applies, and one round of (b). Every issue target is also printed as a
`BENCH-TARGET {json}` line (bench.stats.target).

This is a benchmark: it prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import stats

REPO_ROOT = Path(__file__).resolve().parent.parent
ZONE = "bench.test"
CHANGED = 10  # RRsets in the targeted change


# ---------------------------------------------------------------------------
# Zone generation


def zone_records(count: int) -> str:
    """Exactly `count` records: mostly A, with TXT, CNAME and MX mixed in.
    host-0 .. host-15 are always A records (the targeted change uses host-0..9)."""
    lines = []
    for i in range(count):
        kind = i % 20
        if kind < 16:
            lines.append(f"host-{i} 300 IN A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\n")
        elif kind < 18:
            lines.append(f'txt-{i} 300 IN TXT "v=spf1 include:_spf.example.net -all" "id {i}"\n')
        elif kind == 18:
            lines.append(f"alias-{i} 300 IN CNAME host-{i - 18}\n")
        else:
            lines.append(f"mx-{i} 300 IN MX 10 host-{i - 19}\n")
    return "".join(lines)


def original_address(i: int) -> str:
    return f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


def changed_address(i: int) -> str:
    return f"192.0.2.{100 + i}"


# ---------------------------------------------------------------------------
# Child processes for (b): one transfer each, so the peak RSS is its own.


def peak_rss_kib() -> int:
    """This process's peak RSS in KiB. On Linux VmHWM is read: unlike ru_maxrss,
    which after fork+exec still carries the parent's RSS at fork time (the kernel
    folds the old mm's high-water mark into it at exec), VmHWM belongs to the new
    address space only."""
    try:
        with open("/proc/self/status") as status:
            for row in status:
                if row.startswith("VmHWM:"):
                    return int(row.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_main(kind: str, port: int, key_file: str) -> None:
    import dns.query
    import dns.tsigkeyring
    import dns.zone

    from dns_adapters.axfr import read_zone_axfr

    keyring = dns.tsigkeyring.from_file(key_file)
    keyname = next(iter(keyring))
    baseline = peak_rss_kib()
    start = time.perf_counter()
    if kind == "axfr":
        snapshot = read_zone_axfr(
            host="127.0.0.1", port=port, zone=ZONE, keyring=keyring, keyname=keyname, timeout=30
        )
        rrsets = len(snapshot)
    elif kind == "from_xfr":
        zone = dns.zone.from_xfr(
            dns.query.xfr("127.0.0.1", ZONE, port=port, keyring=keyring, keyname=keyname, timeout=30, relativize=False),
            relativize=False,
        )
        rrsets = sum(1 for _ in zone.iterate_rdatasets())
    elif kind == "baseline":
        rrsets = 0
    else:
        raise SystemExit(f"unknown child kind {kind}")
    seconds = time.perf_counter() - start
    peak = peak_rss_kib()
    print(json.dumps({"seconds": seconds, "peak_kib": peak, "baseline_kib": baseline, "rrsets": rrsets}))


def run_child(kind: str, port: int, key_file: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.dns_bench", "--child", kind, "--port", str(port), "--key-file", str(key_file)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"child {kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_dig(port: int, key_file: Path) -> float | None:
    dig = shutil.which("dig")
    if dig is None:
        return None
    cmd = [dig, "-p", str(port), "@127.0.0.1", "-k", str(key_file), ZONE, "AXFR", "+noall", "+answer"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------
# Measurements

STALL = 0.030  # a plan this slow has met a delayed ACK (40 ms on Linux), not named's work


def ms(seconds: float) -> str:
    return f"{seconds * 1000:6.1f} ms"


def mib(kib: float) -> str:
    return f"{kib / 1024:8.1f} MiB"


def line(label: str, ours: str, ref_label: str, ref: str, ratio: float, extra: str = "") -> str:
    return f"  {label:<28}{ours}   ({ref_label}: {ref.strip()})   ratio {ratio:.2f}x{extra}"


def dist(samples: list[float]) -> str:
    fig = stats.summary(samples)
    return f"median {ms(fig['median'])}  p95 {ms(fig['p95'])}  p99 {ms(fig['p99'])}"


class Targeted:
    """(a): the adapter's pipelined plan vs ten sequential bare queries on one reused connection."""

    def __init__(self, adapter: Any, port: int, keyring: dict, keyname: Any) -> None:
        import socket

        self.adapter, self.port, self.keyring, self.keyname = adapter, port, keyring, keyname
        self.items = adapter.validate_items(
            [
                {"op": "upsert", "name": f"host-{i}", "type": "A", "ttl": 300, "records": [changed_address(i)]}
                for i in range(CHANGED)
            ]
        )
        self.names = [f"host-{i}.{ZONE}." for i in range(CHANGED)]
        self.plan = adapter.plan(self.items)  # warm-up: opens the adapter's connection
        assert len(self.plan.steps) == CHANGED, self.plan
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.bare()  # warm-up

    def ours(self) -> None:
        self.adapter.plan(self.items)

    def bare(self) -> None:
        import dns.message
        import dns.query

        for name in self.names:
            query = dns.message.make_query(name, "A", use_edns=False)
            query.use_tsig(self.keyring, keyname=self.keyname)
            dns.query.tcp(query, "127.0.0.1", port=self.port, timeout=5, sock=self.sock)

    def close(self) -> None:
        self.sock.close()


class Apply:
    """(c): the adapter's apply vs a bare UPDATE of the same ten RRsets. Each variant
    times its change and then puts the zone back untimed, so the variants can be
    interleaved in any order on the same RRsets."""

    def __init__(self, adapter: Any, plan: Any, port: int, keyring: dict, keyname: Any) -> None:
        self.adapter, self.plan, self.port, self.keyring, self.keyname = adapter, plan, port, keyring, keyname

    def ours(self) -> float:
        start = time.perf_counter()
        result = self.adapter.apply(self.plan)
        elapsed = time.perf_counter() - start
        assert result.applied, result
        result = self.adapter.rollback(self.plan)
        assert result.applied, result
        return elapsed

    def _update(self, address: Callable[[int], str]) -> float:
        import dns.query
        import dns.update

        update = dns.update.UpdateMessage(ZONE, keyring=self.keyring, keyname=self.keyname)
        for i in range(CHANGED):
            update.replace(f"host-{i}", 300, "A", address(i))
        start = time.perf_counter()
        response = dns.query.tcp(update, "127.0.0.1", port=self.port, timeout=5)
        elapsed = time.perf_counter() - start
        assert response.rcode() == 0, response
        return elapsed

    def bare(self) -> float:
        elapsed = self._update(changed_address)
        self._update(original_address)
        return elapsed


def run_targeted(case: Targeted, rounds: int, run: int, size: int) -> float:
    samples = stats.interleaved({"ours": case.ours, "bare": case.bare}, rounds)
    ours, bare = stats.summary(samples["ours"]), stats.summary(samples["bare"])
    ratio = ours["median"] / bare["median"]
    tail = ours["p99"] / ours["median"]
    bare_tail = bare["p99"] / bare["median"]  # the machine's own tail: same server, no pipelining
    stalls = sum(1 for t in samples["ours"] if t > STALL)
    bare_stalls = sum(1 for t in samples["bare"] if t > STALL)
    print(f"  (a) targeted plan, {CHANGED} RRsets   {dist(samples['ours'])}", flush=True)
    print(f"      {CHANGED} bare TCP queries      {dist(samples['bare'])}   ratio of medians {ratio:.2f}x")
    print(
        f"      pipelined tail: p99/p50 {tail:.2f}x (goal <= 2x; bare queries {bare_tail:.2f}x), "
        f"max {ms(ours['max']).strip()}, over {STALL * 1000:.0f} ms: {stalls}/{rounds} plans "
        f"(bare queries: {bare_stalls}/{rounds})"
    )
    # Context only what names the row (bench.quick groups by it); the stall counts are in the line above.
    stats.target("pipelined-plan-p99-over-p50", value=tail, unit="x", goal="<= 2x", met=tail <= 2, run=run,
                 zone=size)
    stats.target("targeted-plan-vs-bare-queries", value=ratio, unit="x", goal="<= 2x", met=ratio <= 2, run=run,
                 zone=size)
    return ratio


def run_apply(case: Apply, rounds: int, run: int, size: int) -> float:
    samples = stats.interleaved({"ours": case.ours, "bare": case.bare}, rounds)
    ratio = statistics.median(samples["ours"]) / statistics.median(samples["bare"])
    print(f"  (c) apply {CHANGED}-RRset plan        {dist(samples['ours'])}")
    print(f"      bare UPDATE                {dist(samples['bare'])}   ratio of medians {ratio:.2f}x", flush=True)
    stats.target("dns-apply-vs-bare-update", value=ratio, unit="x", goal="report", met=None, run=run, zone=size)
    return ratio


def bench_zone_read(port: int, key_file: Path, rounds: int) -> list[str]:
    """(b), interleaved per round: one child per reader (and one dig) each round."""
    records: dict[str, list[dict[str, Any]]] = {"axfr": [], "from_xfr": []}

    def child(kind: str) -> Callable[[], float]:
        def measure() -> float:
            record = run_child(kind, port, key_file)
            records[kind].append(record)
            return record["seconds"]

        return measure

    variants: dict[str, Callable[[], float | None]] = {"axfr": child("axfr"), "from_xfr": child("from_xfr")}
    if shutil.which("dig"):
        variants["dig"] = lambda: time_dig(port, key_file)
    samples = stats.interleaved(variants, rounds)
    base = run_child("baseline", port, key_file)
    ours, ref = records["axfr"], records["from_xfr"]
    if ours[0]["rrsets"] != ref[0]["rrsets"]:
        raise SystemExit(f"RRset counts differ: read_zone_axfr {ours[0]['rrsets']}, from_xfr {ref[0]['rrsets']}")
    t_ours = statistics.median(samples["axfr"])
    t_ref = statistics.median(samples["from_xfr"])
    m_ours = statistics.median(r["peak_kib"] for r in ours)
    m_ref = statistics.median(r["peak_kib"] for r in ref)
    rows = [line(f"(b) zone read, time (x{rounds})", ms(t_ours), "from_xfr", ms(t_ref), t_ours / t_ref)]
    if "dig" in samples:
        t_dig = statistics.median(samples["dig"])
        rows.append(line("    vs dig AXFR (floor)", ms(t_ours), "dig AXFR", ms(t_dig), t_ours / t_dig))
    rows.append(
        line("(b) zone read, peak RSS", mib(m_ours), "from_xfr", mib(m_ref), m_ours / m_ref)
        + f"   [interpreter + imports alone: {base['peak_kib'] / 1024:.1f} MiB]"
    )
    rows.append(
        line(
            "    RSS above imports",
            mib(m_ours - base["peak_kib"]),
            "from_xfr",
            mib(m_ref - base["peak_kib"]),
            (m_ours - base["peak_kib"]) / max(1, m_ref - base["peak_kib"]),
        )
    )
    return rows


def bench_size(count: int, args: argparse.Namespace) -> None:
    import dns.tsigkeyring

    from dns_adapters.local_named import LocalNamed, default_zone_text

    started = time.perf_counter()
    named = LocalNamed({ZONE: default_zone_text(ZONE, zone_records(count))}, start_timeout=120)
    try:
        named.start()
        print(f"  [zone generation and named start: {time.perf_counter() - started:.1f} s]")
        keyring = dns.tsigkeyring.from_file(str(named.key_file))
        keyname = next(iter(keyring))
        print(f"zone={count} records ({ZONE}, named on {named.primary})", flush=True)

        adapter = None
        try:
            from dns_adapters.rfc2136 import RFC2136Adapter
        except ImportError as exc:
            print(f"  (a), (c) skipped: dns_adapters.rfc2136 not importable ({exc})")
        else:
            adapter = RFC2136Adapter(
                {"zone": ZONE, "primary": named.primary, "tsig_key_file": str(named.key_file), "timeout": 5},
                key_dir=named.dir,
            )
        if adapter is not None:
            targeted = Targeted(adapter, named.port, keyring, keyname)
            applying = Apply(adapter, targeted.plan, named.port, keyring, keyname)
            plan_ratios, apply_ratios = [], []
            try:
                for run in range(1, args.runs + 1):
                    started = time.perf_counter()
                    print(f" run {run}/{args.runs}: {args.repeat} plans, {args.apply_repeat} applies", flush=True)
                    plan_ratios.append(run_targeted(targeted, args.repeat, run, count))
                    apply_ratios.append(run_apply(applying, args.apply_repeat, run, count))
                    print(f"  [run took {time.perf_counter() - started:.1f} s]")
            finally:
                targeted.close()
                adapter.close()
            print(f" over {args.runs} runs, ratio of medians, median (min-max):")
            print(f"  (a) targeted plan vs bare queries   {stats.spread(plan_ratios)}")
            print(f"  (c) apply vs bare UPDATE            {stats.spread(apply_ratios)}", flush=True)
        if args.xfr_repeat > 0:
            started = time.perf_counter()
            print("\n".join(bench_zone_read(named.port, named.key_file, args.xfr_repeat)), flush=True)
            print(f"  [(b) took {time.perf_counter() - started:.1f} s]")
    finally:
        named.stop()


QUICK = {"sizes": "10000", "runs": 3, "repeat": 300, "apply_repeat": 60, "xfr_repeat": 1}
FULL = {"sizes": "10000,100000", "runs": 3, "repeat": 300, "apply_repeat": 300, "xfr_repeat": 3}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"make bench-quick: {QUICK} (flags override)")
    parser.add_argument("--sizes", help=f"comma-separated zone sizes (records); default {FULL['sizes']}")
    parser.add_argument("--runs", type=int, help=f"runs of (a) and (c) per size; default {FULL['runs']}")
    parser.add_argument("--repeat", type=int, help=f"interleaved rounds of (a) per run; default {FULL['repeat']}")
    parser.add_argument("--apply-repeat", type=int, help="interleaved rounds of (c) per run; default --repeat")
    parser.add_argument("--xfr-repeat", type=int, help=f"rounds of (b), 0 skips it; default {FULL['xfr_repeat']}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, args.port, args.key_file)
        return
    defaults = QUICK if args.quick else {**FULL, "apply_repeat": args.repeat or FULL["repeat"]}
    for name, default in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.runs, args.repeat, args.apply_repeat = max(1, args.runs), max(1, args.repeat), max(1, args.apply_repeat)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; ratio = ours / reference (lower is better)")
    print(
        f"{'quick' if args.quick else 'full'} mode: sizes {args.sizes}, {args.runs} runs, {args.repeat} plans and "
        f"{args.apply_repeat} applies per run, (b) {args.xfr_repeat} rounds",
        flush=True,
    )
    started = time.perf_counter()
    for count in sizes:
        bench_size(count, args)
    print(f"dns_bench wall time {time.perf_counter() - started:.1f} s (after imports)")


if __name__ == "__main__":
    main()
