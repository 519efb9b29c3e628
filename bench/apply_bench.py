"""Apply pipeline benchmark: a real Celery worker, a real redis-server, a real named
(see bench/README.md, section "Apply pipeline").

    .venv/bin/python -m bench.apply_bench [--changes 100] [--runs 3] [--burst 50] [--zones 10]
                                          [--workers 2] [--pool solo|prefork] [--samples 5] [--quick]

Everything is throwaway: a SQLite file in a temporary directory (or the database
of an existing DATABASE_URL, e.g. PostgreSQL: every name used is unique to the
run), a `LocalNamed` serving bench0.test .. bench<zones-1>.test and rollback.test
on a free loopback port, a redis-server on a free loopback port, and `celery -A
config worker` child processes. Changes go through the services (change_create,
change_submit, change_approve) exactly as the API makes them. Figures:

  (1) approval -> applied: --runs runs of --changes sequential 1-RRset upserts
      (bake 0), each timed from the commit of the approving transaction to the
      moment this process sees the change `applied` in the database (polled every
      --poll s); p50, p95, max per run. Reference, interleaved per change (the
      order flipping per round): the DNS work of one execution done in this
      process (adapter built, re-plan read, apply, one verify round). Once, after
      the runs: `execution_run` called in this process (the whole pipeline
      without Celery and Redis), wall and CPU; the worker's CPU per change; a bare
      Celery round trip (a no-op task published, fetched and acked). Plus where
      the time goes, from the execution's own timestamps.
  (2) failed check -> zone restored: --samples changes with a declared tcp check
      to a closed port (bake 1 s, so rounds every 0.2 s, threshold 2). Detection
      is the stored time of the last failing round; restored is when the
      execution finished rolled_back, and when the zone answers `before` again
      (polled over DNS). Reference: the inverse apply + verify in this process.
  (3) burst: --burst changes on --zones zones (round robin) approved in one
      transaction; time until all are applied, throughput, per-change latency
      (from the workers' finished_at), CPU used by each process group;
      1 worker, then --workers workers.

This is a benchmark: it prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.stats import interleaved, spread
from bench.stats import percentile as stats_percentile
from bench.stats import target as bench_target

REPO_ROOT = Path(__file__).resolve().parent.parent
LAT_ZONE_INDEX = 0
RB_ZONE = "rollback.test"
WARMUP = 3  # sequential changes before (1) is measured: imports, first connections
NEW_VALUE = "192.0.2.1"


# ---------------------------------------------------------------------------
# Environment (before django.setup())


def configure_environment(tmpdir: Path) -> str:
    """Settings for this process and the workers it starts (they inherit os.environ)."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{tmpdir / 'bench.sqlite3'}")
    os.environ["CHANGEGATE_LEASE_SECONDS"] = "10"
    os.environ["CHANGEGATE_UNCLAIMED_AFTER_SECONDS"] = "5"
    os.environ.setdefault("DJANGO_DEBUG", "false")  # no query log: production-like
    os.environ.setdefault("CHANGEGATE_VAR_DIR", str(tmpdir))
    os.environ.setdefault("CHANGEGATE_KEY_DIR", str(tmpdir / "keys"))  # the gateway reads keys only from here
    os.environ.pop("CELERY_BROKER_URL", None)  # the broker is the bench's own redis
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # this process; the workers log at INFO to their files
    return os.environ["DATABASE_URL"]


def zone_records(names: Iterable[str]) -> str:
    return "".join(f"{name} 300 IN A 10.1.{i >> 8 & 255}.{i & 255}\n" for i, name in enumerate(names))


