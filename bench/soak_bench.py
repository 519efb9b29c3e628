"""Soak benchmark: the soak test's harness (tests/soak.py) timed over several runs
(see bench/README.md, section "Soak").

    .venv/bin/python -m bench.soak_bench [--runs 4] [--seconds 30] [--workers 2] [--drivers 2] [--seed 10]

Each run is a whole soak: a fresh `named` with ten zones (plus the soak's own
restart named), a fresh redis-server, `manage.py runserver` serving the API, a
`celery beat` and solo `celery worker` processes, two threads of engineers and
reviewers calling the API for --seconds, the three faults (named restarted
mid-bake, a worker kill -9, redis restarted empty), then the drain. Runs alternate
between --workers workers and 1 worker (the reference, measured in the same
session, interleaved so drift of the shared machine hits both alike).

Figures per run: attempts a worker ended per second (first approval to the last
attempt's end) and approval -> end of attempt p50/p95 (from the audit events'
times), and whether the soak's invariants held. This is a benchmark: it prints
figures and asserts nothing about time.
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
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
ZONES = 10


def configure_environment(tmpdir: Path) -> None:
    """Settings for this process and every process it starts (they inherit os.environ)."""
    from tests.soak import PROCESS_ENV

    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"  # MD5 passwords, keys under the temp dir
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{tmpdir / 'soak.sqlite3'}")
    os.environ.setdefault("CHANGEGATE_VAR_DIR", str(tmpdir))
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["DJANGO_ALLOWED_HOSTS"] = "127.0.0.1"
    os.environ.update(PROCESS_ENV)


class WebServer:
    """`manage.py runserver` (threaded) on a free loopback port: the API as a separate process."""

    def __init__(self, broker_url: str, log: Path) -> None:
        from dns_adapters.local_named import free_port

        self.port, self.broker_url, self.log = free_port(), broker_url, log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> WebServer:
        env = {**os.environ, "CELERY_BROKER_URL": self.broker_url}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "runserver", f"127.0.0.1:{self.port}", "--noreload"],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.1)  # readiness poll interval
        raise RuntimeError(f"runserver did not answer:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def people(run: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    users = get_user_model().objects
    operator = users.create_user(username=f"soak-operator-{run}", password=None, is_staff=True)
    operator.user_permissions.add(Permission.objects.get(content_type__app_label="changes", codename="operate_targets"))
    operator = users.get(pk=operator.pk)  # a fresh instance: Django caches permissions
    return {
        "operator": operator,
        "engineers": [users.create_user(username=f"soak-{name}-{run}", password=None) for name in ("alice", "erin")],
        "reviewers": [users.create_user(username=f"soak-{name}-{run}", password=None) for name in ("bob", "carol")],
        "auditor": users.create_user(username=f"soak-root-{run}", password=None, is_superuser=True),
    }


def one_run(run: int, workers: int, args: argparse.Namespace, tmpdir: Path) -> Any:
    from dns_adapters.local_named import LocalNamed, default_zone_text
    from tests.conftest import DEMO_RECORDS
    from config.celery_app import app
    from tests.processes import RedisServer, point_app_at
    from tests.soak import Soak

    zones = [f"r{run}z{i}.test" for i in range(ZONES)]
    named = LocalNamed({zone: default_zone_text(zone, DEMO_RECORDS) for zone in zones}).start()
    redis = RedisServer().start()
    point_app_at(app, redis.url)  # this process pings the workers (and publishes nothing else)
    web = WebServer(redis.url, tmpdir / f"web-{run}.log").start()
    soak = Soak(base_url=web.url, broker=redis, named=named, zones=zones, seconds=args.seconds, workers=workers,
                seed=args.seed + run, label=f"soak{run}", drivers=args.drivers, **people(run))
    try:
        soak.setup()
        result = soak.run()
        soak.verify()
    finally:
        soak.close()
        web.stop()
        redis.stop()
        named.stop()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=4, help="runs in all, alternating --workers and 1 worker")
    parser.add_argument("--seconds", type=float, default=30, help="load time of each run")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--drivers", type=int, default=2, help="threads sending the load (the test uses 2)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (kept anyway on problems)")
    args = parser.parse_args(argv)

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # run the finally blocks

    signal.signal(signal.SIGTERM, terminate)
    tmpdir = Path(tempfile.mkdtemp(prefix="changegate-soak-bench-"))
    configure_environment(tmpdir)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from tests.soak import percentile

    call_command("migrate", verbosity=0)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; database {connection.vendor}; "
          f"{args.seconds:.0f} s of load per run; logs in {tmpdir}", flush=True)
    results: dict[int, list[Any]] = {args.workers: [], 1: []}
    for run in range(args.runs):
        workers = args.workers if run % 2 == 0 else 1
        result = one_run(run, workers, args, tmpdir)
        results[workers].append(result)
        verdict = "invariants held" if not result.problems else f"{len(result.problems)} PROBLEMS"
        print(f"run {run}: {workers} worker(s): {result.attempts_ended} attempts ended in {result.span:.1f} s = "
              f"{result.changes_per_second:.2f}/s; approval -> end p50 {percentile(result.latencies, 50):.2f} s, "
              f"p95 {percentile(result.latencies, 95):.2f} s; drain {result.drain:.1f} s; "
              f"5xx {len(result.server_errors)}; {verdict}", flush=True)
        for problem in result.problems:
            print(f"    PROBLEM: {problem}")
        args.keep = args.keep or bool(result.problems)

    def median(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    if results[1] and results[args.workers] and args.workers != 1:
        many, one = results[args.workers], results[1]
        rate = median([r.changes_per_second for r in many]), median([r.changes_per_second for r in one])
        p95 = (median([percentile(r.latencies, 95) for r in many]), median([percentile(r.latencies, 95) for r in one]))
        print(f"median over runs ({len(many)} with {args.workers} workers, {len(one)} with 1; ratio = "
              f"{args.workers} workers / 1 worker):")
        print(f"  changes/s                     {rate[0]:6.2f}   (1 worker: {rate[1]:.2f})   "
              f"ratio {rate[0] / rate[1]:.2f}x")
        print(f"  approval -> terminal p95      {p95[0]:6.2f} s (1 worker: {p95[1]:.2f} s)   "
              f"ratio {p95[0] / p95[1]:.2f}x")
    if not args.keep:
        shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    main()
