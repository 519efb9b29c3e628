"""Audit export and offline verify benchmark (see bench/README.md, section "Audit export").

    .venv/bin/python -m bench.audit_bench [--events 100000,1000000] [--database-url URL]
                                          [--checkpoint-every 1000] [--repeat 1] [--profile]
                                          [--workdir DIR] [--only csv] [--runs 3] [--quick]

--workdir DIR keeps the database and the checkpoint key in DIR, so a second run
measures the chain already there instead of generating it again; --only csv
measures the CSV export and its DB read floor alone (issue 14, finding 6): --runs
runs (default 3), each one child of ours and one of the floor, the order rotating
per run (bench/stats.py `interleaved`: background load on a shared machine lands
on both alike); it prints every run, the median, p95 and spread over the runs, and
per run the BENCH-TARGET lines csv-export-rows-per-s (goal >= 50,000) and
csv-export-peak-rss (goal: flat; compare the lines of two sizes). --quick is
--only csv at 40,000 events in a temporary directory (generation included, about
half a minute): rows/s is a per-row cost and the peak does not grow with the size,
so it shows both figures, but the target's own size is --events 1000000.

A hash-chained audit log of N events is generated straight into the database
(AuditEvent objects built in Python, prev_hash/hash computed with the model's own
`compute_hash` exactly as `audit_record` does, `bulk_create` in batches of 5,000,
the chain head updated with each batch; signed checkpoints every
--checkpoint-every events with a throwaway Ed25519 key, as `audit_record` writes
them). Every event carries a change_created-like payload (title, reason, items,
a 2-step plan, fingerprint: about 630 bytes of compact JSON). With several
sizes (--events 100000,1000000) the same chain is extended from one size to the
next, so the figures of the sizes differ only in the number of rows.

Then, for every size, each in its own child process (so every peak RSS is its
own: VmHWM from /proc/self/status, as bench/dns_bench.py reads it), with the
time measured inside the child (no interpreter start-up):

  (1) JSON Lines export: `export_stream(user=None, query=export_query(...))` from
      audit/export.py (what the API, the admin and the `audit_export`
      command stream), written to a file. Rows/s and peak RSS.
  (2) CSV export, likewise.
  (3) verify of the JSON Lines file with `changegate_audit.verify.verify_file`
      (the offline verifier's Python API; `--from-start` and the checkpoint
      public key pinned, as an auditor would run it). Rows/s and peak RSS.

References, measured in the same run over the same rows:
  - DB read floor: `AuditEvent.objects.order_by("seq").values_list(<every
    column>).iterator(chunk_size=2000)`, iterated and discarded (the rows the
    export reads, as the ORM hands them over, and nothing else). Below it, for
    information, the same SELECT on Django's chunked (server-side on
    PostgreSQL) cursor without the ORM's conversions.
  - hashing floor: a loop over the JSON Lines file that only `json.loads` each
    line and SHA-256s it. Below it, for information, `json.loads` + the
    canonical re-serialization + SHA-256 (what recomputing a hash must do).
  - "interpreter + imports alone": a child that sets up Django (or, for the
    verifier, imports it) and reads nothing.

ratio = ours / reference (time or memory; below 1.00x ours is faster or smaller).
Default database: a SQLite file in a temporary directory; --database-url (e.g. a
scratch PostgreSQL database) is migrated and written to: the chain is extended
until it holds N events (append-only, nothing is ever deleted).

This is a benchmark: it prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import hashlib
import io
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.stats import interleaved, spread, summary, target

REPO_ROOT = Path(__file__).resolve().parent.parent
BATCH = 5000  # events per bulk_create (and per transaction)
TARGET_ROWS_PER_S = 50_000  # issue 6
TARGET_PEAK_MB = 200  # issue 6
QUICK_EVENTS = 40_000  # --quick: generation about 10-14 s of its half minute
EXTRA: dict[str, Any] = {}  # more figures a child reports (time to the first chunk)
KEY_FILE = "checkpoint-key.raw"  # the throwaway signing key (raw 32 bytes), in the work directory
PUB_FILE = "checkpoint-key.pub"  # its public key, base64 (what an auditor passes as --pubkey)


# ---------------------------------------------------------------------------
# Environment (before django.setup())


def configure_environment(database_url: str | None, workdir: Path) -> str:
    """Settings for this process and the children (they inherit os.environ)."""
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'audit-bench.sqlite3'}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
    os.environ["DJANGO_DEBUG"] = "false"  # no query log: production-like, and constant memory
    os.environ.setdefault("CHANGEGATE_VAR_DIR", str(workdir))
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    return os.environ["DATABASE_URL"]


def peak_rss_kib() -> int:
    """This process's peak RSS in KiB: VmHWM on Linux (ru_maxrss after fork+exec
    still carries the parent's RSS), ru_maxrss elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for row in status:
                if row.startswith("VmHWM:"):
                    return int(row.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# ---------------------------------------------------------------------------
# Generation


def payload_for(i: int) -> dict[str, Any]:
    """A change_created-like payload (see changes.services.change_create): the
    request, its 2-step plan, the plan summary. About 630 bytes of compact JSON."""
    name = f"www-{i % 9973}"
    old, new = f"198.51.100.{i % 250 + 1}", f"192.0.2.{i % 250 + 1}"
    plan = {
        "zone": "example.com.",
        "steps": [
            {"name": f"{name}.example.com.", "type": "A", "before": {"ttl": 300, "rdatas": [old]},
             "after": {"ttl": 300, "rdatas": [new]}},
            {"name": f"old-{name}.example.com.", "type": "A", "before": {"ttl": 300, "rdatas": [old]},
             "after": None},
        ],
        "guards": [],
    }
    fingerprint = hashlib.sha256(json.dumps(plan, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return {"title": f"Move {name}", "reason": f"OPS-{i}: new LB",
            "items": [{"op": "upsert", "name": name, "type": "A", "ttl": 300, "records": [new]},
                      {"op": "delete", "name": f"old-{name}", "type": "A"}],
            "health_checks": [], "allow_apex": False, "plan": plan,
            "fingerprint": fingerprint, "steps": 2, "risk_flags": []}


class Generator:
    """Appends valid hash-chained events (and signed checkpoints) to the chain."""

    def __init__(self, workdir: Path, checkpoint_every: int) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from django.contrib.auth import get_user_model

        from changes.models import ChangeRequest, Target

        self.checkpoint_every = checkpoint_every
        key_path = workdir / KEY_FILE
        if key_path.exists():  # a reused --database-url within one work directory: keep the key
            self.key = Ed25519PrivateKey.from_private_bytes(key_path.read_bytes())
        else:
            self.key = Ed25519PrivateKey.generate()
            key_path.write_bytes(self.key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                        serialization.NoEncryption()))
        self.raw_public = self.key.public_key().public_bytes(serialization.Encoding.Raw,
                                                             serialization.PublicFormat.Raw)
        (workdir / PUB_FILE).write_text(base64.b64encode(self.raw_public).decode() + "\n")
        self.key_id = hashlib.sha256(self.raw_public).hexdigest()[:16]
        self.public_b64 = base64.b64encode(self.raw_public).decode()

        run = os.urandom(3).hex()  # names unique to this run (a reused database)
        users = get_user_model()
        self.users = [users.objects.create_user(username=f"bench-{run}-{n}", password=None) for n in ("ann", "bob")]
        self.target = Target.objects.create(name=f"bench-{run}.example.com", config={"zone": "example.com."})
        self.changes = ChangeRequest.objects.bulk_create(
            ChangeRequest(target=self.target, author=self.users[k % 2], title=f"change {k}", reason="bench")
            for k in range(100)
        )
        self.hash_seconds = 0.0  # building the events and computing their hashes
        self.insert_seconds = 0.0  # bulk_create and the head update
        self.checkpoints = 0

    def extend(self, total: int) -> int:
        """Append events until the chain holds `total`; return how many were added."""
        from django.db import transaction

        from changes.models import AuditChainHead, AuditCheckpoint, AuditEvent, checkpoint_message

        head, _ = AuditChainHead.objects.get_or_create(id=1)
        seq, prev_hash = head.seq, head.hash
        added = 0
        # Spaced 50 ms apart, ending about now (microseconds, like timezone.now()).
        base = datetime.now(UTC) - timedelta(milliseconds=50 * total)
        while seq < total:
            start = time.perf_counter()
            events, checkpoints = [], []
            for s in range(seq + 1, min(total, seq + BATCH) + 1):
                user = self.users[s % 2]
                change = self.changes[s % len(self.changes)]
                event = AuditEvent(
                    seq=s, created_at=base + timedelta(microseconds=50_000 * s + s % 997),
                    actor=user, actor_username=user.username, origin="api",
                    client_ip=f"192.0.2.{s % 250 + 1}", user_agent="changegate-cli/0.1 python-httpx/0.28.1",
                    action="change_created", target=self.target, target_name=self.target.name,
                    change=change, outcome="draft", payload=payload_for(s), prev_hash=prev_hash,
                )
                canonical = event.canonical()  # what audit_record does
                event.canonical_text = canonical.decode("ascii")
                event.hash = hashlib.sha256(canonical).hexdigest()
                prev_hash = event.hash
                events.append(event)
                if self.checkpoint_every and s % self.checkpoint_every == 0:
                    created = event.created_at.astimezone(UTC)
                    signature = self.key.sign(checkpoint_message(seq=s, head_hash=event.hash,
                                                                 created_at=created.isoformat()))
                    checkpoints.append(AuditCheckpoint(
                        seq=s, head_hash=event.hash, created_at=created, key_id=self.key_id,
                        signature=base64.b64encode(signature).decode(), public_key=self.public_b64))
            middle = time.perf_counter()
            with transaction.atomic():
                AuditEvent.objects.bulk_create(events, batch_size=BATCH)
                if checkpoints:
                    AuditCheckpoint.objects.bulk_create(checkpoints)
                AuditChainHead.objects.filter(id=1).update(seq=events[-1].seq, hash=events[-1].hash)
            end = time.perf_counter()
            self.hash_seconds += middle - start
            self.insert_seconds += end - middle
            self.checkpoints += len(checkpoints)
            seq = events[-1].seq
            added += len(events)
        return added


# ---------------------------------------------------------------------------
# Children: one measurement each, so every peak RSS is its own


def child_main(kind: str, path: str, profile: bool) -> None:
    if kind in ("verify", "hash_floor", "canonical_floor", "verify_baseline"):
        measure = child_verify_side(kind, path)
    else:
        import django

        django.setup()
        measure = child_django_side(kind, path)
    baseline = peak_rss_kib()
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    cpu = time.process_time()
    if profiler is not None:
        profiler.enable()
    rows = measure()
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    peak = peak_rss_kib()
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(22)
        print(out.getvalue(), file=sys.stderr)
    print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_kib": peak, "baseline_kib": baseline, "rows": rows,
                      **EXTRA}))