# ---------------------------------------------------------------------------
# Statistics and printing


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (p in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def line(label: str, ours: str, ref_label: str = "", ref: str = "", ratio: float | None = None) -> str:
    row = f"  {label:<40}{ours}"
    if ref_label:
        row += f"   ({ref_label}: {ref.strip()})"
    if ratio is not None:
        row += f"   ratio {ratio:.2f}x"
    return row


def ts(value: datetime | str | None) -> float | None:
    """A stored timestamp (datetime or ISO string) as epoch seconds."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.timestamp()


# ---------------------------------------------------------------------------
# Processes


def bench_worker_class() -> type:
    from tests.processes import ROOT, CeleryWorker

    class BenchWorker(CeleryWorker):
        """tests.processes.CeleryWorker with a choice of pool (the test class is solo only)."""

        def __init__(self, broker_url: str, *, name: str, env: dict[str, str], pool: str = "solo",
                      concurrency: int = 1) -> None:
            super().__init__(broker_url, name=name, env=env)
            self.pool, self.concurrency = pool, concurrency

        def start(self) -> BenchWorker:
            if self.pool == "solo" and self.concurrency == 1:
                super().start()
                return self
            env = {**os.environ, "CELERY_BROKER_URL": self.broker_url, **self.extra_env}
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "config", "worker", f"--pool={self.pool}",
                     f"--concurrency={self.concurrency}", "--without-gossip", "--without-mingle",
                     "--without-heartbeat", "-l", "info", "-n", f"{self.name}@%h"],
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            return self

    return BenchWorker


class Pipeline:
    """The running pieces and the people and targets set up through the services."""

    def __init__(self, args: argparse.Namespace, db_url: str) -> None:
        self.args, self.db_url = args, db_url
        self.run = uuid.uuid4().hex[:6]  # names unique to this run (a reused PostgreSQL database)
        self.named: Any = None
        self.redis: Any = None
        self.workers: list[Any] = []
        self.targets: list[Any] = []
        self.rb_target: Any = None
        self.sweeps: list[int] = []  # executions re-published by the sweep, per phase

    # -- processes -------------------------------------------------------------

    def start_services(self) -> None:
        from config.celery_app import app
        from dns_adapters.local_named import LocalNamed, default_zone_text
        from tests.processes import RedisServer, point_app_at

        if shutil.which("redis-server") is None:
            raise SystemExit("redis-server not installed (apt-get install redis-server)")
        zones = {zone: default_zone_text(zone, records) for zone, records in self.zone_records().items()}
        self.named = LocalNamed(zones, start_timeout=120, key_dir=os.environ["CHANGEGATE_KEY_DIR"]).start()
        self.redis = RedisServer().start()
        point_app_at(app, self.redis.url)

    def zone_records(self) -> dict[str, str]:
        """Zone -> its records (zone-file lines); a subclass serves other zones."""
        records = zone_records(self.zone_names())
        return {**{self.zone(i): records for i in range(self.args.zones)}, RB_ZONE: records}

    def zone(self, i: int) -> str:
        return f"bench{i}.test"

    def zone_names(self) -> list[str]:
        a = self.args
        return ([f"lat-{i}" for i in range(WARMUP + a.changes * a.runs)]
                + [f"b{r}-{i}" for r in range(2) for i in range(a.burst)]
                + [f"rb-{i}" for i in range(a.samples)] + [f"inp-{i}" for i in range(21)] + ["ref-0"])

    def start_workers(self, count: int, *, pool: str = "solo") -> list[Any]:
        """`count` solo worker processes, or one prefork worker with `count` children."""
        from config.celery_app import app

        worker_class = bench_worker_class()
        env = {"DJANGO_SETTINGS_MODULE": "config.settings.local", "DATABASE_URL": self.db_url, "LOG_LEVEL": "INFO"}
        started = []
        specs = [(1, "solo")] * count if pool == "solo" else [(count, "prefork")]
        for concurrency, kind in specs:
            name = f"w{len(self.workers) + 1}x{self.run}"
            worker = worker_class(self.redis.url, name=name, env=env, pool=kind, concurrency=concurrency).start()
            self.workers.append(worker)
            started.append(worker)
        for worker in started:
            worker.wait_ready(app, timeout=60)
        return started

    def stop_workers(self, workers: Iterable[Any]) -> None:
        for worker in list(workers):
            try:
                worker.stop()  # SIGTERM to its process group, SIGKILL after 15 s
            except (OSError, subprocess.SubprocessError) as exc:  # keep stopping the rest
                print(f"  (could not stop worker {worker.name}: {exc})", file=sys.stderr)
            if self.args.keep:
                print(f"kept worker log {worker.log}", file=sys.stderr)
            else:
                worker.log.unlink(missing_ok=True)
            self.workers.remove(worker)

    def stop_all(self) -> None:
        self.stop_workers(self.workers)
        if self.redis is not None:
            self.redis.stop()
            shutil.rmtree(self.redis.dir, ignore_errors=True)
        if self.named is not None:
            self.named.stop()

    # -- people and targets ------------------------------------------------------

    def setup_people(self) -> None:
        from django.contrib.auth import get_user_model

        users = get_user_model().objects
        self.author = users.create_user(username=f"bench-author-{self.run}", password=None)
        self.reviewer = users.create_user(username=f"bench-reviewer-{self.run}", password=None)

    def register(self, zone: str, bake: int, *, timeout: float = 3) -> Any:
        """A target for `zone` on the bench's named, the author and reviewer given their roles on it."""
        from guardian.shortcuts import assign_perm

        from approvals.policy import ROLES
        from changes.services import target_register

        target = target_register(
            actor=None, name=f"{zone}-{self.run}",
            config={"zone": zone, "primary": self.named.primary, "tsig_key_file": str(self.named.key_file),
                    "timeout": timeout},
            bake_seconds=bake, bake_max_seconds=0,  # the bench's bake is `bake`, not the TTLs (300 s)
        )
        for user, role in ((self.author, "engineer"), (self.reviewer, "reviewer")):
            for perm in ROLES[role]:
                assign_perm(f"changes.{perm}", user, target)
        return target

    def setup_data(self) -> None:
        self.setup_people()
        self.targets = [self.register(self.zone(i), 0) for i in range(self.args.zones)]
        self.rb_target = self.register(RB_ZONE, 1)

    # -- changes -----------------------------------------------------------------

    def propose(self, target: Any, name: str, *, health_checks: list[dict[str, Any]] | None = None,
                value: str = NEW_VALUE) -> Any:
        from changes.services import change_create, change_submit

        items = [{"op": "upsert", "name": name, "type": "A", "ttl": 300, "records": [value]}]
        change = change_create(actor=self.author, target=target, title=f"bench {name}", reason="benchmark",
                               items=items, health_checks=health_checks)
        return change_submit(actor=self.author, change=change)

    def approve(self, changes: Sequence[Any]) -> tuple[float, float]:
        """Approve `changes` in one transaction; returns (epoch, perf_counter) of its
        commit (the first on_commit callback, before the wake-ups are published)."""
        from django.db import transaction

        from approvals.policy import change_approve

        mark: dict[str, float] = {}

        def stamp() -> None:
            mark["perf"], mark["wall"] = time.perf_counter(), time.time()

        with transaction.atomic():
            transaction.on_commit(stamp)  # registered first: runs first after COMMIT
            for change in changes:
                change_approve(actor=self.reviewer, change=change, fingerprint=change.fingerprint)
        return mark["wall"], mark["perf"]

    def wait_ended(self, pks: Iterable[int], *, timeout: float = 120,
                   on_poll: Callable[[], None] | None = None) -> dict[int, tuple[str, float]]:
        """Poll until every change is in an end state: {pk: (state, perf_counter seen)}.
        Runs the sweep every CHANGEGATE_SWEEP_SECONDS meanwhile, as beat would."""
        from changes.models import TERMINAL, ChangeRequest
        from pipeline.execution import execution_sweep

        ends = [*TERMINAL, ChangeRequest.State.DRIFTED]
        pending, seen = set(pks), {}
        start = last_sweep = time.perf_counter()
        sweep_every = float(os.environ.get("CHANGEGATE_SWEEP_SECONDS", "10"))
        while pending:
            rows = list(ChangeRequest.objects.filter(pk__in=pending, state__in=ends).values_list("pk", "state"))
            now = time.perf_counter()
            for pk, state in rows:
                seen[pk] = (state, now)
                pending.discard(pk)
            if not pending:
                break
            if on_poll is not None:
                on_poll()
            if now - start > timeout:
                raise SystemExit(f"changes {sorted(pending)} did not end within {timeout:g}s; worker logs: "
                                 + ", ".join(str(w.log) for w in self.workers))
            if now - last_sweep >= sweep_every:
                self.sweeps.append(len(execution_sweep()))
                last_sweep = now
            time.sleep(self.args.poll)  # the measurement's poll interval
        return seen


# ---------------------------------------------------------------------------
# References measured in this process


class DnsWork:
    """The DNS part of one execution done in this process, one call at a time (so it
    can be interleaved with the end-to-end changes): adapter built, re-plan read,
    apply, one verify round, close, for a 1-RRset plan; the plan and its inverse
    alternate so every apply changes the zone. Each call returns the whole and
    appends `adapter.apply` alone to `applies`."""

    def __init__(self, target: Any, name: str) -> None:
        from changes.adapters import adapter_for

        self.target, self.applies, self.calls = target, [], 0
        adapter = adapter_for(target)
        try:
            items = adapter.validate_items([{"op": "upsert", "name": name, "type": "A", "ttl": 300,
                                             "records": ["192.0.2.250"]}])
            plan = adapter.plan(items)
        finally:
            adapter.close()
        self.plans = [plan, plan.inverse()]

    def __call__(self) -> float:
        from changes.adapters import adapter_for

        current = self.plans[self.calls % 2]
        self.calls += 1
        start = time.perf_counter()
        adapter = adapter_for(self.target)
        try:
            live = adapter.read(current.keys())
            assert all(live.get(s.key) == s.before for s in current.steps), live
            t_apply = time.perf_counter()
            result = adapter.apply(current)
            self.applies.append(time.perf_counter() - t_apply)
            assert result.applied, result
            assert adapter.verify(current).ok
        finally:
            adapter.close()
        return time.perf_counter() - start


def in_process_runs(p: Pipeline, target: Any, count: int) -> tuple[float, float]:
    """Median wall and CPU time of `execution_run` called in this process for
    freshly approved 1-RRset changes (bake 0): the pipeline's own work (database
    and DNS) without Celery and Redis. The wake-up is not published meanwhile, so
    the worker never sees these executions."""
    from changes.models import ChangeRequest, Execution
    from pipeline import execution as pipeline_module
    from pipeline.run import execution_run

    walls, cpus = [], []
    publish = pipeline_module.publish  # what the approval's on_commit calls
    pipeline_module.publish = lambda *args, **kwargs: None
    try:
        for i in range(count + 1):
            change = p.propose(target, f"inp-{i}")
            p.approve([change])
            execution_id = Execution.objects.values_list("pk", flat=True).get(change_id=change.pk)
            wall, cpu = time.perf_counter(), time.process_time()
            state = execution_run(execution_id=execution_id, worker=f"bench-{p.run}")
            if i:  # the first one warms up
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
            if state != ChangeRequest.State.APPLIED:
                raise SystemExit(f"in-process reference: change #{change.pk} ended {state}")
    finally:
        pipeline_module.publish = publish
    return statistics.median(walls), statistics.median(cpus)


def celery_round_trip(redis_url: str, repeat: int = 20) -> float | None:
    """Median time for a no-op task (Celery's built-in `celery.accumulate`) from
    publish until the worker acked it (acks_late: the message leaves redis's
    `unacked` hash only after the task ran). None if it cannot be observed."""
    import redis

    from config.celery_app import app

    client = redis.Redis.from_url(redis_url)
    times = []
    for _ in range(repeat + 2):
        start = time.perf_counter()
        app.send_task("celery.accumulate", args=(1,), kwargs={})
        deadline = start + 10
        while client.llen("celery") or client.hlen("unacked"):
            if time.perf_counter() > deadline:
                return None
            time.sleep(0.0002)  # measurement poll
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])  # the first two warm the connections


