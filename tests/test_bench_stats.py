"""The benchmarks' shared arithmetic (bench/stats.py) and the bench-quick table: the
interleaving really rotates the order, the percentiles are the nearest-rank ones, and
every target line a benchmark prints is read back exactly."""

from __future__ import annotations

import pytest

from bench import stats
from bench.quick import table


def test_interleaved_rotates_the_order_per_round() -> None:
    order: list[str] = []
    variants = {name: (lambda name=name: order.append(name) or 0.001) for name in ("ours", "ref", "floor")}
    samples = stats.interleaved(variants, rounds=3)
    assert order == ["ours", "ref", "floor", "ref", "floor", "ours", "floor", "ours", "ref"]
    assert samples == {"ours": [0.001] * 3, "ref": [0.001] * 3, "floor": [0.001] * 3}


def test_interleaved_times_a_variant_that_returns_none() -> None:
    samples = stats.interleaved({"a": lambda: None}, rounds=2)
    assert len(samples["a"]) == 2 and all(s >= 0 for s in samples["a"])


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert stats.percentile(values, 50) == 51  # rank round(0.5 * 99) = 50 (0-based)
    assert stats.percentile(values, 99) == 99
    assert stats.percentile(values, 100) == 100
    assert stats.summary([3.0, 1.0, 2.0]) == {"median": 2.0, "p95": 3.0, "p99": 3.0, "max": 3.0, "n": 3}
    with pytest.raises(ValueError):
        stats.percentile([], 50)


def test_target_lines_round_trip_and_group_per_context(capsys: pytest.CaptureFixture[str]) -> None:
    for run, value in enumerate((1.1, 1.4, 1.2)):
        stats.target("apply-100k-vs-100-zone", value=value, unit="x", goal="<= 1.3x", met=value <= 1.3, run=run)
    stats.target("readback", value=2.5, unit="x", goal="<= 2x", met=False, server="bind", run=0)
    stats.target("readback", value=1.5, unit="x", goal="<= 2x", met=True, server="knot", run=0)
    print("a human line in between")
    records = stats.parse_targets(capsys.readouterr().out)
    assert [r["value"] for r in records] == [1.1, 1.4, 1.2, 2.5, 1.5]
    rows = table(records)
    assert len(rows) == 4  # header, apply, readback per server
    assert "1.20x" in rows[1] and "1.10x-1.40x" in rows[1] and rows[1].endswith("2/3")
    assert "server=bind" in rows[2] and rows[2].endswith("0/1")
    assert "server=knot" in rows[3] and rows[3].endswith("1/1")