def child_django_side(kind: str, path: str) -> Any:
    from django.db import connection

    from audit.export import export_query, export_stream
    from changes.models import AuditEvent

    names = [field.attname for field in AuditEvent._meta.concrete_fields]

    def export() -> int:
        start = time.perf_counter()
        query = export_query(user=None, params={"format": kind})
        chunks = export_stream(user=None, query=query)
        with open(path, "wb") as out:  # as the audit_export command writes --output (out.writelines)
            for chunk in chunks:
                if "first_chunk" not in EXTRA:
                    EXTRA["first_chunk"] = time.perf_counter() - start
                out.write(chunk)
        return -1  # the row count comes from the DB floor (counting here would add to the time)

    def db_floor() -> int:
        rows = 0
        for _values in AuditEvent.objects.order_by("seq").values_list(*names).iterator(chunk_size=2000):
            rows += 1
        return rows

    def cursor_floor() -> int:
        sql, params = AuditEvent.objects.order_by("seq").values_list(*names).query.sql_with_params()
        rows = 0
        with connection.chunked_cursor() as cursor:  # what iterator() uses: server-side on PostgreSQL
            cursor.execute(sql, params)
            while batch := cursor.fetchmany(2000):
                rows += len(batch)
        return rows

    def baseline() -> int:
        AuditEvent.objects.exists()  # connected, nothing read
        return 0

    return {"jsonl": export, "csv": export, "db_floor": db_floor, "cursor_floor": cursor_floor,
            "django_baseline": baseline}[kind]


