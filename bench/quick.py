"""`make bench-quick`: every issue-14 target in one command, in under three minutes.

    .venv/bin/python -m bench.quick [--only dns,queue] [--log-dir DIR]

Runs each benchmark with `--quick` (its own reduced parameters, which it prints) and
`--runs 3`, one after the other, each in its own process; every benchmark interleaves
ours and its reference per round (bench/stats.py). It collects the benchmarks'
`BENCH-TARGET` lines and prints one table: per target, the median over the runs, the
spread (min-max) and in how many runs the goal was met. The full output of each
benchmark goes to DIR/<name>.log (default: a temporary directory, printed).

Exit status: non-zero when a benchmark failed to run or printed no target, never
because a goal was missed (a benchmark reports; it does not judge the build).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.stats import parse_targets

# name -> module; each accepts --quick and --runs. apply_bench is left to `make bench`:
# its only target (approval -> applied p50) is measured by zone-apply on both zone sizes.
BENCHES: dict[str, str] = {
    "dns": "bench.dns_bench",
    "readback": "bench.dns_readback_bench",
    "zone-apply": "bench.baseline_bench",
    "propose": "bench.propose_bench",
    "queue": "bench.queue_bench",
    "audit-csv": "bench.audit_bench",
    "detect-restore": "bench.detect_restore_bench",
}


def run_one(name: str, module: str, runs: int, log_dir: Path) -> tuple[float, int, list[dict]]:
    log = log_dir / f"{name}.log"
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", module, "--quick", "--runs", str(runs)],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=os.environ.copy(),
        )
    elapsed = time.monotonic() - start
    return elapsed, proc.returncode, parse_targets(log.read_text())


def table(records: list[dict]) -> list[str]:
    grouped: dict[tuple, list[dict]] = defaultdict(list)
    for record in records:
        # One row per target and per distinguishing context (server, zone, database), not per run:
        # floats in the context are the run's own details (its p95, CPU, floor), not what it measured.
        context = tuple(sorted((k, v if isinstance(v, str | int) else json.dumps(v, sort_keys=True))
                               for k, v in record.items()
                               if k not in {"target", "value", "unit", "goal", "met", "run"}
                               and not isinstance(v, float)))
        grouped[(record["target"], context)].append(record)
    rows = [f"{'target':<36} {'median':>12} {'spread (min-max)':>22}  {'goal':<12} met"]
    for (target, context), items in grouped.items():
        values = [r["value"] for r in items]
        unit = items[0]["unit"]
        judged = [r["met"] for r in items if r["met"] is not None]
        met = f"{sum(judged)}/{len(judged)}" if judged else "-"
        label = target + ("" if not context else " [" + ", ".join(f"{k}={v}" for k, v in context) + "]")
        rows.append(
            f"{label:<36} {fmt(statistics.median(values), unit):>12} "
            f"{fmt(min(values), unit) + '-' + fmt(max(values), unit):>22}  {items[0]['goal']:<12} {met}"
        )
    return rows


def fmt(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit in {"rows/s", "statements"}:
        return f"{value:,.0f}"
    return f"{value:.1f} {unit}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated subset of: " + ",".join(BENCHES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--log-dir", help="where each benchmark's full output goes")
    parser.add_argument("--from-logs", metavar="DIR", help="only print the table of an earlier run's logs")
    args = parser.parse_args(argv)
    if args.from_logs:
        logs = sorted(Path(args.from_logs).glob("*.log"))
        print("\n".join(table([r for log in logs for r in parse_targets(log.read_text())])))
        return 0
    names = args.only.split(",") if args.only else list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="cg-bench-quick-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"bench-quick: {len(names)} benchmarks, --runs {args.runs}, logs in {log_dir}", flush=True)

    started = time.monotonic()
    records: list[dict] = []
    failed: list[str] = []
    for name in names:
        elapsed, code, found = run_one(name, BENCHES[name], args.runs, log_dir)
        status = "ok" if code == 0 and found else f"FAILED (exit {code}, {len(found)} targets)"
        print(f"  {name:<12} {elapsed:6.1f} s  {len(found):3d} target lines  {status}", flush=True)
        if status != "ok":
            failed.append(name)
        records.extend(found)
    total = time.monotonic() - started

    print()
    print("\n".join(table(records)))
    print(f"\nwall time {total:.0f} s (budget 180 s); machine load average {os.getloadavg()[0]:.2f}")
    if failed:
        print(f"failed: {', '.join(failed)} (see their logs)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
