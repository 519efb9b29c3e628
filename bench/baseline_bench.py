"""Drift baseline benchmark: what drift detection costs an apply and a check, on a
small and a large zone (see bench/README.md, section "Drift baseline").

    .venv/bin/python -m bench.baseline_bench [--small 100] [--large 100000] [--runs 3] [--changes 50]
                                             [--checks 5] [--rounds 200] [--quick]

Throwaway: a SQLite file in a temporary directory (or the database of an existing
DATABASE_URL, every name unique to the run), a `LocalNamed` serving small.test and
large.test on a free loopback port, a redis-server and one solo Celery worker
(bench.apply_bench's `Pipeline`). Each zone's baseline is recorded by a real check
(`oob_check_target`, the AXFR read), as the sweep records it. Per run (--runs):

  (A) approval -> applied through the worker: --changes 1-RRset upserts (bake 0)
      per zone, the two zones alternating per change (the order flipping per
      round), timed from the approving commit to this process seeing `applied`;
      p50, p95 of each and large / small (p50). The worker moves the baseline with
      every send (`pipeline.run._baseline_follow`).
  (B) the check right after those applies, on each zone: it must find no drift
      (the baseline followed the changes; a benchmark fast by skipping that work
      would be wrong). The large zone's check is timed, with an AXFR read after
      it: context (the applies blanked the wire digest: the check compares by
      entry digests).
  (C) the check of the UNCHANGED large zone (nothing changed since (B)'s check)
      against the AXFR read alone (`adapter.read_zone()`), interleaved per round,
      --checks rounds; median, p95 and ratio of medians.

Then once: (D) `oob_baseline_apply` alone of a 1-RRset plan (the step the worker
runs after every send), small and large zone interleaved, --rounds rounds.

This is a benchmark: it prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.apply_bench import Pipeline, configure_environment, describe_db, zone_records
from bench.stats import interleaved, ms, percentile, spread, target

WARMUP = 3  # changes per zone before the first run: imports and first connections in the worker
LABELS = ("small", "large")


class ZonePipeline(Pipeline):
    """apply_bench's worker, redis and named, serving small.test and large.test."""

    def zone_records(self) -> dict[str, str]:
        return {f"{label}.test": zone_records(f"h{i}" for i in range(self.size(label))) for label in LABELS}

    def size(self, label: str) -> int:
        return self.args.small if label == "small" else self.args.large

    def setup_data(self) -> None:
        from drift.sweep import BASELINE, oob_check_target

        self.setup_people()
        self.by_label = {label: self.register(f"{label}.test", 0, timeout=30) for label in LABELS}
        for label, zone_target in self.by_label.items():
            start = time.perf_counter()
            status = oob_check_target(target=zone_target).status
            if status != BASELINE:
                raise SystemExit(f"first check of {label}.test: {status}, not {BASELINE}")
            print(f"baseline of {label}.test recorded by a check in {time.perf_counter() - start:.1f} s", flush=True)
        self.counter = 0

    def change(self, label: str) -> float:
        """One 1-RRset upsert on `label`'s zone approved, until seen applied: seconds."""
        from changes.models import ChangeRequest

        self.counter += 1
        n = self.counter  # a value no change used before: every change really moves the zone
        change = self.propose(self.by_label[label], f"h{n % self.size(label)}",
                              value=f"192.0.{n >> 8 & 255}.{n & 255}")
        _wall, perf = self.approve([change])
        (state, seen), = self.wait_ended([change.pk]).values()
        if state != ChangeRequest.State.APPLIED:
            raise SystemExit(f"change #{change.pk} on {label}.test ended {state}")
        return seen - perf


def check(zone_target: Any, expect: str) -> float:
    from drift.sweep import oob_check_target

    start = time.perf_counter()
    result = oob_check_target(target=zone_target)
    elapsed = time.perf_counter() - start
    if result.status != expect:
        raise SystemExit(f"check of {zone_target.name}: {result.status} (diff {len(result.diff)} RRsets), "
                         f"expected {expect}")
    return elapsed