def child_verify_side(kind: str, path: str) -> Any:
    """No Django here: the verifier runs without it."""
    from changegate_audit.verify import canonical, parse_public_key, verify_file

    pub_path = Path(path).parent / PUB_FILE

    def verify() -> int:
        result = verify_file(path, pubkey=parse_public_key(pub_path.read_bytes()), from_start=True)
        if not result.ok:
            raise SystemExit(f"verify failed: {result.failure}")
        return result.events

    def hash_floor() -> int:
        rows = 0
        sha256, loads = hashlib.sha256, json.loads
        with open(path, "rb", buffering=1 << 20) as handle:
            for raw in handle:
                loads(raw)
                sha256(raw).hexdigest()
                rows += 1
        return rows

    def canonical_floor() -> int:
        rows = 0
        sha256, loads = hashlib.sha256, json.loads
        with open(path, "rb", buffering=1 << 20) as handle:
            for raw in handle:
                obj = loads(raw)
                sha256(canonical({k: v for k, v in obj.items() if k != "type" and k != "hash"})).hexdigest()
                rows += 1
        return rows

    return {"verify": verify, "hash_floor": hash_floor, "canonical_floor": canonical_floor,
            "verify_baseline": lambda: 0}[kind]


def run_child(kind: str, path: Path, profile: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.audit_bench", "--child", kind, "--file", str(path)]
    if profile:
        cmd.append("--profile")
    out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child {kind} failed:\n{out.stderr[-3000:]}")
    if profile:
        print(f"--- cProfile of child {kind} (sorted by own time) ---\n{out.stderr}", flush=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(kind: str, path: Path, repeat: int, profile: bool = False) -> dict[str, Any]:
    """Median time (and peak) over `repeat` children (plus one profiled child, not counted)."""
    return summarize([run_child(kind, path) for _ in range(repeat)], kind, path, profile)


def measure_runs(kind: str, ref: str, path: Path, runs: int) -> tuple[list[dict], list[dict]]:
    """Ours and its reference, one child each per run, the order rotating per run
    (`stats.interleaved`), so background load on this shared machine lands on both
    sides alike; every run is kept."""
    got: dict[str, list[dict[str, Any]]] = {kind: [], ref: []}

    def child(name: str) -> Any:
        def run() -> float:
            result = run_child(name, path)
            got[name].append(result)
            return result["seconds"]  # measured inside the child: no interpreter start-up
        return run

    interleaved({kind: child(kind), ref: child(ref)}, runs)
    return got[kind], got[ref]


def summarize(runs: list[dict[str, Any]], kind: str, path: Path, profile: bool = False) -> dict[str, Any]:
    if profile:  # an extra child: the profiler's overhead stays out of the figures
        run_child(kind, path, profile=True)
    return {"runs": [r["seconds"] for r in runs],
            "seconds": statistics.median(r["seconds"] for r in runs),
            "cpu": statistics.median(r["cpu"] for r in runs),
            "peak_kib": statistics.median(r["peak_kib"] for r in runs),
            "baseline_kib": statistics.median(r["baseline_kib"] for r in runs),
            "rows": runs[0]["rows"],
            "first_chunk": statistics.median(r.get("first_chunk", 0.0) for r in runs)}


# ---------------------------------------------------------------------------
# Printing


def line(label: str, ours: str, ref_label: str = "", ref: str = "", ratio: float | None = None,
         extra: str = "") -> str:
    row = f"  {label:<30}{ours}"
    if ref_label:
        row += f"   ({ref_label}: {ref.strip()})"
    if ratio is not None:
        row += f"   ratio {ratio:.2f}x"
    return row + extra


def rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:9,.0f} rows/s"


def secs(seconds: float) -> str:
    return f"{seconds:6.2f} s"


def mib(kib: float) -> str:
    return f"{kib / 1024:7.1f} MiB"


def verdict(rows_per_s: float, peak_kib: float) -> str:
    fast = "met" if rows_per_s > TARGET_ROWS_PER_S else "MISSED"
    small = "met" if peak_kib / 1024 < TARGET_PEAK_MB else "MISSED"
    return f"   [> {TARGET_ROWS_PER_S:,} rows/s: {fast}; < {TARGET_PEAK_MB} MB: {small}]"


def bench_size(events: int, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from django.db import connection

    connection.close()  # the children open their own
    jsonl, csv_file = workdir / "export.jsonl", workdir / "export.csv"
    r = args.repeat
    if args.only == "csv":  # the CSV export and its reference alone, interleaved per run
        return bench_csv(events, csv_file, args)
    exp = {"jsonl": measure("jsonl", jsonl, r, args.profile), "csv": measure("csv", csv_file, r, args.profile)}
    db = measure("db_floor", jsonl, r)
    cur = measure("cursor_floor", jsonl, r)
    dj_base = measure("django_baseline", jsonl, 1)
    ver = measure("verify", jsonl, r, args.profile)
    hfloor = measure("hash_floor", jsonl, r)
    cfloor = measure("canonical_floor", jsonl, r)
    v_base = measure("verify_baseline", jsonl, 1)
    rows = db["rows"]
    for name, got in (("verify", ver["rows"]), ("raw cursor", cur["rows"])):
        if got != rows:
            print(f"  NOTE: {name} saw {got} rows, the export {rows}")
    lines_in_file = hfloor["rows"]
    print(f"events={events:,}  (JSON Lines {jsonl.stat().st_size / 1e6:,.0f} MB, {lines_in_file:,} lines incl. "
          f"checkpoints; CSV {csv_file.stat().st_size / 1e6:,.0f} MB)")
    for fmt, label in (("jsonl", "(1) export JSON Lines"), ("csv", "(2) export CSV")):
        m = exp[fmt]
        print(line(f"{label}", rate(rows, m["seconds"]), "DB read floor", rate(rows, db["seconds"]),
                   m["seconds"] / db["seconds"],
                   f"   [{m['seconds']:.1f} s, CPU {m['cpu']:.1f} s, first chunk after {m['first_chunk']:.2f} s]"
                   + verdict(rows / m["seconds"], m["peak_kib"])))
        print(line("    peak RSS", mib(m["peak_kib"]), "DB read floor", mib(db["peak_kib"]),
                   m["peak_kib"] / db["peak_kib"], f"   [Django + imports alone: {mib(dj_base['peak_kib']).strip()}]"))
    print(line("    DB read floor", rate(rows, db["seconds"]), "raw chunked cursor, no ORM conversions",
               rate(rows, cur["seconds"]), db["seconds"] / cur["seconds"]))
    print(line("(3) verify JSON Lines", rate(ver["rows"], ver["seconds"]), "json.loads + sha256 floor",
               rate(lines_in_file, hfloor["seconds"]), ver["seconds"] / hfloor["seconds"],
               f"   [{ver['seconds']:.1f} s]"))
    print(line("    vs recompute floor", rate(ver["rows"], ver["seconds"]), "json.loads + canonical dumps + sha256",
               rate(lines_in_file, cfloor["seconds"]), ver["seconds"] / cfloor["seconds"]))
    print(line("    peak RSS", mib(ver["peak_kib"]), "json.loads + sha256 floor", mib(hfloor["peak_kib"]),
               ver["peak_kib"] / hfloor["peak_kib"], f"   [interpreter + verifier imports alone: "
                                                        f"{mib(v_base['peak_kib']).strip()}]"))
    sys.stdout.flush()
    return {"export": exp, "db": db, "verify": ver}


def bench_csv(events: int, csv_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Issue 14, finding 6: the CSV export against the DB read floor, --runs runs."""
    ours, floor = measure_runs("csv", "db_floor", csv_file, args.runs)
    if args.profile:  # an extra child: the profiler's overhead stays out of the figures
        run_child("csv", csv_file, profile=True)
    rows = floor[0]["rows"]
    print(f"events={events:,}  (CSV {csv_file.stat().st_size / 1e6:,.0f} MB; {args.runs} runs, ours and the DB read "
          f"floor interleaved, the order rotating per run)")
    for i, (mine, ref) in enumerate(zip(ours, floor, strict=True), 1):
        per_s = rows / mine["seconds"]
        print(f"    run {i}: {rate(rows, mine['seconds'])} [CPU {mine['cpu']:.1f} s, "
              f"peak {mib(mine['peak_kib']).strip()}]   (DB read floor: {rate(rows, ref['seconds']).strip()}, "
              f"peak {mib(ref['peak_kib']).strip()})"
              f"   ratio {mine['seconds'] / ref['seconds']:.2f}x")
        target("csv-export-rows-per-s", value=per_s, unit="rows/s", goal=f">= {TARGET_ROWS_PER_S}",
               met=per_s >= TARGET_ROWS_PER_S, run=i, events=events)
        target("csv-export-peak-rss", value=mine["peak_kib"] / 1024, unit="MiB", goal="flat", met=None, run=i,
               events=events)
    for label, got in (("(2) export CSV", ours), ("    DB read floor", floor)):
        seconds = summary([r["seconds"] for r in got])
        print(f"  {label:<22} median {rows / seconds['median']:9,.0f} rows/s, p95 {rows / seconds['p95']:9,.0f} rows/s"
              f" (slowest run), spread {spread([rows / r['seconds'] / 1000 for r in got])} k rows/s; "
              f"peak RSS {spread([r['peak_kib'] / 1024 for r in got])} MiB")
    ratios = [m["seconds"] / f["seconds"] for m, f in zip(ours, floor, strict=True)]
    print(f"  ratio ours / floor (time): {spread(ratios)}x   [> {TARGET_ROWS_PER_S:,} rows/s in "
          f"{sum(rows / r['seconds'] >= TARGET_ROWS_PER_S for r in ours)} of {len(ours)} runs]")
    sys.stdout.flush()
    return {"export": {"csv": ours}, "db": floor}


def describe_db() -> str:
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"SQLite {connection.Database.sqlite_version} ({s['NAME']})"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    return f"{connection.vendor} {version} {s['NAME']}@{s['HOST'] or 'localhost'}:{s['PORT'] or ''}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", default="100000,1000000",
                        help="comma-separated chain sizes; the chain is extended from one to the next")
    parser.add_argument("--database-url", help="a scratch database to use instead of a temporary SQLite file")
    parser.add_argument("--checkpoint-every", type=int, default=1000,
                        help="a signed checkpoint every N events (0: none); 1000 is the setting's default")
    parser.add_argument("--repeat", type=int, default=1, help="children per measurement (the median is shown)")
    parser.add_argument("--profile", action="store_true", help="cProfile the export and verify children")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (database, files)")
    parser.add_argument("--workdir", help="use (and keep) this directory: a second run reuses its chain and key")
    parser.add_argument("--only", choices=["csv"], help="csv: the CSV export and its DB read floor, interleaved")
    parser.add_argument("--runs", type=int, default=3,
                        help="--only csv: runs (one child of ours and one of the floor each)")
    parser.add_argument("--quick", action="store_true",
                        help=f"--only csv at {QUICK_EVENTS:,} events in a temporary directory (about half a minute)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child, args.file, args.profile)
        return
    if args.quick:
        args.only, args.events = "csv", str(QUICK_EVENTS)
        print(f"quick: {QUICK_EVENTS:,} events, generated here (the target's size is 1,000,000: rows/s is a per-row "
              f"cost and the peak RSS does not grow with the size; --events 1000000 --only csv for the full figure)",
              flush=True)
    sizes = sorted(int(s.replace("_", "")) for s in args.events.split(",") if s.strip())
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="changegate-audit-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        configure_environment(args.database_url, workdir)
        import django

        django.setup()
        from django.core.management import call_command

        from changes.models import AuditChainHead

        call_command("migrate", verbosity=0)
        generator = Generator(workdir, args.checkpoint_every)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; database {describe_db()}; "
              f"checkpoint every {args.checkpoint_every or 'never'}; ratio = ours / reference", flush=True)
        for size in sizes:
            held = AuditChainHead.objects.get_or_create(id=1)[0].seq
            if held > size and args.workdir and size == sizes[-1]:  # a reused --workdir: the chain as it stands
                print(f"events={size:,}: the reused chain holds {held:,} events; measuring them all")
            elif held > size:
                print(f"events={size:,}: skipped, the database already holds {held:,} events")
                continue
            start = time.perf_counter()
            added = generator.extend(size)
            seconds = time.perf_counter() - start
            if added:
                print(f"generated {added:,} events (chain now {size:,}) in {seconds:.1f} s = "
                      f"{added / seconds:,.0f} events/s   [build + hash {generator.hash_seconds:.1f} s, "
                      f"bulk_create {generator.insert_seconds:.1f} s; "
                      f"{generator.checkpoints:,} checkpoints]", flush=True)
                generator.hash_seconds = generator.insert_seconds = 0.0
            bench_size(size, workdir, args)
    finally:
        if args.keep or args.workdir:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
