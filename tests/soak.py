"""The soak harness: the whole pipeline under a seeded random load, with faults,
for a bounded time. Shared by tests/changes/test_soak.py (which asserts) and
bench/soak_bench.py (which prints figures).

Everything crosses a real process boundary where production does: the API is
called over HTTP (`requests`, token auth) by engineer and reviewer personas; the
changes are applied by `celery worker` processes and swept by a `celery beat`
process, through a real redis-server, against real `named` servers. Faults come in
through the same doors an operator would see them: a named stopped while a change
bakes and started again on the same port, a worker killed with SIGKILL while it
holds a lease, redis killed and started empty on the same port, and outside
writes to zones (TSIG-signed RFC 2136 UPDATEs from dnspython, the way someone
with the key would drift a zone behind changegate's back).

Afterwards (`Soak.verify`) the invariants are read from the outside: every
change ended or is legitimately waiting; every zone, read by AXFR, is what the
applied changes say in their apply order (plus the outside writes); the audit
chain verifies; no 5xx; every alert that the audit log says was raised reached
the webhook or is a dead letter with a reason.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
import dns.zone
import requests

from dns_adapters.local_named import LocalNamed, default_zone_text, free_port

from .processes import CeleryBeat, CeleryWorker, RedisServer

# The change states, as strings (the harness reads them from the API and the DB).
ACTIVE = frozenset({"approved", "applying", "verifying", "rolling_back"})  # a worker owes it something
WAITING = frozenset({"draft", "pending_approval", "drifted"})  # a person owes it something
ENDED = frozenset({"applied", "apply_failed", "rolled_back", "rollback_failed", "rejected", "cancelled"})
# How a worker ends an attempt (the audit event's outcome, origin system), and the
# alert each raises (pipeline.execution: NOTIFY, approval_lapsed).
WORKER_ENDS = frozenset({"applied", "apply_failed", "rolled_back", "rollback_failed", "drifted"})

# Settings for every process of the soak (workers, beat; the web process in the
# bench). Short enough that a killed worker, a lost wake-up or a failed webhook is
# recovered within seconds. Names another helper has not added yet are ignored.
PROCESS_ENV = {
    "CHANGEGATE_LEASE_SECONDS": "3",
    "CHANGEGATE_SWEEP_SECONDS": "1",  # beat: re-publish lost or orphaned executions
    "CHANGEGATE_UNCLAIMED_AFTER_SECONDS": "1",
    "CHANGEGATE_RETRY_DELAY_SECONDS": "1",
    # A rollback keeps retrying while the DNS server is down (issue 10, item 5).
    "CHANGEGATE_ROLLBACK_RETRY_SECONDS": "60",
    # Notifications through the worker (not eager), retried quickly, dead-lettered after 4.
    "CHANGEGATE_NOTIFY_EAGER": "false",
    "CHANGEGATE_NOTIFY_MAX_ATTEMPTS": "4",
    "CHANGEGATE_NOTIFY_BACKOFF_SECONDS": "1",
    "CHANGEGATE_NOTIFY_BACKOFF_MAX_SECONDS": "2",
    "CHANGEGATE_NOTIFY_TIMEOUT_SECONDS": "2",
    "CHANGEGATE_NOTIFY_CLAIM_SECONDS": "4",
    "CHANGEGATE_NOTIFY_UNCLAIMED_AFTER_SECONDS": "2",
    "CHANGEGATE_NOTIFY_SWEEP_SECONDS": "1",
    "CHANGEGATE_OOB_SWEEP_SECONDS": "5",
}
BAKE_SECONDS = 1  # the ten load targets: rounds every 0.2 s
RESTART_BAKE_SECONDS = 4  # the restart target: long enough to stop named inside the bake
MAX_IN_FLIGHT = 8  # approvals wait while this many changes are owed work by a worker
DEAD_LETTER_PATH = "/hook/always-503"  # one target's webhook never answers 2xx


def poll_until(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.2) -> Any:
    """The predicate's first truthy value, or None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)  # poll interval while other processes work