# ---------------------------------------------------------------------------
# (1) approval -> applied


def bench_latency(p: Pipeline) -> None:
    """--runs runs of --changes sequential changes, each change interleaved with one
    in-process DNS work reference (the order flipping per round); then, once, the
    references that are not per change (execution_run in-process, bare Celery)."""
    from changes.models import ChangeRequest, Execution

    target = p.targets[LAT_ZONE_INDEX]
    n, runs = p.args.changes, p.args.runs
    names = iter(f"lat-{i}" for i in range(WARMUP + n * runs))
    all_latencies: list[float] = []
    breakdown: dict[str, list[float]] = {k: [] for k in PHASES}
    other: list[str] = []
    sweeps_before = len(p.sweeps)
    worker_pids = [w.process.pid for w in p.workers]
    dns = DnsWork(target, "ref-0")

    def one_change() -> float | None:
        change = p.propose(target, next(names))
        wall, perf = p.approve([change])
        (state, seen), = p.wait_ended([change.pk]).values()
        if state != ChangeRequest.State.APPLIED:
            other.append(f"#{change.pk} {state}")
            return float("nan")
        execution = Execution.objects.get(change_id=change.pk)
        for phase, seconds in phases(execution, wall, seen - perf).items():
            breakdown[phase].append(seconds)
        return seen - perf

    for _ in range(WARMUP):
        one_change(), dns()
    for values in breakdown.values():
        values.clear()
    dns.applies.clear()
    print(f"(1) approval -> applied, {runs} run(s) of {n} sequential 1-RRset changes, bake 0, 1 solo worker "
          f"(after {WARMUP} warm-up changes; poll {p.args.poll * 1000:g} ms), each change interleaved with one "
          "in-process DNS work reference")
    cpu_before = process_group_cpu(worker_pids)
    p50s = []
    for run in range(1, runs + 1):
        samples = interleaved({"e2e": one_change, "dns": dns}, n)
        latencies = [v for v in samples["e2e"] if v == v]  # NaN: not applied
        all_latencies += latencies
        dns_work = statistics.median(samples["dns"])
        p50 = stats_percentile(latencies, 50)
        p50s.append(p50)
        row = "  ".join(f"{label} {ms(stats_percentile(latencies, q)).strip()}"
                        for label, q in (("p50", 50), ("p95", 95), ("max", 100)))
        print(f"  run {run}: {row}   (DNS work in-process: median {ms(dns_work).strip()}, "
              f"p95 {ms(stats_percentile(samples['dns'], 95)).strip()})   p50 ratio {p50 / dns_work:.2f}x")
        # Context that is the same in every run only: bench.quick makes one row of it.
        bench_target("approval-to-applied-p50", value=p50 * 1000, unit="ms", goal="< 300 ms", met=p50 < 0.3,
                     run=run, changes=n)
    cpu_after = process_group_cpu(worker_pids)
    total = len(all_latencies)
    worker_cpu = sum(cpu_after[pid] - cpu_before[pid] for pid in worker_pids) / total if cpu_after and total else None
    rtt = celery_round_trip(p.redis.url, repeat=10 if p.args.quick else 20)
    inproc_wall, inproc_cpu = in_process_runs(p, target, 5 if p.args.quick else 20)

    if runs > 1:
        print(f"  p50 over {runs} runs, median (min-max): {spread([v * 1000 for v in p50s])} ms")
    p50 = percentile(all_latencies, 50)
    print(line("    all runs p50", ms(p50), "of which adapter.apply in the reference",
               ms(statistics.median(dns.applies))))
    print(line("    p50 vs the run in-process", ms(p50), "execution_run here, no Celery", ms(inproc_wall),
               p50 / inproc_wall) + f"   [of which CPU {inproc_cpu * 1000:.1f} ms]")
    if worker_cpu is not None:
        print(line("    worker CPU per change", ms(worker_cpu), "p50 latency", ms(p50), worker_cpu / p50))
    if rtt is not None:
        print(line("    p50 vs bare Celery", ms(p50), "no-op task publish->ack", ms(rtt), p50 / rtt))
    if other:
        print(f"  not applied: {', '.join(other)}")
    print("  where the time goes (median of each phase over all runs; from the execution's stored timestamps):")
    for phase, label in PHASES.items():
        values = breakdown[phase]
        if values:
            print(f"    {label:<58}{ms(statistics.median(values))}   p95 {ms(percentile(values, 95)).strip()}")
    swept = sum(p.sweeps[sweeps_before:])
    if swept:
        print(f"  (the sweep re-published {swept} execution(s) meanwhile)")


