"""DNS adapter benchmark against a throwaway BIND (see bench/README.md).

    .venv/bin/python -m bench.dns_bench [--sizes 10000,100000] [--repeat N] [--xfr-repeat M]

For each zone size a zone of that many records is generated and served by a
`LocalNamed` on a free loopback port. Every figure is printed next to a reference
measured in the same run, with ratio = ours / reference (below 1.00x: ours is
faster or smaller):

  (a) targeted plan of a 10-RRset change (RFC2136Adapter.plan, adapter reused, so
      its connection is reused) vs ten sequential TSIG-signed `dns.query.tcp`
      queries for the same keys on one reused TCP connection. Median of --repeat.
  (b) whole-zone read: `read_zone_axfr` vs `dns.zone.from_xfr(dns.query.xfr(...))`,
      time and peak RSS, each run in its own child process (so the peaks are
      independent); `dig AXFR` time as the floor. Median of --xfr-repeat.
  (c) apply of the 10-RRset plan (RFC2136Adapter.apply / rollback, alternating so
      every apply changes the zone) vs a bare TSIG-signed `dns.update.UpdateMessage`
      replacing the same RRsets, sent with `dns.query.tcp`. Median of --repeat.

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


def median_time(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def mib(kib: float) -> str:
    return f"{kib / 1024:8.1f} MiB"


def line(label: str, ours: str, ref_label: str, ref: str, ratio: float, extra: str = "") -> str:
    return f"  {label:<28}{ours}   ({ref_label}: {ref.strip()})   ratio {ratio:.2f}x{extra}"


def bench_targeted(adapter: Any, port: int, keyring: dict, keyname: Any, repeat: int) -> tuple[list[str], Any]:
    import socket

    import dns.message
    import dns.query

    items = adapter.validate_items(
        [
            {"op": "upsert", "name": f"host-{i}", "type": "A", "ttl": 300, "records": [changed_address(i)]}
            for i in range(CHANGED)
        ]
    )
    plan = adapter.plan(items)  # warm-up: opens the adapter's connection
    assert len(plan.steps) == CHANGED, plan
    ours = median_time(lambda: adapter.plan(items), repeat)

    names = [f"host-{i}.{ZONE}." for i in range(CHANGED)]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:

        def bare() -> None:
            for name in names:
                query = dns.message.make_query(name, "A", use_edns=False)
                query.use_tsig(keyring, keyname=keyname)
                dns.query.tcp(query, "127.0.0.1", port=port, timeout=5, sock=sock)

        bare()  # warm-up
        ref = median_time(bare, repeat)
    row = line(f"(a) targeted plan, {CHANGED} RRsets", ms(ours), f"{CHANGED} bare TCP queries", ms(ref), ours / ref)
    return [row], plan


def bench_apply(adapter: Any, plan: Any, port: int, keyring: dict, keyname: Any, repeat: int) -> list[str]:
    import dns.query
    import dns.update

    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = adapter.apply(plan)
        times.append(time.perf_counter() - start)
        assert result.applied, result
        start = time.perf_counter()
        result = adapter.rollback(plan)
        times.append(time.perf_counter() - start)
        assert result.applied, result
    ours = statistics.median(times)

    def bare(address: Callable[[int], str]) -> float:
        update = dns.update.UpdateMessage(ZONE, keyring=keyring, keyname=keyname)
        for i in range(CHANGED):
            update.replace(f"host-{i}", 300, "A", address(i))
        start = time.perf_counter()
        response = dns.query.tcp(update, "127.0.0.1", port=port, timeout=5)
        elapsed = time.perf_counter() - start
        assert response.rcode() == 0, response
        return elapsed

    ref_times = []
    for _ in range(repeat):
        ref_times.append(bare(changed_address))
        ref_times.append(bare(original_address))
    ref = statistics.median(ref_times)
    return [line(f"(c) apply {CHANGED}-RRset plan", ms(ours), "bare UPDATE", ms(ref), ours / ref)]


def bench_zone_read(port: int, key_file: Path, repeat: int) -> list[str]:
    ours = [run_child("axfr", port, key_file) for _ in range(repeat)]
    ref = [run_child("from_xfr", port, key_file) for _ in range(repeat)]
    base = run_child("baseline", port, key_file)
    if ours[0]["rrsets"] != ref[0]["rrsets"]:
        raise SystemExit(f"RRset counts differ: read_zone_axfr {ours[0]['rrsets']}, from_xfr {ref[0]['rrsets']}")
    t_ours = statistics.median(r["seconds"] for r in ours)
    t_ref = statistics.median(r["seconds"] for r in ref)
    m_ours = statistics.median(r["peak_kib"] for r in ours)
    m_ref = statistics.median(r["peak_kib"] for r in ref)
    digs = [t for t in (time_dig(port, key_file) for _ in range(repeat)) if t is not None]
    rows = [line("(b) zone read, time", ms(t_ours), "from_xfr", ms(t_ref), t_ours / t_ref)]
    if digs:
        t_dig = statistics.median(digs)
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


def bench_size(count: int, repeat: int, xfr_repeat: int) -> None:
    import dns.tsigkeyring

    from dns_adapters.local_named import LocalNamed, default_zone_text

    named = LocalNamed({ZONE: default_zone_text(ZONE, zone_records(count))}, start_timeout=120)
    try:
        named.start()
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
            try:
                rows, plan = bench_targeted(adapter, named.port, keyring, keyname, repeat)
                print("\n".join(rows), flush=True)
                print("\n".join(bench_apply(adapter, plan, named.port, keyring, keyname, repeat)), flush=True)
            finally:
                adapter.close()
        print("\n".join(bench_zone_read(named.port, named.key_file, xfr_repeat)), flush=True)
    finally:
        named.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated zone sizes (records)")
    parser.add_argument("--repeat", type=int, default=20, help="repeats for (a) and (c); the median is shown")
    parser.add_argument("--xfr-repeat", type=int, default=3, help="child processes per reader for (b)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--key-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, args.port, args.key_file)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; ratio = ours / reference (lower is better)")
    for count in sizes:
        bench_size(count, max(1, args.repeat), max(1, args.xfr_repeat))


if __name__ == "__main__":
    main()