def percentile(values: Iterable[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# ---------------------------------------------------------------------------
# DNS from the outside


Value = tuple[int, tuple[str, ...]] | None  # (ttl, sorted rdatas) or absent


@dataclass
class Zone:
    """One zone on one named, as the harness reads and drifts it."""

    name: str
    named: LocalNamed

    def _keyring(self) -> Any:
        return dns.tsigkeyring.from_text({self.named.key_name: self.named.secret})

    def axfr(self) -> dict[tuple[str, str], Value]:
        """Every RRset but the SOA, by (absolute owner, type)."""
        xfr = dns.query.xfr("127.0.0.1", self.name, port=self.named.port, keyring=self._keyring(),
                            keyname=self.named.key_name, keyalgorithm=dns.tsig.HMAC_SHA256, relativize=False,
                            lifetime=15)
        zone = dns.zone.from_xfr(xfr, relativize=False)
        state: dict[tuple[str, str], Value] = {}
        for owner, node in zone.nodes.items():
            for rdataset in node.rdatasets:
                if rdataset.rdtype == dns.rdatatype.SOA:
                    continue
                key = (owner.to_text().lower(), dns.rdatatype.to_text(rdataset.rdtype))
                state[key] = (rdataset.ttl, tuple(sorted(r.to_text() for r in rdataset)))
        return state

    def write(self, owner: str, value: str) -> bool:
        """An outside write (someone else with the key): replace `owner` A with `value`.
        True when named answered NOERROR (it is in the zone then)."""
        update = dns.update.UpdateMessage(self.name, keyring=self._keyring(), keyname=self.named.key_name,
                                          keyalgorithm=dns.tsig.HMAC_SHA256)
        update.replace(owner, 300, "A", value)
        try:
            response = dns.query.tcp(update, "127.0.0.1", port=self.named.port, timeout=5)
        except (OSError, dns.exception.DNSException):
            return False
        return response.rcode() == dns.rcode.NOERROR


def step_value(data: dict[str, Any] | None) -> Value:
    return None if data is None else (int(data["ttl"]), tuple(sorted(data["rdatas"])))


@dataclass(frozen=True)
class Write:
    """One write to one RRset: a changegate apply or rollback step (compare-and-swap
    on `before`), or an outside write (`before` unknown: it replaces whatever is there)."""

    before: Value
    after: Value
    what: str
    optional: bool = False  # may or may not have reached the zone (a rollback that failed)
    outside: bool = False


def explained(initial: Value, ours: list[Write], outside: list[Write], final: Value) -> bool:
    """Whether `final` is what the RRset holds after every one of `ours` in their
    order (each only when its `before` is live, as named enforces) interleaved
    somehow with the outside writes in theirs. A search over the interleavings,
    memoised: a few dozen writes per RRset at most."""
    seen: set[tuple[int, int, Value]] = set()

    def search(i: int, j: int, current: Value) -> bool:
        if (i, j, current) in seen:
            return False
        seen.add((i, j, current))
        if i == len(ours) and j == len(outside):
            return current == final
        if j < len(outside) and search(i, j + 1, outside[j].after):
            return True
        if i < len(ours):
            write = ours[i]
            if write.before == current and search(i + 1, j, write.after):
                return True
            if write.optional and search(i + 1, j, current):
                return True
        return False

    return search(0, 0, initial)


# ---------------------------------------------------------------------------
# The alert sink


class WebhookReceiver:
    """An HTTP server standing in for a target's alert webhook. Records every alert
    it accepted. With `flaky`, the first delivery of about a quarter of the alerts
    is answered 503 (decided per alert from the seed); DEAD_LETTER_PATH answers 503
    always."""

    def __init__(self, *, seed: int, flaky: bool) -> None:
        self.seed, self.flaky = seed, flaky
        self.lock = threading.Lock()
        self.accepted: list[dict[str, Any]] = []
        self.refused: Counter[str] = Counter()
        self.seen: set[str] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"unparseable": body[:200].decode(errors="replace")}
                status = receiver.decide(self.path, payload)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="soak-webhook", daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def decide(self, path: str, payload: dict[str, Any]) -> int:
        key = f"{payload.get('event')}:{payload.get('change')}:{payload.get('target')}"
        with self.lock:
            if path == DEAD_LETTER_PATH:
                self.refused[key] += 1
                return 503
            first = key not in self.seen
            self.seen.add(key)
            if self.flaky and first and random.Random(f"{self.seed}:{key}").random() < 0.25:
                self.refused[key] += 1
                return 503
            self.accepted.append(payload)
            return 200

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------
# The API client


class Persona:
    """One person with an API token. One `requests.Session` per thread."""

    def __init__(self, soak: Soak, user: Any, token: str) -> None:
        self.soak, self.user, self.token = soak, user, token
        self.local = threading.local()

    @property
    def username(self) -> str:
        return self.user.get_username()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             op: str = "") -> tuple[int, Any]:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
            session.headers["Authorization"] = f"Token {self.token}"
            with self.soak.lock:
                self.soak.sessions.append(session)
        url = self.soak.base_url + "/api/v1/" + path
        try:
            response = session.request(method, url, json=body, timeout=60)
        except requests.RequestException as exc:
            self.soak.record(op or path, 0, f"{method} {path}: {type(exc).__name__}: {exc}")
            return 0, None
        try:
            data = response.json()
        except ValueError:
            data = None
        detail = "" if response.status_code < 500 else f"{method} {path} -> {response.status_code}: " \
                                                       f"{response.text[:500]}"
        self.soak.record(op or path, response.status_code, detail)
        return response.status_code, data


