"""Drift baseline benchmark: what an apply costs the out-of-band baseline on a
small and a large zone (see bench/README.md, section "Drift baseline").

    .venv/bin/python -m bench.baseline_bench [--small 100] [--large 100000] [--rounds 200] [--checks 3]

Throwaway: a SQLite file in a temporary directory (or the database of an existing
DATABASE_URL, every name unique to the run) and a `LocalNamed` serving small.test
and large.test on a free loopback port. Each zone's baseline is recorded by a real
check (`oob_check_target`, the AXFR read), as the sweep records it.

  (1) `oob_baseline_apply` of a 1-RRset plan (the step the worker runs after every
      send, `pipeline.run._baseline_follow`), small and large zone interleaved per
      round, the order alternating; median, p95 and large / small.
  (2) context: the check after an apply (the compare by entry digests, the wire
      digest being blank), against the AXFR read alone, on the large zone.

This is a benchmark: it prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.apply_bench import configure_environment, describe_db, percentile, zone_records


def setup(args: argparse.Namespace, run: str) -> tuple[Any, dict[str, Any]]:
    import os

    from changes.services import target_register
    from dns_adapters.local_named import LocalNamed, default_zone_text
    from drift.sweep import oob_check_target

    sizes = {"small": args.small, "large": args.large}
    zones = {f"{label}.test": default_zone_text(f"{label}.test", zone_records(f"h{i}" for i in range(count)))
             for label, count in sizes.items()}
    named = LocalNamed(zones, start_timeout=120, key_dir=os.environ["CHANGEGATE_KEY_DIR"]).start()
    targets = {}
    for label in sizes:
        targets[label] = target_register(actor=None, name=f"{label}-{run}", config={
            "zone": f"{label}.test", "primary": named.primary, "tsig_key_file": str(named.key_file), "timeout": 30})
        status = oob_check_target(target=targets[label]).status
        assert status == "baseline", status
    return named, targets


def one_apply(target: Any, n: int, *, value: str = "") -> float:
    from adapters import Plan, RRKey, RRValue, Step
    from drift.sweep import oob_baseline_apply

    zone = target.config["zone"] + "."
    plan = Plan(zone=zone, steps=(Step(key=RRKey(f"h1.{zone}", "A"), before=None,
                                       after=RRValue(300, (value or f"192.0.2.{n % 250 + 1}",))),))
    start = time.perf_counter()
    oob_baseline_apply(target=target, plan=plan)
    return time.perf_counter() - start


def bench_apply(targets: dict[str, Any], rounds: int) -> None:
    times: dict[str, list[float]] = {"small": [], "large": []}
    for label in times:  # warm-up: first statements, imports
        one_apply(targets[label], 0)
    for n in range(rounds):
        order = ("small", "large") if n % 2 == 0 else ("large", "small")
        for label in order:
            times[label].append(one_apply(targets[label], n + 1))
    small, large = (statistics.median(times[k]) for k in ("small", "large"))
    print(f"(1) oob_baseline_apply, 1-RRset plan, {rounds} rounds interleaved")
    for label in ("small", "large"):
        values = times[label]
        print(f"    {label:5} zone ({targets[label].baseline.item_count:>7} RRsets): "
              f"median {statistics.median(values) * 1000:7.2f} ms  p95 {percentile(values, 95) * 1000:7.2f} ms")
    print(f"    ratio large / small (median): {large / small:.2f}x  "
          f"(p95: {percentile(times['large'], 95) / percentile(times['small'], 95):.2f}x)")


def bench_check(target: Any, checks: int) -> None:
    from changes.adapters import adapter_for
    from drift.sweep import oob_check_target

    checked, read = [], []
    for n in range(checks):
        # The zone's own value (zone_records: h1 is 10.1.0.1), so the check finds it
        # unchanged; the apply blanks the wire digest: the check compares by digests.
        one_apply(target, n, value="10.1.0.1")
        start = time.perf_counter()
        status = oob_check_target(target=target).status
        checked.append(time.perf_counter() - start)
        adapter = adapter_for(target)
        start = time.perf_counter()
        try:
            adapter.read_zone()
        finally:
            adapter.close()
        read.append(time.perf_counter() - start)
    print(f"(2) check after an apply, large zone, {checks} rounds (last status {status})")
    print(f"    check median {statistics.median(checked) * 1000:8.1f} ms; AXFR read alone "
          f"{statistics.median(read) * 1000:8.1f} ms; ratio {statistics.median(checked) / statistics.median(read):.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=100, help="A records of the small zone")
    parser.add_argument("--large", type=int, default=100_000, help="A records of the large zone")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--checks", type=int, default=3, help="rounds of (2); 0 skips it")
    args = parser.parse_args(argv)
    tmpdir = Path(tempfile.mkdtemp(prefix="changegate-baseline-bench-"))
    named = None
    try:
        configure_environment(tmpdir)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        named, targets = setup(args, str(int(time.time() * 1000)))
        print(f"python {sys.version.split()[0]}; database {describe_db()}", flush=True)
        bench_apply(targets, args.rounds)
        if args.checks:
            bench_check(targets["large"], args.checks)
    finally:
        if named is not None:
            named.stop()
        shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    main()
