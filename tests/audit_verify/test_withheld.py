"""Exports that leave events out (an auditor scoped to some targets, an export filtered
by action) still verify end to end: each left-out event stands in the chain as a
`withheld` link record (seq, prev_hash, hash; no content), and the verifier says how
many it saw. Withholding content never allows changing it (issue 15)."""

from __future__ import annotations

import json
import random

import pytest

from changegate_audit import verify as v
from tests.audit_verify.test_verify import KEY, canonical_hash, dumps_line, make_chain, make_checkpoint, raw_public

CHAIN = make_chain(10_000, seed=15)
PUB = raw_public(KEY)


def link(event: dict) -> dict:
    return {"type": "withheld", "seq": event["seq"], "prev_hash": event["prev_hash"], "hash": event["hash"]}


def scoped(events: list[dict], keep, *, every: int = 1000) -> list[dict]:
    """The export of `events` where `keep(event)` is false for the withheld ones,
    with a checkpoint after every `every`-th event (as the server writes them)."""
    out = []
    for event in events:
        out.append({"type": "event", **event} if keep(event) else link(event))
        if every and event["seq"] % every == 0:
            out.append(make_checkpoint(event))
    return out


def data(lines: list[dict]) -> bytes:
    return b"".join(dumps_line(line) + b"\n" for line in lines)


def check(lines: list[dict], **options) -> v.Result:
    return v.verify_bytes(data(lines), pubkey=PUB, from_start=True, **options)


@pytest.mark.parametrize("seed", range(8))
def test_any_random_scoping_of_a_10000_event_chain_verifies(seed: int) -> None:
    rng = random.Random(seed)
    # A scope: some targets, or some actions, or a random subset (every shape a filter can have).
    shape = seed % 3
    targets = {name for _id, name in [(1, "example.com"), (2, "bücher.example"), (3, "fw-edge-01")]
               if rng.random() < 0.5}
    actions = {a for a in {e["action"] for e in CHAIN} if rng.random() < 0.3}
    share = rng.random()
    keep = [lambda e: e["target_name"] in targets, lambda e: e["action"] in actions,
            lambda e: rng.random() < share][shape]
    lines = scoped(CHAIN, keep)
    withheld = sum(1 for line in lines if line["type"] == "withheld")
    result = check(lines)
    assert result.ok, result.failure
    assert (result.events, result.withheld) == (10_000, withheld)
    assert result.checkpoints_verified == 10
    assert f"OK 10000 events ({withheld} withheld" in result.report()[0]


def test_an_export_with_nothing_withheld_reads_as_before() -> None:
    result = check(scoped(CHAIN[:50], lambda e: True, every=0))
    assert result.ok and result.withheld == 0
    assert result.report()[0].startswith("OK 50 events, head ")


SMALL = make_chain(300, seed=3)


def small_export(rng: random.Random) -> list[dict]:
    return scoped(SMALL, lambda e: rng.random() < 0.5, every=100)


def _positions(lines: list[dict], kind: str, *, not_last: bool = True) -> list[int]:
    last = max(i for i, line in enumerate(lines) if line["type"] in {"event", "withheld"})
    return [i for i, line in enumerate(lines) if line["type"] == kind and not (not_last and i == last)]


def tamper(rng: random.Random, lines: list[dict]) -> tuple[str, list[dict]]:
    lines = [dict(line) for line in lines]
    what = rng.choice(["edit-visible", "rehash-visible", "withheld-hash", "withheld-prev", "drop-withheld",
                       "drop-visible", "swap", "content-into-withheld", "withheld-replaces-forged"])
    if what == "edit-visible":
        i = rng.choice(_positions(lines, "event", not_last=False))
        lines[i]["action"] += "x"
    elif what == "rehash-visible":  # a rewritten event re-hashed: its successor's link breaks
        i = rng.choice(_positions(lines, "event"))
        lines[i]["outcome"] = "forged"
        lines[i]["hash"] = canonical_hash(lines[i])
    elif what == "withheld-hash":
        i = rng.choice(_positions(lines, "withheld"))
        lines[i]["hash"] = "f" * 64
    elif what == "withheld-prev":
        i = rng.choice(_positions(lines, "withheld"))
        lines[i]["prev_hash"] = "e" * 64
    elif what in {"drop-withheld", "drop-visible"}:
        i = rng.choice(_positions(lines, "withheld" if what == "drop-withheld" else "event"))
        del lines[i]
    elif what == "swap":
        links = _positions(lines, "event") + _positions(lines, "withheld")
        i = rng.choice(sorted(links)[:-1])
        j = next(k for k in range(i + 1, len(lines)) if lines[k]["type"] in {"event", "withheld"})
        lines[i], lines[j] = lines[j], lines[i]
    elif what == "content-into-withheld":  # content smuggled into a link record
        i = rng.choice(_positions(lines, "withheld", not_last=False))
        lines[i]["action"] = "approved"
    else:  # a forged event replaced by a link record with a hash made up to fit: the next link breaks
        i = rng.choice(_positions(lines, "event"))
        lines[i] = {"type": "withheld", "seq": lines[i]["seq"], "prev_hash": lines[i]["prev_hash"], "hash": "a" * 64}
    return what, lines


def test_every_tampering_of_a_scoped_export_still_fails() -> None:
    rng = random.Random(7)
    seen = set()
    for _ in range(400):
        base = small_export(rng)
        assert check(base).ok
        what, lines = tamper(rng, base)
        seen.add(what)
        result = check(lines)
        assert not result.ok, (what, result.report())
    assert len(seen) == 9


def test_the_last_link_is_vouched_for_by_its_checkpoint() -> None:
    """A withheld head carries no content to recompute: the checkpoint after it is
    what pins its hash."""
    lines = scoped(SMALL, lambda e: e["seq"] != 300, every=100)
    assert lines[-2]["type"] == "withheld" and lines[-1]["type"] == "checkpoint"
    lines[-2]["hash"] = "b" * 64
    result = check(lines)
    assert not result.ok and result.failure.seq == 300


def test_a_withheld_event_matches_the_same_event_visible_in_an_earlier_export() -> None:
    full = scoped(SMALL[:200], lambda e: True, every=100)
    later = scoped(SMALL, lambda e: e["seq"] % 2 == 0, every=100)
    result = v.verify_bytes(data(later), pubkey=PUB, from_start=True, extends=data(full))
    assert result.ok, result.failure
    assert result.extends == (1, 200)


def test_cli_reports_the_withheld_count(tmp_path) -> None:
    path = tmp_path / "scoped.jsonl"
    path.write_bytes(data(scoped(SMALL, lambda e: e["seq"] % 3 == 0, every=100)))
    assert v.main(["verify", str(path), "--from-start"]) == 0


@pytest.mark.parametrize("line", [
    {"type": "withheld", "seq": "1", "prev_hash": "0" * 64, "hash": "1" * 64},
    {"type": "withheld", "seq": 1, "hash": "1" * 64},
])
def test_a_malformed_withheld_line_is_malformed(line: dict) -> None:
    result = v.verify_bytes(json.dumps(line).encode() + b"\n")
    assert not result.ok and result.failure.reason == v.MALFORMED