def axfr(zone_target: Any) -> float:
    from changes.adapters import adapter_for

    start = time.perf_counter()
    adapter = adapter_for(zone_target)
    try:
        adapter.read_zone()
    finally:
        adapter.close()
    return time.perf_counter() - start


def one_run(p: ZonePipeline, run: int) -> dict[str, float]:
    from drift.sweep import UNCHANGED

    args, large = p.args, p.by_label["large"]
    # (A) the zones alternate per change, the order flipping per round.
    apply = interleaved({label: (lambda label=label: p.change(label)) for label in LABELS}, args.changes)
    fig = {f"{label}_{q}": percentile(apply[label], q) for label in LABELS for q in (50, 95)}
    fig["apply_ratio"] = fig["large_50"] / fig["small_50"]
    print(f"run {run}: (A) approval -> applied, {args.changes} changes per zone interleaved, bake 0, 1 solo worker")
    for label in LABELS:
        print(f"    {label:5} zone ({p.size(label):>6} records): p50 {ms(fig[f'{label}_50']):>9}  "
              f"p95 {ms(fig[f'{label}_95']):>9}  max {ms(max(apply[label])):>9}")
    print(f"    large / small (p50): {fig['apply_ratio']:.2f}x  (p95: {fig['large_95'] / fig['small_95']:.2f}x)")
    target("apply-100k-vs-100-zone", value=fig["apply_ratio"], unit="x", goal="<= 1.3x",
           met=fig["apply_ratio"] <= 1.3, run=run, changes=args.changes, records=p.size("large"))
    target("apply-100k-p50", value=fig["large_50"] * 1000, unit="ms", goal="< 300 ms",
           met=fig["large_50"] < 0.3, run=run)
    target("apply-100k-p95", value=fig["large_95"] * 1000, unit="ms", goal="< 1000 ms",
           met=fig["large_95"] < 1.0, run=run)
    # (B) the baseline followed every change: a check of each zone finds no drift.
    check(p.by_label["small"], UNCHANGED)
    fig["after_apply"], fig["after_apply_axfr"] = check(large, UNCHANGED), axfr(large)
    print(f"    (B) check after the applies: no drift on either zone; large zone check "
          f"{ms(fig['after_apply'])} vs AXFR read {ms(fig['after_apply_axfr'])}: "
          f"{fig['after_apply'] / fig['after_apply_axfr']:.2f}x")
    if not args.checks:
        return fig
    # (C) nothing changed since (B)'s check.
    unchanged = interleaved({"check": lambda: check(large, UNCHANGED), "axfr": lambda: axfr(large)}, args.checks)
    c, a = (statistics.median(unchanged[k]) for k in ("check", "axfr"))
    fig["unchanged_ratio"] = c / a
    print(f"    (C) check of the unchanged large zone, {args.checks} rounds interleaved with the AXFR read alone: "
          f"median {ms(c)} (p95 {ms(percentile(unchanged['check'], 95))}) vs {ms(a)} "
          f"(p95 {ms(percentile(unchanged['axfr'], 95))}): {fig['unchanged_ratio']:.2f}x", flush=True)
    target("drift-check-unchanged-vs-axfr", value=fig["unchanged_ratio"], unit="x", goal="<= 1.5x",
           met=fig["unchanged_ratio"] <= 1.5, run=run, rounds=args.checks, records=p.size("large"))
    return fig


# ---------------------------------------------------------------------------
# (D) the baseline step alone


def one_apply(zone_target: Any, n: int) -> float:
    from adapters import Plan, RRKey, RRValue, Step
    from drift.sweep import oob_baseline_apply

    zone = zone_target.config["zone"] + "."
    plan = Plan(zone=zone, steps=(Step(key=RRKey(f"h1.{zone}", "A"), before=None,
                                       after=RRValue(300, (f"198.51.100.{n % 250 + 1}",))),))
    start = time.perf_counter()
    oob_baseline_apply(target=zone_target, plan=plan)
    return time.perf_counter() - start


