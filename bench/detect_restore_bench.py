"""Detect -> restored for a failure that shows only after the old TTL expires (issue 16;
see bench/README.md, section "Detect -> restored through a caching resolver").

    .venv/bin/python -m bench.detect_restore_bench [--runs 3] [--old-ttl 3] [--new-ttl 1] [--probe 0.01] [--quick]

Throwaway: a SQLite file in a temporary directory (or the database of an existing
DATABASE_URL, every name unique to the run), a `LocalNamed` (the authoritative
server) serving one zone per run, and a `LocalResolver` (BIND 9, recursion on,
prefetch and serve-stale off) forwarding to it: what clients see.

Per run, on a zone of its own (nothing cached from an earlier run): www A 192.0.2.1
with TTL --old-ttl; a target whose config lists the resolver and which declares a
dns_resolve check through it expecting 192.0.2.1; the target's bake follows the old
TTL (bake_seconds 0, so the bake is --old-ttl s and the check interval is that / 5,
BakePolicy's default). A change sets www A 198.51.100.9 with TTL --new-ttl: wrong
for the check, but the resolver keeps serving the cached old answer until the old
TTL runs out, so the failure appears only then. The resolver's cache is warmed (www
asked once) before the change runs, as clients would have. The change is approved
through the services and run by `pipeline.run.execution_run` in a thread of this
process (the worker's code; the wake-up is not published). A probe thread asks the
resolver for www every --probe s (a fresh recursion-desired query each time):

  t_wrong     the first answer 198.51.100.9,
  t_restored  the first answer 192.0.2.1 after that.

detect -> restored = t_restored - t_wrong; the issue's bound is the check interval
+ 1 s + the rollback's own TTL (the resolver keeps the wrong answer for --new-ttl s
once it has fetched it); ratio = measured / bound (goal < 1). Also printed: when the
failing round was stored and when the rollback finished, counted from t_wrong.

This is a benchmark: it prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query

from bench.apply_bench import configure_environment, describe_db
from bench.stats import spread, summary, target

HEALTHY, BROKEN = "192.0.2.1", "198.51.100.9"
# The bound: the check interval, plus one second, plus the rollback's own TTL.
BOUND_SLACK_SECONDS = 1.0
# Longest a run may take past the old TTL before it is called stuck.
RUN_TIMEOUT_SECONDS = 60.0


class Probe(threading.Thread):
    """Asks the resolver for www every `every` s until it has seen the wrong answer and
    then the old one again (or is stopped): what a client behind the resolver sees."""

    def __init__(self, resolver: str, qname: str, every: float) -> None:
        super().__init__(name="probe", daemon=True)
        host, _, port = resolver.rpartition(":")
        self.host, self.port, self.qname, self.every = host, int(port), qname, every
        self.t_wrong: float | None = None
        self.t_restored: float | None = None
        self.queries = self.errors = 0
        self.stop = threading.Event()

    def ask(self) -> list[str] | None:
        query = dns.message.make_query(self.qname, "A")
        query.flags |= dns.flags.RD
        try:
            response = dns.query.udp(query, self.host, port=self.port, timeout=0.5)
        except Exception:  # a lost packet: the next probe asks again
            self.errors += 1
            return None
        return sorted(rd.to_text() for rrset in response.answer for rd in rrset if rd.rdtype == 1)

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set():
            answer = self.ask()
            seen = time.monotonic()
            self.queries += 1
            if answer == [BROKEN] and self.t_wrong is None:
                self.t_wrong = seen
            elif answer == [HEALTHY] and self.t_wrong is not None:
                self.t_restored = seen
                return
            next_at += self.every
            self.stop.wait(max(0.0, next_at - time.monotonic()))


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = uuid.uuid4().hex[:6]
        self.named: Any = None
        self.resolver: Any = None

    def zone(self, run: int) -> str:
        return f"r{run}-{self.run_id}.test"

    def start(self) -> None:
        from dns_adapters.local_named import LocalNamed, LocalResolver, default_zone_text

        zones = {self.zone(run): default_zone_text(self.zone(run), f"www {self.args.old_ttl} IN A {HEALTHY}\n")
                 for run in range(1, self.args.runs + 1)}
        self.named = LocalNamed(zones, start_timeout=60, key_dir=os.environ["CHANGEGATE_KEY_DIR"]).start()
        self.resolver = LocalResolver(self.named.primary, zones=list(zones)).start()

    def stop(self) -> None:
        for server in (self.resolver, self.named):
            if server is not None:
                server.stop()

    def people(self) -> None:
        from django.contrib.auth import get_user_model

        users = get_user_model().objects
        self.author = users.create_user(username=f"bench-author-{self.run_id}", password=None)
        self.reviewer = users.create_user(username=f"bench-reviewer-{self.run_id}", password=None)

    def approved_change(self, run: int) -> Any:
        from django.db import transaction
        from guardian.shortcuts import assign_perm

        from approvals.policy import ROLES, change_approve
        from changes.services import change_create, change_submit, target_register

        zone = self.zone(run)
        check = {"type": "dns_resolve", "resolver": self.resolver.address, "name": f"www.{zone}", "rdtype": "A",
                 "expect": [HEALTHY], "timeout": 1}
        # bake_seconds 0: the bake is the old TTL (pipeline.bake_time), capped at 60 s.
        zone_target = target_register(
            actor=None, name=zone, bake_seconds=0, bake_max_seconds=60, watch_seconds=0, health_checks=[check],
            config={"zone": zone, "primary": self.named.primary, "tsig_key_file": str(self.named.key_file),
                    "timeout": 3, "resolvers": [self.resolver.address]})
        for user, role in ((self.author, "engineer"), (self.reviewer, "reviewer")):
            for perm in ROLES[role]:
                assign_perm(f"changes.{perm}", user, zone_target)
        items = [{"op": "upsert", "name": "www", "type": "A", "ttl": self.args.new_ttl, "records": [BROKEN]}]
        change = change_create(actor=self.author, target=zone_target, title="bench: www to the wrong address",
                               reason="benchmark", items=items)
        change = change_submit(actor=self.author, change=change)
        with transaction.atomic():
            change_approve(actor=self.reviewer, change=change, fingerprint=change.fingerprint)
        change.refresh_from_db()
        return change

    def one_run(self, run: int) -> dict[str, float]:
        from django.db import connection

        from changes.models import ChangeRequest, CheckResult, Execution
        from pipeline.bake_time import bake_for
        from pipeline.checks import BakePolicy
        from pipeline.run import execution_run

        change = self.approved_change(run)
        bake = bake_for(change, change.target).seconds
        interval = BakePolicy(bake_seconds=float(bake)).interval
        assert interval is not None
        qname = f"www.{self.zone(run)}."
        probe = Probe(self.resolver.address, qname, self.args.probe)
        if probe.ask() != [HEALTHY]:  # warms the resolver's cache: the old answer is cached as in production
            raise SystemExit(f"run {run}: the resolver does not serve {HEALTHY} for {qname}")
        execution_id = Execution.objects.values_list("pk", flat=True).get(change_id=change.pk)
        ended: dict[str, Any] = {}

        def work() -> None:
            try:
                ended["state"] = execution_run(execution_id=execution_id, worker=f"bench-{self.run_id}")
            except BaseException as exc:  # handed to the main thread
                ended["error"] = exc
            finally:
                connection.close()

        probe.start()
        worker = threading.Thread(target=work, name="execution_run")
        worker.start()
        worker.join(timeout=self.args.old_ttl + RUN_TIMEOUT_SECONDS)
        probe.join(timeout=self.args.new_ttl + self.args.old_ttl + RUN_TIMEOUT_SECONDS)
        probe.stop.set()
        if worker.is_alive() or "error" in ended:
            raise SystemExit(f"run {run}: execution_run did not finish: {ended.get('error', 'still running')}")
        if ended["state"] != ChangeRequest.State.ROLLED_BACK:
            raise SystemExit(f"run {run}: the change ended {ended['state']}, not rolled_back")
        if probe.t_wrong is None or probe.t_restored is None:
            raise SystemExit(f"run {run}: the probe saw wrong at {probe.t_wrong}, restored at {probe.t_restored}")
        # Stored times are wall-clock; the probe's are monotonic: both as seconds after t_wrong.
        offset = time.time() - time.monotonic()
        failing = (CheckResult.objects.filter(execution_id=execution_id, phase="apply", kind="dns_resolve", ok=False)
                   .order_by("round").values_list("round", "created_at"))
        rounds = list(failing)
        finished = Execution.objects.values_list("finished_at", flat=True).get(pk=execution_id)
        wrong_wall = probe.t_wrong + offset
        measured = probe.t_restored - probe.t_wrong
        bound = interval + BOUND_SLACK_SECONDS + self.args.new_ttl
        fig = {"measured": measured, "bound": bound, "ratio": measured / bound, "interval": interval,
               "bake": float(bake), "detected": rounds[0][1].timestamp() - wrong_wall if rounds else float("nan"),
               "rolled_back": finished.timestamp() - wrong_wall if finished else float("nan"),
               "failing_rounds": len(rounds), "queries": probe.queries}
        print(f"run {run}: bake {bake} s, check interval {interval:g} s; failing rounds {len(rounds)} "
              f"(round {rounds[0][0] if rounds else '-'}); from t_wrong: failing round stored "
              f"{fig['detected']:+.2f} s, rollback finished {fig['rolled_back']:+.2f} s, restored {measured:.2f} s; "
              f"bound {bound:.2f} s ({interval:g} + {BOUND_SLACK_SECONDS:g} + {self.args.new_ttl}); "
              f"ratio {fig['ratio']:.2f} ({probe.queries} probes, {probe.errors} unanswered)", flush=True)
        target("detect-restored-vs-bound", value=fig["ratio"], unit="x", goal="< 1x", met=fig["ratio"] < 1,
               run=run, old_ttl=self.args.old_ttl, new_ttl=self.args.new_ttl, interval=interval,
               seconds=round(measured, 3), bound=round(bound, 3))
        return fig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--old-ttl", type=int, default=3, help="TTL of the record before the change (s)")
    parser.add_argument("--new-ttl", type=int, default=1, help="TTL the change sets (s): the rollback waits for it")
    parser.add_argument("--probe", type=float, default=0.01, help="seconds between the probe's queries")
    parser.add_argument("--quick", action="store_true", help="old TTL 2 s (unless given)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.quick and "--old-ttl" not in set(argv if argv is not None else sys.argv[1:]):
        args.old_ttl = 2
    if args.old_ttl < 1 or args.new_ttl < 1 or args.runs < 1:
        parser.error("--old-ttl, --new-ttl and --runs must be >= 1")

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # run the finally below

    signal.signal(signal.SIGTERM, terminate)
    tmpdir = Path(tempfile.mkdtemp(prefix="changegate-detect-bench-"))
    bench = None
    try:
        configure_environment(tmpdir)
        import django

        django.setup()
        from django.core.management import call_command

        from pipeline import execution as pipeline_module

        call_command("migrate", verbosity=0)
        # execution_run is called here: the approval's wake-up is not published.
        pipeline_module.publish = lambda *args, **kwargs: None
        bench = Bench(args)
        bench.start()
        bench.people()
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; database {describe_db()}; "
              f"named {bench.named.primary}, resolver {bench.resolver.address}; old TTL {args.old_ttl} s, "
              f"new TTL {args.new_ttl} s, probe every {args.probe * 1000:g} ms; {args.runs} runs"
              + (" (--quick: old TTL 2 s)" if args.quick else ""), flush=True)
        figs = [bench.one_run(run) for run in range(1, args.runs + 1)]
        measured = summary([f["measured"] for f in figs])
        print(f"detect -> restored over {len(figs)} runs: median {measured['median']:.2f} s, max {measured['max']:.2f} s;"
              f" ratio to the bound {spread([f['ratio'] for f in figs])}; failing rounds per run "
              f"{[int(f['failing_rounds']) for f in figs]}; check interval {statistics.median(f['interval'] for f in figs):g} s")
    finally:
        if bench is not None:
            bench.stop()
        if args.keep:
            print(f"kept {tmpdir}", file=sys.stderr)
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    main()
