"""What every benchmark shares: interleaved rounds, percentiles, the spread over runs,
and one machine-readable line per target that `bench.quick` collects.

Why interleaved: timing all of ours, then all of the reference, lets background load
on this shared 2-core machine land on one side only (issue 14, finding 5). Every
round here times each variant once, in an order that rotates per round, so a burst
of load hits all sides alike; ratios are taken per run from the medians of the same
rounds.

A benchmark prints what it wants for people, and for each issue target one
`target(...)` call, which prints a line starting with `BENCH-TARGET ` and a JSON
object; `bench.quick` reads those lines from the benchmarks' output.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

TARGET_PREFIX = "BENCH-TARGET "


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no samples")
    rank = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[rank]


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, p95, p99 and max of one run's samples."""
    return {
        "median": statistics.median(values),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
        "n": len(values),
    }


def timed(action: Callable[[], Any]) -> float:
    """Seconds one call of `action` takes (perf_counter)."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def interleaved(variants: dict[str, Callable[[], float | None]], rounds: int) -> dict[str, list[float]]:
    """Run every variant once per round, the order rotating per round.

    A variant returns the seconds it measured itself (so it may exclude its own set-up),
    or None to have the call timed whole.
    """
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            measured = variants[name]()
            samples[name].append(time.perf_counter() - start if measured is None else measured)
    return samples


def spread(values: Sequence[float]) -> str:
    """'median (min-max)' of per-run figures, for people."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def target(name: str, *, value: float, unit: str, goal: str, met: bool | None, **context: Any) -> None:
    """Print one machine-readable line for an issue target (collected by bench.quick).

    value: the figure the goal is about (a ratio, milliseconds, rows/s ...), for this run.
    goal: the target in words ("<= 1.3x", "< 150 ms"); met: whether this run met it
    (None when the run cannot tell).
    """
    record = {"target": name, "value": round(value, 4), "unit": unit, "goal": goal, "met": met, **context}
    print(TARGET_PREFIX + json.dumps(record, sort_keys=True, default=str), flush=True)


def parse_targets(text: str) -> list[dict[str, Any]]:
    """The target records in a benchmark's output, in order."""
    return [json.loads(line[len(TARGET_PREFIX):]) for line in text.splitlines() if line.startswith(TARGET_PREFIX)]