def bench_baseline_apply(p: ZonePipeline, rounds: int) -> None:
    """Moves the baselines away from the zones (nothing is sent): run last."""
    counter = iter(range(1, 10 * rounds + 10))
    for label in LABELS:  # warm-up: first statements
        one_apply(p.by_label[label], 0)
    times = interleaved({label: (lambda label=label: one_apply(p.by_label[label], next(counter)))
                         for label in LABELS}, rounds)
    small, large = (statistics.median(times[k]) for k in LABELS)
    print(f"(D) oob_baseline_apply alone, 1-RRset plan, {rounds} rounds interleaved")
    for label in LABELS:
        print(f"    {label:5} zone ({p.size(label):>6} records): median {ms(statistics.median(times[label])):>9}  "
              f"p95 {ms(percentile(times[label], 95)):>9}")
    print(f"    large / small (median): {large / small:.2f}x  "
          f"(p95: {percentile(times['large'], 95) / percentile(times['small'], 95):.2f}x)")


def _catching(failed: list[BaseException], action: Any, *args: Any) -> None:
    try:
        action(*args)
    except BaseException as exc:  # handed to the main thread
        failed.append(exc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=100, help="A records of the small zone")
    parser.add_argument("--large", type=int, default=100_000, help="A records of the large zone")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--changes", type=int, default=50, help="(A): changes per zone per run")
    parser.add_argument("--checks", type=int, default=5, help="(C): rounds per run; 0 skips it")
    parser.add_argument("--rounds", type=int, default=200, help="(D): rounds; 0 skips it")
    parser.add_argument("--quick", action="store_true",
                        help="for make bench-quick: --changes 20 --checks 5 --rounds 20 (3 runs)")
    parser.add_argument("--poll", type=float, default=0.003, help="poll interval of (A), seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and worker log")
    args = parser.parse_args(argv)
    if args.quick:
        args.changes, args.checks, args.rounds = 20, 5, 20  # (C) needs 5 rounds for a median that load does not tip

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # run the finally below

    signal.signal(signal.SIGTERM, terminate)
    tmpdir = Path(tempfile.mkdtemp(prefix="changegate-baseline-bench-"))
    pipeline = None
    began = time.perf_counter()
    try:
        db_url = configure_environment(tmpdir)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        pipeline = ZonePipeline(args, db_url)
        pipeline.start_services()
        # The worker starts (imports, connects) while this process records the baselines.
        failed: list[BaseException] = []
        starting = threading.Thread(target=lambda: _catching(failed, pipeline.start_workers, 1))
        starting.start()
        try:
            pipeline.setup_data()
        finally:
            starting.join()
        if failed:
            raise failed[0]
        print(f"python {sys.version.split()[0]}; database {describe_db()}; set-up {time.perf_counter() - began:.1f} s",
              flush=True)
        for _ in range(WARMUP):
            for label in LABELS:
                pipeline.change(label)
        figs = [one_run(pipeline, run) for run in range(1, args.runs + 1)]
        if len(figs) > 1:
            print(f"over {len(figs)} runs, median (min-max):")
            for key, label in (("large_50", "(A) large zone p50, ms"), ("large_95", "(A) large zone p95, ms"),
                               ("small_50", "(A) small zone p50, ms"), ("apply_ratio", "(A) large / small p50"),
                               ("unchanged_ratio", "(C) unchanged check / AXFR")):
                if key not in figs[0]:
                    continue
                scale = 1000 if key.endswith(("_50", "_95")) else 1
                print(f"    {label:<30}{spread([f[key] * scale for f in figs])}")
        if args.rounds:
            bench_baseline_apply(pipeline, args.rounds)
    finally:
        if pipeline is not None:
            pipeline.stop_all()
        if not args.keep:
            shutil.rmtree(tmpdir, ignore_errors=True)
    print(f"wall {time.perf_counter() - began:.1f} s", flush=True)


if __name__ == "__main__":
    main()