PHASES = {
    "queue": "commit -> task claims (publish, broker, worker pick-up)",
    "claim": "claim -> apply_started (claim txn, re-plan read, move)",
    "apply": "apply_started -> change_applied (UPDATE, move)",
    "verify": "change_applied -> change_verified (verify round, move)",
    "seen": "change_verified -> seen here (commit, poll)",
}


def phases(execution: Any, commit_wall: float, total: float) -> dict[str, float]:
    """Split one approval->applied latency by the execution's own timestamps:
    started_at (claim), then the `at` of its log entries (taken inside each
    transition's transaction)."""
    at = {entry["what"]: ts(entry["at"]) for entry in execution.log}
    started = ts(execution.started_at)
    points = [commit_wall, started, at.get("apply_started"), at.get("change_applied"), at.get("change_verified")]
    if any(point is None for point in points):
        return {}
    out = {name: b - a for name, a, b in zip(PHASES, points, points[1:])}
    out["seen"] = commit_wall + total - points[-1]
    return out


# ---------------------------------------------------------------------------
# (2) failed check -> zone restored


def dns_answer(port: int, qname: str) -> tuple[str, ...] | None:
    import dns.message
    import dns.query
    import dns.rdatatype

    response = dns.query.udp(dns.message.make_query(qname, dns.rdatatype.A), "127.0.0.1", port=port, timeout=1)
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.A:
            return tuple(sorted(r.to_text() for r in rrset))
    return None