# ---------------------------------------------------------------------------
# The soak


@dataclass
class Result:
    seconds: float
    workers: int
    ops: Counter[str] = field(default_factory=Counter)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    states: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # approval -> the worker ended the attempt, seconds
    attempts_ended: int = 0
    span: float = 0.0  # first approval -> last attempt ended, seconds
    drain: float = 0.0
    failures: list[str] = field(default_factory=list)  # why changes ended apply_failed / rollback_failed
    # Worker processes that exited without being killed by the soak. Not a failure of
    # the soak (the others carry the load, as a supervisor's restart would), but
    # reported: see the kombu note in verify_workers.
    exits: list[str] = field(default_factory=list)
    alerts: str = ""

    @property
    def changes_per_second(self) -> float:
        return self.attempts_ended / self.span if self.span else float("nan")

    def summary(self) -> str:
        lines = [
            f"soak: {self.seconds:.0f} s of load, {self.workers} workers, drained in {self.drain:.1f} s",
            f"  operations: {dict(sorted(self.ops.items()))}",
            f"  final states: {dict(sorted(self.states.items()))}",
            f"  attempts ended by a worker: {self.attempts_ended} in {self.span:.1f} s "
            f"= {self.changes_per_second:.2f}/s; approval -> end p50 {percentile(self.latencies, 50):.2f} s, "
            f"p95 {percentile(self.latencies, 95):.2f} s, max {max(self.latencies, default=float('nan')):.2f} s",
            f"  alerts: {self.alerts}",
            *(f"  fault: {fault}" for fault in self.faults),
            *(f"  ended badly: {failure}" for failure in self.failures[:20]),
            *(f"  worker exited by itself: {exit}" for exit in self.exits),
            *(f"  5xx: {error}" for error in self.server_errors[:20]),
            *(f"  transport: {error}" for error in self.transport_errors[:20]),
            *(f"  PROBLEM: {problem}" for problem in self.problems),
        ]
        return "\n".join(lines)


