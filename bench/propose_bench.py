"""Proposing through the API (issue 14, finding 2): `POST /api/v1/changes/` with a
10-RRset change against a 100,000-record zone, served by gunicorn with 2 sync
workers, next to the DNS plan alone (see bench/README.md, "Proposing through the API").

    .venv/bin/python -m bench.propose_bench [--records 100000] [--runs 3] [--rounds 100]
                                            [--workers 2] [--database-url URL] [--quick]

Everything is throwaway: a SQLite file in a temporary directory (or the database of
--database-url, e.g. PostgreSQL; every name used is unique to the run), a `LocalNamed`
serving bench.test (--records A records) on a free loopback port, the target
registered through `target_register` (which reads the zone once, as in production),
an engineer holding the role on it and an API token (the API's own token auth: no
password hashing per request). Settings: config.settings.local with DJANGO_DEBUG=false
(production settings refuse SQLite; they add only HTTPS headers/redirects).

Then `gunicorn config.wsgi -w 2 -b 127.0.0.1:<free port>` (sync workers) is started and,
per round, interleaved (the order alternates per round):

  POST   an http.client connection from this process (sync workers close it after
         each answer, so every request also pays a TCP connect, as a client of a
         sync-worker deployment does); 10 upsert items on names of the zone no earlier
         request used (h<10r>..h<10r+9>), each a real change; timed until the 201
         body is read.
  plan   the reference: what the service does on the DNS side, in this process, for
         the same 10 items: the target's adapter built (the service builds one per
         call), validate_items, plan, close.

Per run: p50 and p95 of both, the ratio of the p50s, and the CPU per request of the
gunicorn workers (from /proc) beside the plan's CPU in this process. The SQL statements of one
request are counted in this process (Django's test client with the same token
header, CaptureQueriesContext) on two requests, which must agree. `--profile` also
runs --rounds proposals in this process under cProfile (test client, same token)
and prints the top functions: where a worker's time goes.

This is a benchmark: it prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.stats import interleaved, ms, spread, summary, target

REPO_ROOT = Path(__file__).resolve().parent.parent
ZONE = "bench.test"
ITEMS_PER_CHANGE = 10
WARMUP = 6  # requests before timing: both workers import, connect, fill their caches


def configure_environment(tmpdir: Path, database_url: str | None, settings: str = "config.settings.local") -> None:
    """Settings for this process and gunicorn (it inherits os.environ)."""
    os.environ["DJANGO_SETTINGS_MODULE"] = settings
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{tmpdir / 'bench.sqlite3'}"
    os.environ["DJANGO_DEBUG"] = "false"  # no query log: production-like
    os.environ["DJANGO_ALLOWED_HOSTS"] = "127.0.0.1,localhost,testserver"
    os.environ["CHANGEGATE_VAR_DIR"] = str(tmpdir)
    os.environ["CHANGEGATE_KEY_DIR"] = str(tmpdir / "keys")  # the gateway reads keys only from here
    os.environ.setdefault("LOG_LEVEL", "WARNING")


def zone_text(records: int) -> str:
    from dns_adapters.local_named import default_zone_text

    body = "".join(f"h{i} 300 IN A 10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}\n" for i in range(records))
    return default_zone_text(ZONE, body)


def items_for(n: int, records: int) -> list[dict[str, Any]]:
    """The 10 upserts of request n: names of the zone no other request uses (wrapping
    only after records/10 requests), a value no record has."""
    first = (n * ITEMS_PER_CHANGE) % max(ITEMS_PER_CHANGE, records - ITEMS_PER_CHANGE)
    return [{"op": "upsert", "name": f"h{first + j}", "type": "A", "ttl": 300, "records": [f"192.0.2.{j + 1}"]}
            for j in range(ITEMS_PER_CHANGE)]


class Gunicorn:
    """`gunicorn config.wsgi` on a free loopback port, its output in a log file."""

    def __init__(self, workers: int, log: Path) -> None:
        self.workers, self.log = workers, log
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def launch(self) -> Gunicorn:
        """Start the master (it forks the workers, which import the project meanwhile)."""
        from dns_adapters.local_named import free_port

        if shutil.which("gunicorn", path=str(Path(sys.executable).parent)) is None:
            raise SystemExit("gunicorn not installed (.venv/bin/pip install gunicorn)")
        self.port = free_port()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi", "-w", str(self.workers),
                 "-k", "sync", "-b", f"127.0.0.1:{self.port}", "--log-level", "warning"],
                cwd=REPO_ROOT, env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = 60) -> Gunicorn:
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # ready = the master accepts a connection and a worker answers
            if self.process.poll() is not None:
                raise SystemExit(f"gunicorn exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/api/v1/")
                conn.getresponse().read()
                conn.close()
                return self
            except OSError:
                time.sleep(0.05)  # polling a child process that is starting, not test synchronization
        raise SystemExit(f"gunicorn did not answer within {timeout:g}s:\n{self.log.read_text()[-3000:]}")

    def cpu_seconds(self) -> float:
        """CPU (user + system) used so far by the master's children, the workers (from /proc)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if self.process is not None and int(fields[1]) == self.process.pid:  # fields after "(comm)": state ppid
                total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # the master and its workers (own session)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class Setup:
    def __init__(self, args: argparse.Namespace, named: Any) -> None:
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token

        from changes.permissions import target_role_grant
        from changes.services import target_register

        run = uuid.uuid4().hex[:6]
        started = time.perf_counter()
        self.target = target_register(actor=None, name=f"{ZONE}-{run}", bake_seconds=0, config={
            "zone": ZONE, "primary": named.primary, "tsig_key_file": str(named.key_file), "timeout": 10})
        self.register_seconds = time.perf_counter() - started
        self.author = get_user_model().objects.create_user(f"author-{run}", password=None)
        target_role_grant(actor=None, target=self.target, role="engineer", user=self.author, reason="bench")
        self.token = Token.objects.create(user=self.author).key
        self.records = args.records
        self.count = 0

    def body(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"target": self.target.name, "title": "bench", "reason": "benchmark", "items": items}

    def next_items(self) -> list[dict[str, Any]]:
        self.count += 1
        return items_for(self.count, self.records)