def bench_rollback(p: Pipeline) -> None:
    from changes.models import ChangeRequest, CheckResult, Execution
    from dns_adapters.local_named import free_port

    target = p.rb_target
    rows: list[dict[str, float]] = []
    other: list[str] = []
    for i in range(p.args.samples):
        qname = f"rb-{i}.{RB_ZONE}."
        before = dns_answer(p.named.port, qname)
        closed = [{"type": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": 0.5}]
        change = p.propose(target, f"rb-{i}", health_checks=closed)
        watch: dict[str, float] = {}

        def poll_dns(qname: str = qname, before: Any = before, watch: dict[str, float] = watch) -> None:
            if "restored" in watch:
                return
            answer = dns_answer(p.named.port, qname)
            if "after" not in watch and answer == (NEW_VALUE,):
                watch["after"] = time.time()
            elif "after" in watch and answer == before:
                watch["restored"] = time.time()

        p.approve([change])
        (state, _), = p.wait_ended([change.pk], on_poll=poll_dns).values()
        while "after" in watch and "restored" not in watch:  # the last commit can precede named's answer
            poll_dns()
            time.sleep(p.args.poll)
        if state != ChangeRequest.State.ROLLED_BACK:
            other.append(f"#{change.pk} {state}")
            continue
        execution = Execution.objects.get(change_id=change.pk)
        failing = CheckResult.objects.filter(execution=execution, phase="apply", ok=False)
        last_round = max(failing.values_list("round", flat=True))
        first_round = min(failing.values_list("round", flat=True))
        detected = max(ts(c) for c in failing.filter(round=last_round).values_list("created_at", flat=True))
        first = max(ts(c) for c in failing.filter(round=first_round).values_list("created_at", flat=True))
        finished, applied = ts(execution.finished_at), ts(execution.applied_at)
        sample = {"detect_finished": finished - detected, "applied_finished": finished - applied,
                  "first_detect": detected - first}
        if "restored" in watch:
            sample["detect_restored"] = watch["restored"] - detected
        rows.append(sample)
    target_plan_floor = rollback_floor(target, "ref-0")

    print(f"(2) failed check -> zone restored, {p.args.samples} changes, declared tcp check to a closed port, "
          f"bake {target.bake_seconds} s (rounds every 0.2 s, threshold 2)")

    def show(key: str, label: str, ref: bool = False) -> None:
        values = [r[key] for r in rows if key in r]
        if not values:
            print(f"  {label}: no samples")
            return
        for tag, q in (("p50", 50), ("max", 100)):
            value = percentile(values, q)
            if ref:
                print(line(f"{label} {tag}", ms(value), "inverse apply+verify in-process",
                           ms(target_plan_floor), value / target_plan_floor))
            else:
                print(line(f"{label} {tag}", ms(value)))

    show("detect_restored", "detected -> zone answers before", ref=True)
    show("detect_finished", "detected -> rolled_back stored", ref=True)
    show("first_detect", "first failing round -> detected")
    show("applied_finished", "applied -> rolled_back stored")
    if other:
        print(f"  not rolled back: {', '.join(other)}")


def rollback_floor(target: Any, name: str, repeat: int = 10) -> float:
    """Median of a 1-RRset apply + verify in this process (what the rollback does
    on the DNS side: the inverse plan, then its verification)."""
    from changes.adapters import adapter_for

    adapter = adapter_for(target)
    try:
        items = adapter.validate_items([{"op": "upsert", "name": name, "type": "A", "ttl": 300,
                                         "records": ["192.0.2.251"]}])
        plan = adapter.plan(items)
        plans = [plan, plan.inverse()]
        times = []
        for i in range(repeat * 2):
            start = time.perf_counter()
            assert adapter.apply(plans[i % 2]).applied
            assert adapter.verify(plans[i % 2]).ok
            times.append(time.perf_counter() - start)
    finally:
        adapter.close()
    return statistics.median(times)


# ---------------------------------------------------------------------------
# (3) burst


def process_group_cpu(pgids: Iterable[int]) -> dict[int, float]:
    """CPU seconds (user + system) used so far by every process in each process
    group (a worker and its pool children, named, redis), from /proc. Empty where
    /proc is unavailable."""
    wanted = set(pgids)
    totals = dict.fromkeys(wanted, 0.0)
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pgrp = int(fields[2])  # fields after "(comm)": state ppid pgrp ... utime(12) stime(13)
        if pgrp in wanted:
            totals[pgrp] += (int(fields[11]) + int(fields[12])) / tick
    return totals


def bench_burst(p: Pipeline, run: int, label: str) -> dict[str, float]:
    """Latencies from the workers' own finished_at (not this process's polling,
    which is slowed to --burst-poll so that it takes no CPU from the workers)."""
    from changes.models import ChangeRequest, Execution

    # Warm every worker process first (imports, connections): a small burst, unmeasured.
    warm = [p.propose(p.targets[i % len(p.targets)], f"warm{run}-{i}") for i in range(2 * max(1, p.args.workers) + 2)]
    p.approve(warm)
    p.wait_ended([c.pk for c in warm])
    changes = [p.propose(p.targets[i % len(p.targets)], f"b{run}-{i}") for i in range(p.args.burst)]
    sweeps_before = len(p.sweeps)
    groups = {"workers": [w.process.pid for w in p.workers], "named": [p.named.process.pid],
              "redis": [p.redis.process.pid]}
    wall, _perf = p.approve(changes)
    cpu_before = process_group_cpu([pid for pids in groups.values() for pid in pids])
    own_before = time.process_time()
    poll, p.args.poll = p.args.poll, max(p.args.poll, p.args.burst_poll)
    try:
        seen = p.wait_ended([c.pk for c in changes], timeout=600)
    finally:
        p.args.poll = poll
    cpu_after = process_group_cpu([pid for pids in groups.values() for pid in pids])
    own = time.process_time() - own_before
    finished = dict(Execution.objects.filter(change_id__in=seen).values_list("change_id", "finished_at"))
    applied = [ts(finished[pk]) - wall for pk, (state, _) in seen.items() if state == ChangeRequest.State.APPLIED]
    total = max(ts(at) for at in finished.values()) - wall
    result = {"total": total, "throughput": len(applied) / total, "p50": percentile(applied, 50),
              "p95": percentile(applied, 95), "applied": len(applied), "swept": sum(p.sweeps[sweeps_before:])}
    print(f"  {label:<24}all {len(changes)} ended in {total:6.2f} s   {result['throughput']:5.1f} changes/s   "
          f"per change p50 {ms(result['p50']).strip()}, p95 {ms(result['p95']).strip()}   "
          f"applied {len(applied)}/{len(changes)}" + (f"   (sweep re-published {result['swept']})"
                                                       if result["swept"] else ""))
    if cpu_after:
        used = {name: sum(cpu_after[pid] - cpu_before[pid] for pid in pids) for name, pids in groups.items()}
        used["this process"] = own
        busy = sum(used.values())
        print("    CPU used meanwhile: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in used.items())
              + f"; {busy / total:.2f} of {os.cpu_count()} CPUs busy; workers {used['workers'] / len(changes) * 1000:.1f}"
              " ms CPU per change")
    return result


# ---------------------------------------------------------------------------


def describe_db() -> str:
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"SQLite {s['NAME']} (transaction_mode IMMEDIATE)"
    return f"{connection.vendor} {s['NAME']}@{s['HOST'] or 'localhost'}:{s['PORT'] or ''}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=100, help="sequential changes per run of (1)")
    parser.add_argument("--runs", type=int, default=3, help="runs of (1), each with its interleaved reference")
    parser.add_argument("--quick", action="store_true",
                        help="for make bench-quick: --only 1 --changes 20 --zones 1 (3 runs) unless given")
    parser.add_argument("--burst", type=int, default=50, help="changes approved at once for (3)")
    parser.add_argument("--zones", type=int, default=10, help="zones (targets) the burst is spread over")
    parser.add_argument("--workers", type=int, default=2, help="workers for the second burst run (1: skip it)")
    parser.add_argument("--pool", choices=["solo", "prefork"], default="solo",
                        help="second burst run: N solo worker processes, or one prefork worker with N children")
    parser.add_argument("--samples", type=int, default=5, help="rollback samples for (2)")
    parser.add_argument("--poll", type=float, default=0.003, help="poll interval of the measurement, seconds")
    parser.add_argument("--burst-poll", type=float, default=0.05,
                        help="poll interval while the burst runs (its latencies come from the workers' timestamps)")
    parser.add_argument("--only", default="1,2,3", help="which parts to run, e.g. 1 or 1,3")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and worker logs")
    args = parser.parse_args(argv)
    if args.quick:
        given = set(argv if argv is not None else sys.argv[1:])
        for flag, value in (("--only", "1"), ("--changes", 20), ("--zones", 1)):
            if flag not in given:
                setattr(args, flag[2:], value)
    args.zones = max(1, args.zones)
    parts = {part.strip() for part in args.only.split(",")}

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # run the finally below

    signal.signal(signal.SIGTERM, terminate)
    tmpdir = Path(tempfile.mkdtemp(prefix="changegate-apply-bench-"))
    pipeline = None
    try:
        db_url = configure_environment(tmpdir)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        pipeline = Pipeline(args, db_url)
        pipeline.start_services()
        pipeline.setup_data()
        pipeline.start_workers(1)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; database {describe_db()}; "
              f"named {pipeline.named.primary} ({args.zones + 1} zones); redis {pipeline.redis.url}; "
              f"lease {os.environ['CHANGEGATE_LEASE_SECONDS']} s; ratio = ours / reference", flush=True)
        if "1" in parts:
            bench_latency(pipeline)
            sys.stdout.flush()
        if "2" in parts:
            bench_rollback(pipeline)
            sys.stdout.flush()
        if "3" in parts:
            print(f"(3) burst: {args.burst} changes on {args.zones} zones (round robin) approved in one transaction, "
                  "bake 0")
            one = bench_burst(pipeline, 0, "1 solo worker")
            if args.workers > 1:
                if args.pool == "prefork":
                    pipeline.stop_workers(list(pipeline.workers))
                    pipeline.start_workers(args.workers, pool="prefork")
                    label = f"1 prefork worker x{args.workers}"
                else:
                    pipeline.start_workers(args.workers - 1)
                    label = f"{args.workers} solo workers"
                many = bench_burst(pipeline, 1, label)
                print(line(f"    throughput {label}", f"{many['throughput']:8.1f} /s", "1 worker",
                           f"{one['throughput']:.1f} /s", many["throughput"] / one["throughput"]))
    finally:
        if pipeline is not None:
            pipeline.stop_all()
        if args.keep:
            print(f"kept {tmpdir} and the worker logs", file=sys.stderr)
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    main()