class Soak:
    """One soak run. `zones`: the ten load zones (on a named the caller runs); the
    soak starts the restart target's named, the webhook receiver, the workers and
    beat itself, and stops them in `close()`.

    `point_app`: called after redis restarted, for a publisher living in this process
    (the test's live_server thread); the bench's web process reconnects by itself."""

    def __init__(self, *, base_url: str, broker: RedisServer, named: LocalNamed, zones: list[str],
                 operator: Any, engineers: list[Any], reviewers: list[Any], seconds: float, workers: int = 2,
                 seed: int = 10, label: str = "soak", point_app: Callable[[], None] | None = None,
                 faults: bool = True, drivers: int = 2, auditor: Any = None) -> None:
        self.base_url, self.broker, self.seconds, self.worker_count = base_url.rstrip("/"), broker, seconds, workers
        self.seed, self.label, self.point_app, self.with_faults = seed, label, point_app, faults
        self.drivers = drivers  # threads sending the load, each as every persona in turn
        self.local = threading.local()  # each load thread's own seeded random generator
        self.operator = operator
        self.zones = [Zone(name, named) for name in zones]
        self.restart_zone = Zone(f"{label}-restart.test", LocalNamed(
            {f"{label}-restart.test": default_zone_text(f"{label}-restart.test", "www 300 IN A 192.0.2.10\n")}))
        self.engineer_users, self.reviewer_users = engineers, reviewers
        self.auditor_user = auditor  # a superuser: exports the whole chain through the API
        self.lock = threading.Lock()
        self.result = Result(seconds=seconds, workers=workers)
        self.outside: dict[tuple[str, tuple[str, str]], list[Write]] = defaultdict(list)  # (zone, key) -> writes
        self.counter = 0
        self.workers: list[CeleryWorker] = []
        self.beat: CeleryBeat | None = None
        self.webhook: WebhookReceiver | None = None
        self.targets: dict[str, Any] = {}  # zone name -> Target
        self.initial: dict[str, dict[tuple[str, str], Value]] = {}
        self.authors: dict[int, Persona] = {}
        self.restart_change: int | None = None
        self.sessions: list[requests.Session] = []
        self.killed: set[int] = set()  # worker pids the soak killed itself

    # -- set-up ---------------------------------------------------------------

    def setup(self) -> None:
        from rest_framework.authtoken.models import Token

        from changes.models import Notification  # noqa: F401 - the flaky webhook needs the outbox (issue 10)
        from changes.permissions import FOUR_EYES_ROLES, target_role_grant
        from changes.services import target_register, target_update_policy

        self.restart_zone.named.start()
        self.webhook = WebhookReceiver(seed=self.seed, flaky=True).start()
        for index, zone in enumerate([*self.zones, self.restart_zone]):
            target = target_register(actor=self.operator, name=zone.name, config={
                "zone": zone.name, "primary": zone.named.primary, "tsig_key_file": str(zone.named.key_file),
                "timeout": 2})
            webhook = self.webhook.url(DEAD_LETTER_PATH if index == len(self.zones) - 1 else "/hook")
            bake = RESTART_BAKE_SECONDS if zone is self.restart_zone else BAKE_SECONDS
            self.targets[zone.name] = target_update_policy(actor=self.operator, target=target, bake_seconds=bake,
                                                           bake_max_seconds=0, webhook_url=webhook)
            for role, users in (("engineer", self.engineer_users), ("reviewer", self.reviewer_users)):
                for user in users:
                    target_role_grant(actor=None, target=target, role=role, user=user,
                                      bootstrap=role in FOUR_EYES_ROLES, reason="soak set-up")
            self.initial[zone.name] = zone.axfr()
        self.engineers = [Persona(self, u, Token.objects.get_or_create(user=u)[0].key) for u in self.engineer_users]
        self.reviewers = [Persona(self, u, Token.objects.get_or_create(user=u)[0].key) for u in self.reviewer_users]
        self.auditor = (Persona(self, self.auditor_user, Token.objects.get_or_create(user=self.auditor_user)[0].key)
                        if self.auditor_user is not None else None)
        self.beat = CeleryBeat(self.broker.url, env=PROCESS_ENV).start()
        for _ in range(self.worker_count):
            self.start_worker()

    def start_worker(self) -> CeleryWorker:
        from config.celery_app import app

        worker = CeleryWorker(self.broker.url, name=f"{self.label}-w{len(self.workers) + 1}", env=PROCESS_ENV).start()
        self.workers.append(worker)
        worker.wait_ready(app)
        return worker

    def close(self) -> None:
        # Keep-alive connections hold a web server thread, and its database
        # connection, until the client hangs up.
        for session in self.sessions:
            session.close()
        for worker in self.workers:
            worker.stop()
        if self.beat is not None:
            self.beat.stop()
        if self.webhook is not None:
            self.webhook.stop()
        self.restart_zone.named.stop()

    # -- bookkeeping ----------------------------------------------------------

    def record(self, op: str, status: int, detail: str) -> None:
        with self.lock:
            self.result.statuses[(op, status)] += 1
            if status == 0:
                self.result.transport_errors.append(detail)
            elif status >= 500:
                self.result.server_errors.append(detail)

    @property
    def rng(self) -> random.Random:
        rng = getattr(self.local, "rng", None)
        if rng is None:
            rng = self.local.rng = random.Random(f"{self.seed}:{threading.current_thread().name}")
        return rng

    def count(self, op: str) -> None:
        with self.lock:
            self.result.ops[op] += 1

    def next_number(self) -> int:
        with self.lock:
            self.counter += 1
            return self.counter

    def my_changes(self):  # noqa: ANN201 - a QuerySet
        from changes.models import ChangeRequest

        return ChangeRequest.objects.filter(target__in=self.targets.values())

    def pick(self, states: Iterable[str], *, load_only: bool = True) -> Any:
        changes = self.my_changes().filter(state__in=list(states))
        if load_only:
            changes = changes.exclude(target=self.targets[self.restart_zone.name])
        ids = list(changes.values_list("pk", flat=True)[:200])
        return self.rng.choice(ids) if ids else None

    # -- operations (each through the API, as a persona) ----------------------

    def propose(self, zone: Zone, *, author: Persona | None = None, failing_check: bool | None = None,
                submit: bool | None = None) -> int | None:
        n = self.next_number()
        author = author or self.rng.choice(self.engineers)
        # www is shared by every change on the zone (so the apply order matters); the
        # second name is the change's own (outside drifts go there).
        items = [{"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": [f"198.18.{n >> 8}.{n & 255}"]},
                 {"op": "upsert", "name": f"{self.label}-c{n}", "type": "A", "ttl": 300,
                  "records": [f"198.18.{n >> 8}.{n & 255}"]}]
        body: dict[str, Any] = {"target": zone.name, "title": f"soak change {n}", "reason": "soak test", "items": items}
        if failing_check if failing_check is not None else self.rng.random() < 0.15:
            # A tcp check to a port nobody listens on: the bake fails, the change rolls back.
            body["health_checks"] = [{"type": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": 0.5}]
        status, data = author.call("POST", "changes/", body, op="propose")
        if status != 201:
            return None
        change_id = data["id"]
        with self.lock:
            self.authors[change_id] = author
        if submit if submit is not None else self.rng.random() < 0.9:
            author.call("POST", f"changes/{change_id}/submit/", op="submit")
        return change_id

    def approve(self, change_id: int, reviewer: Persona | None = None) -> int:
        reviewer = reviewer or self.rng.choice(self.reviewers)
        status, data = reviewer.call("GET", f"changes/{change_id}/", op="read")
        if status != 200:
            return status
        status, _ = reviewer.call("POST", f"changes/{change_id}/approve/", {"fingerprint": data["fingerprint"]},
                                  op="approve")
        return status

    def replan(self, change_id: int) -> None:
        author = self.authors.get(change_id) or self.engineers[0]
        status, data = author.call("POST", f"changes/{change_id}/plan/", op="replan")
        if status == 200 and data.get("state") in ("drifted", "draft"):
            author.call("POST", f"changes/{change_id}/submit/", op="submit")

    def drift(self, change_id: int) -> None:
        """Someone with the key writes the change's own name behind changegate's back."""
        from changes.models import ChangeRequest

        change = ChangeRequest.objects.select_related("target").get(pk=change_id)
        zone = next(z for z in [*self.zones, self.restart_zone] if z.name == change.target.name)
        own = next((s for s in (change.plan or {}).get("steps", []) if not s["name"].startswith("www.")), None)
        if own is None:
            return
        n = self.next_number()
        value = f"198.19.{n >> 8}.{n & 255}"
        owner = own["name"]
        with self.lock:
            written = zone.write(owner, value)
            if written:
                self.outside[(zone.name, (owner, "A"))].append(
                    Write(before=None, after=(300, (value,)), what=f"outside write {value}", outside=True))
        if written:
            self.count("drift")

    def step(self) -> None:
        """One operation of the mix."""
        from changes.models import ChangeRequest

        roll = self.rng.random()
        in_flight = self.my_changes().filter(state__in=list(ACTIVE)).count()
        if roll < 0.30:
            self.count("propose")
            self.propose(self.rng.choice(self.zones))
        elif roll < 0.62:
            change_id = self.pick(["pending_approval"])
            if change_id is not None and in_flight < MAX_IN_FLIGHT:
                self.count("approve")
                if self.approve(change_id) == 409:
                    self.replan(change_id)  # usually plan_stale: www moved since the plan was read
        elif roll < 0.68:
            change_id = self.pick(["draft", "pending_approval", "approved", "drifted"])
            if change_id is not None:
                self.count("cancel")
                author = self.authors.get(change_id) or self.engineers[0]
                author.call("POST", f"changes/{change_id}/cancel/", {"reason": "soak: no longer needed"}, op="cancel")
        elif roll < 0.71:
            change_id = self.pick(["pending_approval"])
            if change_id is not None:
                self.count("reject")
                self.rng.choice(self.reviewers).call("POST", f"changes/{change_id}/reject/",
                                                     {"comment": "soak: not like this"}, op="reject")
        elif roll < 0.80:
            # Prefer an approved change still waiting its turn: the worker's re-plan or
            # the compare-and-swap must catch it.
            change_id = self.pick(["approved"]) or self.pick(["pending_approval", "applying", "verifying"])
            if change_id is not None:
                self.drift(change_id)
        elif roll < 0.90:
            change_id = self.pick(["drifted"])
            if change_id is not None:
                self.count("replan")
                self.replan(change_id)
        else:
            self.count("read")
            persona = self.rng.choice([*self.engineers, *self.reviewers])
            change_id = self.pick(list(ChangeRequest.State.values))
            if change_id is not None and self.rng.random() < 0.5:
                persona.call("GET", f"changes/{change_id}/evidence/", op="evidence")
            else:
                persona.call("GET", "changes/?page=1", op="list")

    # -- faults ---------------------------------------------------------------

    def restart_named_mid_bake(self) -> None:
        """A change on the restart target is approved; while it bakes its named is
        stopped, and started again on the same port once the bake noticed."""
        from changes.models import ChangeRequest

        author, reviewer = self.engineers[0], self.reviewers[0]
        change_id = self.propose(self.restart_zone, author=author, failing_check=False, submit=True)
        if change_id is None or self.approve(change_id, reviewer) != 200:
            self.result.problems.append(f"named restart: could not get a change approved on {self.restart_zone.name}")
            return
        self.restart_change = change_id

        def state() -> str:
            return ChangeRequest.objects.values_list("state", flat=True).get(pk=change_id)

        if not poll_until(lambda: state() == "verifying", timeout=30, interval=0.05):
            self.result.problems.append(f"named restart: change #{change_id} never baked (it is {state()})")
            return
        named = self.restart_zone.named
        port = named.port
        named.stop(cleanup=False)
        poll_until(lambda: state() != "verifying", timeout=20, interval=0.05)
        left = state()
        named.start(port=port)
        self.result.faults.append(f"named restart: stopped while #{change_id} baked; it was {left} when named came "
                                  f"back on port {port}")

    def kill_worker(self) -> None:
        """SIGKILL the first worker while it holds a lease (if it gets one in time)."""
        from changes.models import Execution

        victim = self.workers[0]
        assert victim.process is not None
        pid = victim.process.pid
        holding = poll_until(lambda: Execution.objects.filter(lease_owner__endswith=f":{pid}",
                                                              lease_expires_at__isnull=False,
                                                              finished_at__isnull=True).values_list("pk", flat=True)
                             .first(), timeout=15, interval=0.05)
        self.killed.add(pid)  # first: the supervisor must not replace this one as well
        os.kill(pid, signal.SIGKILL)
        victim.wait_dead()
        self.start_worker()
        self.result.faults.append(f"kill -9 of worker pid {pid} " + (f"holding execution #{holding}" if holding
                                                                       else "(idle: no lease within 15 s)"))

    def restart_redis(self) -> None:
        self.broker.restart_empty()
        if self.point_app is not None:
            self.point_app()
        self.result.faults.append(f"redis restarted empty on port {self.broker.port}")

    def chaos(self, start: float) -> None:
        from django.db import connection

        try:
            schedule = [(0.2, self.restart_named_mid_bake), (0.45, self.kill_worker), (0.65, self.restart_redis)]
            for at, fault in schedule:
                delay = start + at * self.seconds - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # the fault's place in the schedule, not synchronization
                fault()
        except Exception as exc:  # reported, never silently lost with the thread
            self.result.problems.append(f"fault injection failed: {type(exc).__name__}: {exc}")
        finally:
            connection.close()

    # -- the run --------------------------------------------------------------

    def load(self, start: float) -> None:
        from django.db import connection

        try:
            while time.monotonic() - start < self.seconds:
                self.step()
        except Exception as exc:  # reported, never silently lost with the thread
            self.result.problems.append(f"{threading.current_thread().name} stopped: {type(exc).__name__}: {exc}")
        finally:
            connection.close()

    def run(self) -> Result:
        start = time.monotonic()
        threads = [threading.Thread(target=self.load, args=(start,), name=f"soak-load-{i}")
                   for i in range(self.drivers)]
        if self.with_faults:
            threads.append(threading.Thread(target=self.chaos, args=(start,), name="soak-chaos"))
        done = threading.Event()
        supervisor = threading.Thread(target=self.supervise, args=(done,), name="soak-supervisor")
        supervisor.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        drained = time.monotonic()
        self.drain()
        done.set()
        supervisor.join()
        self.result.drain = time.monotonic() - drained
        self.measure()
        return self.result

    def supervise(self, done: threading.Event) -> None:
        """What systemd's Restart=always does for production workers (README, "Running
        it for real"): a worker that exited by itself is replaced. With kombu 5.7 /
        redis-py 8 a worker holding unacked messages when redis goes away can die in
        its reconnect (see verify_workers); nothing may be lost when it does, which the
        soak's checks then prove. The exit itself is reported in Result.exits."""
        from django.db import connection

        replaced: set[int] = set()
        try:
            while not done.wait(0.5):  # a poll interval, not synchronization
                for worker in list(self.workers):
                    process = worker.process
                    if (process is not None and process.poll() is not None and process.pid not in self.killed
                            and process.pid not in replaced):
                        replaced.add(process.pid)
                        self.start_worker()
        except Exception as exc:  # reported, never silently lost with the thread
            self.result.problems.append(f"supervisor stopped: {type(exc).__name__}: {exc}")
        finally:
            connection.close()

    def drain(self, timeout: float = 120) -> None:
        """Wait until no change is owed work by a worker and no alert is still pending."""
        from changes.models import Notification

        if not poll_until(lambda: not self.my_changes().filter(state__in=list(ACTIVE)).exists(), timeout=timeout):
            stuck = list(self.my_changes().filter(state__in=list(ACTIVE)).values_list("pk", "state"))
            self.result.problems.append(f"changes still owed work {timeout:.0f} s after the load stopped: {stuck}")
        mine = Notification.objects.filter(target__in=self.targets.values())
        if not poll_until(lambda: not mine.filter(state=Notification.State.PENDING).exists(), timeout=60):
            pending = list(mine.filter(state=Notification.State.PENDING).values_list("pk", "event", "attempts"))
            self.result.problems.append(f"notifications still pending 60 s after the drain: {pending}")

    def measure(self) -> None:
        from changes.models import AuditEvent, Notification

        self.result.states = Counter(self.my_changes().values_list("state", flat=True))
        for change in self.my_changes().filter(state__in=["apply_failed", "rollback_failed"]):
            execution = change.execution
            self.result.failures.append(f"#{change.pk} {change.state}: {execution.error if execution else '?'}")
        rows = Counter(Notification.objects.filter(target__in=self.targets.values()).values_list("state", flat=True))
        assert self.webhook is not None
        refused = sum(self.webhook.refused.values())
        self.result.alerts = (f"webhook accepted {len(self.webhook.accepted)}, refused {refused};"
                              f" outbox rows {dict(rows)}")
        approved_at: dict[int, float] = {}
        first = last = None
        events = AuditEvent.objects.filter(target__in=self.targets.values()).order_by("seq")
        for change_id, action, outcome, origin, created in events.values_list(
                "change_id", "action", "outcome", "origin", "created_at"):
            if action == "change_approved":
                approved_at[change_id] = created.timestamp()
                first = created.timestamp() if first is None else first
            elif origin == "system" and change_id in approved_at and (
                    outcome in WORKER_ENDS or action == "approval_lapsed"):
                self.result.latencies.append(created.timestamp() - approved_at.pop(change_id))
                self.result.attempts_ended += 1
                last = created.timestamp()
        self.result.span = (last - first) if first is not None and last is not None else 0.0

    # -- the invariants -------------------------------------------------------

    def verify(self) -> list[str]:
        problems = list(self.result.problems)
        if self.result.server_errors:
            problems.append(f"{len(self.result.server_errors)} responses were 5xx")
        if self.result.transport_errors:
            problems.append(f"{len(self.result.transport_errors)} requests got no response")
        problems += self.verify_states()
        problems += self.verify_zones()
        problems += self.verify_audit()
        problems += self.verify_notifications()
        problems += self.verify_workers()
        problems += self.verify_restart()
        self.result.problems = problems
        return problems

    def verify_states(self) -> list[str]:
        odd = [(pk, state) for pk, state in self.my_changes().values_list("pk", "state")
               if state not in ENDED | WAITING]
        return [f"changes neither ended nor legitimately waiting: {odd}"] if odd else []

    def verify_zones(self) -> list[str]:
        """Each zone, read by AXFR, is its initial content with every applied change's
        steps in apply order (audit order; rollbacks put `before` back), plus the
        outside writes somewhere in between."""
        from changes.models import AuditEvent, ChangeRequest

        problems = []
        for zone in [*self.zones, self.restart_zone]:
            target = self.targets[zone.name]
            ours: dict[tuple[str, str], list[Write]] = defaultdict(list)
            plans = dict(ChangeRequest.objects.filter(target=target).values_list("pk", "plan"))
            events = AuditEvent.objects.filter(change__target=target).order_by("seq")
            for change_id, action, outcome, payload in events.values_list("change_id", "action", "outcome",
                                                                          "payload"):
                steps = (plans.get(change_id) or {}).get("steps", [])
                if outcome == "verifying":  # applying -> verifying: the plan was sent and accepted
                    for s in steps:
                        ours[(s["name"], s["type"])].append(
                            Write(step_value(s["before"]), step_value(s["after"]), f"#{change_id} applied"))
                elif outcome in ("rolled_back", "rollback_failed"):
                    # A rollback that failed may still have reached the zone (it did not verify).
                    for s in reversed(steps):
                        ours[(s["name"], s["type"])].append(
                            Write(step_value(s["after"]), step_value(s["before"]), f"#{change_id} {outcome}",
                                  optional=outcome == "rollback_failed"))
            try:
                live = zone.axfr()
            except Exception as exc:
                problems.append(f"{zone.name}: AXFR failed: {type(exc).__name__}: {exc}")
                continue
            initial = self.initial[zone.name]
            keys = set(initial) | set(live) | set(ours) | {key for (name, key) in self.outside if name == zone.name}
            for key in sorted(keys):
                outside = self.outside.get((zone.name, key), [])
                if not explained(initial.get(key), ours.get(key, []), outside, live.get(key)):
                    history = [f"{w.what}: {w.before} -> {w.after}" for w in ours.get(key, [])]
                    problems.append(f"{zone.name} {key}: holds {live.get(key)}, which the applied changes do not "
                                    f"explain (initially {initial.get(key)}; changegate wrote {history}; "
                                    f"outside writes {[w.after for w in outside]})")
        return problems

    def verify_audit(self) -> list[str]:
        from audit.chain import chain_verify
        from changes.models import AuditEvent

        problems = []
        broken = chain_verify(list(AuditEvent.objects.order_by("seq")))
        if broken is not None:
            problems.append(f"the audit chain breaks at seq {broken}")
        if self.auditor is not None:
            # The auditor's way: the whole chain exported through the API, checked offline.
            from changegate_audit.verify import verify_bytes

            before = AuditEvent.objects.count()  # beat's sweeps may add more meanwhile
            session = requests.Session()
            session.headers["Authorization"] = f"Token {self.auditor.token}"
            with session:
                response = session.get(f"{self.base_url}/api/v1/audit/export/", params={"format": "jsonl"}, timeout=120)
            self.record("export", response.status_code, "" if response.status_code < 500 else response.text[:500])
            checked = verify_bytes(response.content) if response.status_code == 200 else None
            if checked is None or not checked.ok or checked.events < before:
                report = checked.report() if checked is not None else response.text[:500]
                problems.append(f"the exported audit log does not verify: HTTP {response.status_code}: {report}")
        return problems

    def expected_alerts(self) -> set[tuple[str, int]]:
        """(event, change) of every alert the audit log says was raised on the soak's targets."""
        from changes.models import AuditEvent

        expected = set()
        events = AuditEvent.objects.filter(change__target__in=self.targets.values())
        for change_id, action, outcome, origin in events.values_list("change_id", "action", "outcome", "origin"):
            if action == "change_approved":
                expected.add(("approved", change_id))
            elif action == "approval_lapsed":
                expected.add(("approval_lapsed", change_id))
            elif origin == "system" and outcome in WORKER_ENDS:
                expected.add((outcome, change_id))
        return expected

    def verify_notifications(self) -> list[str]:
        """No lost alert: every alert raised reached the webhook, or is a dead letter
        with a reason; and every outbox row ended delivered or dead-lettered."""
        from changes.models import Notification

        assert self.webhook is not None
        problems = []
        rows = Notification.objects.filter(target__in=self.targets.values(), channel=Notification.Channel.WEBHOOK)
        received = {(p.get("event"), p.get("change")) for p in self.webhook.accepted}
        dead = {(event, change_id): error for event, change_id, error in
                rows.filter(state=Notification.State.FAILED).values_list("event", "change_id", "last_error")}
        lost = sorted((e for e in self.expected_alerts() if e not in received and e not in dead), key=str)
        if lost:
            problems.append(f"{len(lost)} alerts raised but neither delivered nor dead-lettered: {lost[:20]}")
        silent = [key for key, error in dead.items() if not error.strip()]
        if silent:
            problems.append(f"dead letters without a reason: {silent[:20]}")
        unfinished = list(rows.exclude(state__in=[Notification.State.DELIVERED, Notification.State.FAILED])
                          .values_list("pk", "event", "state"))
        if unfinished:
            problems.append(f"notification rows neither delivered nor dead-lettered: {unfinished[:20]}")
        dead_target = self.zones[-1].name
        if not rows.filter(target__name=dead_target, state=Notification.State.FAILED).exists() and \
                rows.filter(target__name=dead_target).exists():
            problems.append(f"the webhook of {dead_target} never answers 2xx, yet nothing was dead-lettered")
        return problems

    def verify_workers(self) -> list[str]:
        """A task that raised is a crash (the pipeline handles its own errors).

        A worker process that exited by itself is reported in `Result.exits`, not
        failed: with kombu 5.7 / redis-py 8, a solo worker holding unacked messages
        when redis goes away can die in its reconnect ("Unrecoverable error:
        AttributeError: 'NoneType' object has no attribute 'hostname'" from
        kombu's redis `_connparams` while restoring them). Production runs workers
        under a supervisor that restarts them; the soak's other workers carry on."""
        problems = []
        for worker in self.workers:
            process = worker.process
            if process is not None and process.poll() is not None and process.pid not in self.killed:
                last = [line for line in worker.log.read_text(errors="replace").splitlines()
                        if "CRITICAL" in line or "Unrecoverable" in line][-1:]
                self.result.exits.append(f"{worker.name} (pid {process.pid}, exit {process.returncode}): {last}")
            text = worker.log.read_text(errors="replace")
            crashes = [line for line in text.splitlines() if "raised unexpected" in line]
            if crashes:
                problems.append(f"worker {worker.name}: {len(crashes)} tasks raised: {crashes[:3]}")
        return problems

    def verify_restart(self) -> list[str]:
        """The change baking while its DNS server restarted: the server came back, so
        the rollback (if the bake failed) must have been retried until it went through
        (issue 10, item 5), never left rollback_failed."""
        from changes.models import ChangeRequest

        if self.restart_change is None:
            return []
        state = ChangeRequest.objects.values_list("state", flat=True).get(pk=self.restart_change)
        if state not in ("applied", "rolled_back"):
            return [f"change #{self.restart_change}, baking while its named restarted, ended {state}"]
        return []