class Client:
    """An HTTP/1.1 client of gunicorn: asks for keep-alive, reconnects when a worker
    closed the connection (sync workers close after every answer)."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json",
                        "Accept": "application/json", "Connection": "keep-alive"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        data = json.dumps(body).encode()
        for attempt in range(2):
            try:
                self.conn.request("POST", path, body=data, headers=self.headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()  # a sync worker closes after each response; open a new one
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def plan_alone(setup: Setup, items: list[dict[str, Any]]) -> None:
    from changes.adapters import adapter_for

    adapter = adapter_for(setup.target)
    try:
        adapter.plan(adapter.validate_items(items))
    finally:
        adapter.close()


def count_statements(setup: Setup, show: bool = False) -> list[int]:
    """Statements of two proposals in this process (test client, same token header)."""
    from django.db import connection
    from django.test import Client as DjangoClient
    from django.test.utils import CaptureQueriesContext

    client = DjangoClient(HTTP_AUTHORIZATION=f"Token {setup.token}")
    counts = []
    for _ in range(3):  # the first one warms this process (content types, permissions)
        with CaptureQueriesContext(connection) as captured:
            response = client.post("/api/v1/changes/", setup.body(setup.next_items()), content_type="application/json")
        if response.status_code != 201:
            raise SystemExit(f"in-process POST answered {response.status_code}: {response.content[:500]!r}")
        counts.append(len(captured.captured_queries))
    if show:
        print("the statements of the last one (seconds as Django's query log measured them in this process):")
        for query in captured.captured_queries:
            print(f"  {float(query['time']) * 1000:6.2f} ms  {query['sql'][:160]}")
    return counts[1:]


def profile(setup: Setup, rounds: int) -> None:
    import cProfile
    import pstats

    from django.test import Client as DjangoClient

    client = DjangoClient(HTTP_AUTHORIZATION=f"Token {setup.token}")
    bodies = [setup.body(setup.next_items()) for _ in range(rounds)]
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for body in bodies:
        client.post("/api/v1/changes/", body, content_type="application/json")
    profiler.disable()
    print(f"profile: {rounds} proposals in this process (test client), {ms((time.perf_counter() - started) / rounds)}"
          " each; top functions by cumulative time:")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def bench(args: argparse.Namespace, setup: Setup, server: Gunicorn) -> None:
    client = Client(server.port, setup.token)
    path = "/api/v1/changes/"
    for _ in range(WARMUP):
        status, content = client.post(path, setup.body(setup.next_items()))
        if status != 201:
            raise SystemExit(f"POST answered {status}: {content[:500]!r}")
        plan_alone(setup, setup.next_items())
    counts = count_statements(setup, show=args.sql)
    statements = counts[0]
    print(f"SQL statements per proposal (token auth, in-process, two requests): {counts}"
          + ("" if len(set(counts)) == 1 else "  NOT CONSTANT"), flush=True)
    target("propose-statements", value=statements, unit="statements", goal="constant",
           met=None, measured=counts, database=describe_db())

    p50s, ratios = [], []
    for run in range(1, args.runs + 1):
        current: dict[str, list[dict[str, Any]]] = {}

        def post() -> None:
            items = current.setdefault("items", setup.next_items())
            status, content = client.post(path, setup.body(items))
            if status != 201:
                raise SystemExit(f"POST answered {status}: {content[:500]!r}")

        plan_cpu: list[float] = []

        def reference() -> None:
            started = time.process_time()
            plan_alone(setup, current.setdefault("items", setup.next_items()))
            plan_cpu.append(time.process_time() - started)

        def round_of(variant: Callable[[], None]) -> Callable[[], None]:
            def run_it() -> None:
                variant()
                if "done" in current:  # both variants of this round ran: the next round takes new names
                    current.clear()
                else:
                    current["done"] = []
            return run_it

        workers_before = server.cpu_seconds()
        samples = interleaved({"POST": round_of(post), "plan": round_of(reference)}, args.rounds)
        post_cpu = (server.cpu_seconds() - workers_before) / args.rounds
        ours, ref = summary(samples["POST"]), summary(samples["plan"])
        ratio = ours["median"] / ref["median"]
        p50s.append(ours["median"] * 1000)
        ratios.append(ratio)
        print(f"run {run}/{args.runs} ({args.rounds} rounds, interleaved): POST p50 {ms(ours['median'])}, "
              f"p95 {ms(ours['p95'])}   (DNS plan alone p50 {ms(ref['median'])}, p95 {ms(ref['p95'])})   "
              f"ratio {ratio:.2f}x; CPU per request: workers {ms(post_cpu)}, plan {ms(sum(plan_cpu) / len(plan_cpu))}",
              flush=True)
        target("propose-p50", value=ours["median"] * 1000, unit="ms", goal="< 30 ms",
               met=ours["median"] * 1000 < 30, run=run, p95_ms=round(ours["p95"] * 1000, 2))
        target("propose-vs-plan", value=ratio, unit="x", goal="< 4x", met=ratio < 4, run=run,
               plan_p50_ms=round(ref["median"] * 1000, 2))
    print(f"over {args.runs} runs (median (min-max)): POST p50 {spread(p50s)} ms, ratio {spread(ratios)}x; "
          f"{statements} SQL statements per request; load average {os.getloadavg()[0]:.1f} (other processes "
          "on this machine slow both sides alike; the CPU figures move least)")


def describe_db() -> str:
    from django.db import connection

    if connection.vendor == "sqlite":
        return f"SQLite {connection.Database.sqlite_version}"
    return connection.vendor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="A records in the zone")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--database-url", default=None, help="e.g. postgres://postgres@127.0.0.1:5432/name")
    parser.add_argument("--quick", action="store_true", help="--rounds 30 (the whole bench in 20-35 s)")
    parser.add_argument("--profile", action="store_true", help="also profile --rounds proposals in this process")
    parser.add_argument("--settings", default="config.settings.local",
                        help="settings module of this process and gunicorn (an A/B of a settings change)")
    parser.add_argument("--sql", action="store_true", help="print the statements of one proposal")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (gunicorn log)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = min(args.rounds, 30)

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # run the finally below

    signal.signal(signal.SIGTERM, terminate)
    wall = time.perf_counter()
    tmpdir = Path(tempfile.mkdtemp(prefix="changegate-propose-bench-"))
    named = server = None
    starting: Future[Any] | None = None
    try:
        configure_environment(tmpdir, args.database_url, args.settings)
        import django

        django.setup()
        from django.core.management import call_command

        from dns_adapters.local_named import LocalNamed

        named = LocalNamed({ZONE: zone_text(args.records)}, start_timeout=120, key_dir=os.environ["CHANGEGATE_KEY_DIR"])
        # named loads the zone while the tables are made
        starting = ThreadPoolExecutor(1, thread_name_prefix="named").submit(named.start)
        call_command("migrate", verbosity=0)
        starting.result()
        server = Gunicorn(args.workers, tmpdir / "gunicorn.log").launch()  # starts while the target registers
        setup = Setup(args, named)
        server.wait_ready()
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; database {describe_db()}; "
              f"named {named.primary} ({args.records} records, registered in {setup.register_seconds:.1f} s); "
              f"gunicorn {args.workers} sync workers on 127.0.0.1:{server.port}; {ITEMS_PER_CHANGE}-RRset upserts; "
              f"ratio = POST / plan; set-up {time.perf_counter() - wall:.1f} s; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        bench(args, setup, server)
        if args.profile:
            profile(setup, args.rounds)
    finally:
        if server is not None:
            server.stop()
        if starting is not None:
            starting.exception()  # a set-up that failed first: let named finish starting, then stop it
        if named is not None:
            named.stop()
        if args.keep:
            print(f"kept {tmpdir}", file=sys.stderr)
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)
        print(f"wall {time.perf_counter() - wall:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
