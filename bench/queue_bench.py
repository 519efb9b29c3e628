"""Reviewer's queue benchmark (issue 14): what the reviewer's pages cost with a
long history behind them.

    .venv/bin/python -m bench.queue_bench [--changes 100000] [--pending 5000]
                                          [--runs 3] [--rounds 15] [--database-url URL]
                                          [--quick] [--facets-always] [--legacy]

Seeds `--changes` stored changes, `--pending` of them pending approval, over four
targets with bench.queue_seed (one INSERT over batches of rows: no DNS, a real plan and
fingerprint per row), in a throwaway SQLite file, or in the database of --database-url (e.g.
PostgreSQL; every name used is unique to the run). The reviewer holds approve_change
on three targets directly and on the fourth through a group, is staff and may open
the change list. Then, in this process through Django's test client (no HTTP server,
no network), for each page:

  queue API      GET /api/v1/changes/?reviewable=true (first page of 50)
  admin list     GET /admin/changes/changerequest/ (first page of 100; facet counts
                 only on request, --facets-always measures them on every view)
  admin waiting  GET /admin/changes/changerequest/?review=waiting

each against a reference measured in the same round, right after it (the order
alternates per round, so background load lands on both sides): the database floor
of the same page, `SELECT count(*)` of the rows the page counts plus the same page
of rows (with target and author) by a plain query that filters on nothing but the
state. Figures: median and p95 per run of --rounds rounds, then the spread of the
medians over --runs runs, and the SQL statements per request (which must not depend
on the data). With --legacy, a last line times the pre-issue-14 queue (the
per-change policy check over every candidate) once per run, for scale.

Per run, one BENCH-TARGET line per page (bench/stats.py `target`): queue-api-p50,
admin-list-p50 and admin-waiting-p50 against the issue's "< 150 ms"; once, the
statements per request of each page (goal "constant": tests/changes/test_query_counts.py
is what checks that they do not grow). --quick (for `make bench-quick`): the same
100,000 changes and 5,000 pending, 3 runs of 5 rounds.

This is a benchmark: it prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGETS = 4


def configure_environment(tmpdir: Path, database_url: str | None) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{tmpdir / 'bench.sqlite3'}"
    os.environ["DJANGO_DEBUG"] = "false"  # no query log: production-like
    # The test client's host. Not setup_test_environment(): it instruments every
    # template render (a copy of the context per template), which a server never pays.
    os.environ["DJANGO_ALLOWED_HOSTS"] = "127.0.0.1,localhost,testserver"
    os.environ.setdefault("CHANGEGATE_VAR_DIR", str(tmpdir))
    os.environ["CHANGEGATE_KEY_DIR"] = str(tmpdir / "keys")
    os.environ.setdefault("LOG_LEVEL", "WARNING")


def p95(values: list[float]) -> float:
    from bench.stats import percentile

    return percentile(values, 95)


class Setup:
    """The seeded installation: targets, people, changes."""

    def __init__(self, args: argparse.Namespace, tmpdir: Path) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group, Permission

        from bench.queue_seed import seed_changes
        from changes.permissions import target_role_grant
        from changes.services import target_register
        from dns_adapters.local_named import write_key_file

        run = f"{os.getpid()}-{int(time.time())}"
        users = get_user_model().objects
        keys = tmpdir / "keys"
        keys.mkdir(parents=True, exist_ok=True)
        key_file = keys / "bench.key"
        write_key_file(key_file, "bench-key", base64.b64encode(b"b" * 32).decode())
        self.authors = [users.create_user(f"author{n}-{run}", password="pw") for n in range(3)]
        self.reviewer = users.create_user(f"reviewer-{run}", password="pw", is_staff=True)
        self.reviewer.user_permissions.add(Permission.objects.get(content_type__app_label="changes",
                                                                  codename="view_changerequest"))
        group = Group.objects.create(name=f"reviewers-{run}")
        self.reviewer.groups.add(group)
        self.targets = []
        started = time.perf_counter()
        per_target, pending_per_target = args.changes // TARGETS, args.pending // TARGETS
        for n in range(TARGETS):
            name = f"q{n}-{run}.test"
            target = target_register(actor=None, name=name, check_reachable=False, config={
                "zone": name, "primary": "127.0.0.1:1", "tsig_key_file": str(key_file)})
            principal = {"group": group} if n == TARGETS - 1 else {"user": self.reviewer}
            target_role_grant(actor=None, target=target, role="reviewer", bootstrap=True, reason="bench", **principal)
            for author in self.authors:
                target_role_grant(actor=None, target=target, role="engineer", user=author, reason="bench")
            seed_changes(target=target, authors=self.authors, count=per_target, pending=pending_per_target,
                         start=n * per_target)
            self.targets.append(target)
        self.seed_seconds = time.perf_counter() - started
        self.reviewer = users.get(pk=self.reviewer.pk)  # no permission cache from the setup


def pages(setup: Setup) -> list[tuple[str, str, Callable[[], Any], Callable[[], Any]]]:
    """(label, target name, ours, reference) for every page measured."""
    from django.test import Client
    from django.urls import reverse
    from rest_framework.test import APIClient

    from changes.models import ChangeRequest

    api = APIClient()
    api.force_authenticate(setup.reviewer)
    admin = Client()
    admin.force_login(setup.reviewer)
    changelist = reverse("admin:changes_changerequest_changelist")
    pending = ChangeRequest.objects.filter(state=ChangeRequest.State.PENDING_APPROVAL)

    def floor(queryset: Any, size: int) -> Callable[[], Any]:
        def run() -> Any:
            return queryset.count(), list(queryset.select_related("target", "author").order_by("-pk")[:size])
        return run

    def get(client: Any, url: str, query: dict[str, str]) -> Callable[[], Any]:
        def run() -> Any:
            response = client.get(url, query)
            if response.status_code != 200:
                raise SystemExit(f"{url} {query} answered {response.status_code}")
            if hasattr(response, "render"):
                response.render()
            return response
        return run

    return [
        ("queue API (?reviewable=true, 50/page)", "queue-api",
         get(api, "/api/v1/changes/", {"reviewable": "true"}), floor(pending, 50)),
        ("admin change list (100/page)", "admin-list", get(admin, changelist, {}),
         floor(ChangeRequest.objects.all(), 100)),
        ("admin 'waiting for me' filter", "admin-waiting", get(admin, changelist, {"review": "waiting"}),
         floor(pending, 100)),
    ]


def statements(call: Callable[[], Any]) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        call()
    return len(captured.captured_queries)


CPU: dict[Callable[[], Any], list[float]] = {}  # this process's CPU ms per call, by callable


def timed(call: Callable[[], Any]) -> float:
    """Wall ms of one call; its CPU ms (this process only: not PostgreSQL's) go to CPU.
    On this shared machine the wall time includes waiting for a core; with SQLite the
    CPU time is the page's whole work, what an idle machine's wall time would be."""
    cpu, started = time.process_time(), time.perf_counter()
    call()
    wall = (time.perf_counter() - started) * 1000
    CPU.setdefault(call, []).append((time.process_time() - cpu) * 1000)
    return wall


def legacy_queue_ms(setup: Setup) -> tuple[float, int]:
    """The queue as it was before issue 14: narrow cheaply, then ask the policy about
    every candidate (3 statements each)."""
    from changes.models import ChangeRequest
    from changes.permissions import can_review
    from changes.selectors import changes_visible, targets_reviewable

    started = time.perf_counter()
    candidates = (changes_visible(user=setup.reviewer)
                  .filter(state=ChangeRequest.State.PENDING_APPROVAL, target__in=targets_reviewable(user=setup.reviewer))
                  .exclude(author=setup.reviewer))
    ids = [change.pk for change in candidates if can_review(setup.reviewer, change)]
    return (time.perf_counter() - started) * 1000, len(ids)


GOAL_MS = 150


def bench(args: argparse.Namespace, setup: Setup) -> None:
    from bench.stats import target

    measured = pages(setup)
    names = {label: name for label, name, _, _ in measured}
    for _, _, ours, reference in measured:  # warm-up: imports, templates, content types
        ours(), reference()
    print("SQL statements per request (warm):")
    for label, name, ours, reference in measured:
        count = statements(ours)
        print(f"  {label:40s} {count:4d}   (reference: {statements(reference)})")
        target(f"{name}-statements", value=count, unit="statements", goal="constant", met=None,
               database=setup.vendor)
    medians: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _, _ in measured}
    for run in range(1, args.runs + 1):
        CPU.clear()
        samples: dict[str, tuple[list[float], list[float]]] = {label: ([], []) for label, _, _, _ in measured}
        for round_ in range(args.rounds):
            for label, _, ours, reference in measured:
                first, second = (ours, reference) if round_ % 2 == 0 else (reference, ours)
                a, b = timed(first), timed(second)
                samples[label][0].append(a if first is ours else b)
                samples[label][1].append(b if first is ours else a)
        print(f"run {run}/{args.runs} ({args.rounds} rounds, interleaved):")
        for label, (ours, reference) in samples.items():
            mine, floor = statistics.median(ours), statistics.median(reference)
            medians[label].append((mine, floor))
            cpu = statistics.median(CPU[next(o for lb, _, o, _ in measured if lb == label)])
            print(f"  {label:40s} p50 {mine:7.1f} ms  p95 {p95(ours):7.1f} ms   (db floor p50 {floor:6.1f} ms, "
                  f"p95 {p95(reference):6.1f} ms)   ratio {mine / floor:5.2f}x   cpu p50 {cpu:6.1f} ms")
        for label, (ours, reference) in samples.items():
            target(f"{names[label]}-p50", value=statistics.median(ours), unit="ms", goal=f"< {GOAL_MS} ms",
                   met=statistics.median(ours) < GOAL_MS, run=run, p95=round(p95(ours), 1),
                   cpu_p50=round(statistics.median(CPU[next(o for lb, _, o, _ in measured if lb == label)]), 1),
                   floor_p50=round(statistics.median(reference), 1), database=setup.vendor,
                   changes=args.changes, pending=args.pending)
        if args.legacy:
            legacy, found = legacy_queue_ms(setup)
            print(f"  {'pre-issue-14 queue (can_review per change)':40s} {legacy:9.1f} ms once, {found} found")
    print(f"over {args.runs} runs (median of the run medians, [min - max]):")
    for label, pairs in medians.items():
        ours = [mine for mine, _ in pairs]
        ratios = [mine / floor for mine, floor in pairs]
        print(f"  {label:40s} p50 {statistics.median(ours):7.1f} ms [{min(ours):.1f} - {max(ours):.1f}]   "
              f"ratio {statistics.median(ratios):5.2f}x [{min(ratios):.2f} - {max(ratios):.2f}]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--pending", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=None, help="per run (15; 5 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="3 runs of 5 rounds (for make bench-quick); the same 100,000 / 5,000 unless given")
    parser.add_argument("--facets-always", action="store_true",
                        help="measure the admin with show_facets = ALWAYS (the pre-fix: a count per filter choice "
                             "on every view)")
    parser.add_argument("--legacy", action="store_true",
                        help="also time the pre-issue-14 queue once per run (minutes at 5,000 pending)")
    parser.add_argument("--no-analyze", action="store_true", help="leave the planner without statistics")
    parser.add_argument("--database-url", default=None, help="e.g. postgres://user@127.0.0.1:5432/name")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 5 if args.quick else 15
    started = time.perf_counter()
    tmpdir = Path(tempfile.mkdtemp(prefix="changegate-queue-bench-"))
    try:
        configure_environment(tmpdir, args.database_url)
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection
        call_command("migrate", verbosity=0)
        if args.facets_always:
            from django.contrib import admin

            from changes.models import ChangeRequest

            admin.site._registry[ChangeRequest].show_facets = admin.ShowFacets.ALWAYS
        setup = Setup(args, tmpdir)
        if not args.no_analyze:
            # Planner statistics and (PostgreSQL) the visibility map, as autovacuum keeps
            # them after a bulk insert: without the map every count reads the heap too
            # (3-10x slower). SQLite has no statistics until ANALYZE (or PRAGMA optimize)
            # runs; without them it sorts the whole list instead of walking the primary
            # key (see --no-analyze).
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
        vendor = connection.vendor if connection.vendor != "sqlite" else f"SQLite {connection.Database.sqlite_version}"
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; database {vendor}; {args.changes} changes, "
              f"{args.pending} pending, on {TARGETS} targets, seeded in {setup.seed_seconds:.1f} s"
              f"{', no ANALYZE' if args.no_analyze else ', ANALYZEd'}"
              f"{', admin facets on every view' if args.facets_always else ''}; "
              "ratio = ours / db floor", flush=True)
        setup.vendor = connection.vendor
        bench(args, setup)
        print(f"wall time {time.perf_counter() - started:.1f} s (seeding {setup.seed_seconds:.1f} s)")
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
