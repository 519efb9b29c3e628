"""Health checks as long as the lease (issue 10, item 4), through real Celery worker
processes, a real named and a slow HTTP endpoint on loopback.

The test settings give a 3 s lease and a 2.5 s round deadline. Nine http checks of
2.4 s each used to run eight at a time, so a round outlasted the lease: a second
worker took the lease over, the first lost its round, and the two took turns for
ever (the change stayed `verifying`, every later change on the target waited).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings

from changes.models import ChangeRequest, CheckResult, Execution
from tests.changes.test_worker import approve, broker, propose, wait_terminal, worker, www  # noqa: F401 - fixtures

pytestmark = [pytest.mark.django_db, pytest.mark.named]
# Real commits for the tests with worker processes: they read and write the database
# through their own connections.
with_workers = pytest.mark.django_db(transaction=True)
State = ChangeRequest.State

NINE = 9
TIMEOUT = 2.4  # inside the 2.5 s round deadline of the test settings
SLOW = 1.8  # /slow answers after this: inside the timeout, but two waves of it outlast the lease


class _Slow(BaseHTTPRequestHandler):
    """/slow answers 200 after SLOW seconds; /hang answers only when the test ends;
    /drip sends its body a byte at a time, so no single read ever times out."""

    release: threading.Event

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/drip"):
            self._drip()
            return
        if self.path.startswith("/slow"):
            self.release.wait(SLOW)  # the server's own delay, not a test synchronization
            status = 200
        else:
            self.release.wait(60)
            status = 503
        body = b"slow"
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the check gave up and closed the connection
            pass


    def _drip(self) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.flush()
            for _ in range(1000):
                if self.release.wait(0.5):  # the server's pace; stops when the test ends
                    return
                self.wfile.write(b".")
                self.wfile.flush()
        except OSError:
            pass


@pytest.fixture
def slow_web() -> Iterator[str]:
    handler = type("Slow", (_Slow,), {"release": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    handler.release.set()
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def target(dns_target, staff):
    from changes.services import target_update_policy

    return target_update_policy(actor=staff, target=dns_target, bake_seconds=0)


def nine(url: str) -> list[dict]:
    return [{"type": "http", "url": url, "timeout": TIMEOUT} for _ in range(NINE)]


def rounds_of(change) -> dict[int, list[CheckResult]]:
    execution = Execution.objects.get(change=change)
    by_round: dict[int, list[CheckResult]] = {}
    for row in CheckResult.objects.filter(execution=execution, phase="apply").order_by("round", "pk"):
        by_round.setdefault(row.round, []).append(row)
    return by_round


@with_workers
def test_slow_checks_near_the_lease_end_applied_and_the_next_change_follows(
        author, reviewer, target, worker, slow_web):
    assert settings.CHANGEGATE_LEASE_SECONDS == 3 and settings.CHANGEGATE_CHECK_ROUND_SECONDS == 2.5
    worker()
    worker()
    first = approve(reviewer, propose(author, target, "192.0.2.71", health_checks=nine(f"{slow_web}/slow")))
    items = [{"op": "upsert", "name": "api", "type": "A", "ttl": 300, "records": ["192.0.2.72"]}]
    from changes.services import change_create, change_submit

    second = change_create(actor=author, target=target, title="t", reason="r", items=items)
    second = approve(reviewer, change_submit(actor=author, change=second))
    # The sweep runs meanwhile, as beat would: it is what handed the lease around.
    assert wait_terminal(first, timeout=45, sweep=True) == State.APPLIED
    assert wait_terminal(second, timeout=30, sweep=True) == State.APPLIED
    assert www(target) == ("192.0.2.71",)
    rounds = rounds_of(first)
    # One round, unless a loaded machine pushed a check past its timeout once (the
    # bake forgives a single failed round); every round is stored, whole.
    assert list(rounds) in ([1], [1, 2])
    assert all(len(rows) == 1 + NINE for rows in rounds.values())
    assert [(row.kind, row.ok) for row in rounds[max(rounds)]] == [("verify", True)] + [("http", True)] * NINE
    assert Execution.objects.get(change=first).token == 1  # one claim: nobody took the lease over


@with_workers
def test_checks_that_hang_fail_within_the_round_and_roll_back(author, reviewer, target, worker, slow_web):
    before = www(target)
    worker()
    worker()
    change = approve(reviewer, propose(author, target, "192.0.2.73", health_checks=nine(f"{slow_web}/hang")))
    assert wait_terminal(change, timeout=45, sweep=True) == State.ROLLED_BACK
    assert www(target) == before
    rounds = rounds_of(change)
    assert list(rounds) == [1, 2]  # two failed rounds: the failure threshold
    for rows in rounds.values():
        assert [(row.kind, row.ok) for row in rows] == [("verify", True)] + [("http", False)] * NINE
        assert all("timed out" in row.detail.lower() for row in rows[1:]), [row.detail for row in rows]
    assert Execution.objects.get(change=change).token == 1


@with_workers
def test_the_heartbeat_alone_keeps_a_round_longer_than_the_lease(author, reviewer, target, worker, slow_web):
    # Misconfigured on purpose for these workers: a 6 s round deadline over a 3 s lease.
    # The dripping body outlives every check's own timeout, so each round lasts the full
    # 6 s; only the heartbeat renews the lease meanwhile. Without it the second worker
    # takes the attempt over, and the two hand it back and forth for ever.
    before = www(target)
    worker(CHANGEGATE_CHECK_ROUND_SECONDS="6")
    worker(CHANGEGATE_CHECK_ROUND_SECONDS="6")
    checks = [{"type": "http", "url": f"{slow_web}/drip", "contains": "needle", "timeout": 2}]
    change = approve(reviewer, propose(author, target, "192.0.2.75", health_checks=checks))
    assert wait_terminal(change, timeout=60, sweep=True) == State.ROLLED_BACK
    assert www(target) == before
    rounds = rounds_of(change)
    assert list(rounds) == [1, 2]
    assert [[row.detail for row in rows[1:]] for rows in rounds.values()] == [["timed out at round deadline (6s)"]] * 2
    assert Execution.objects.get(change=change).token == 1  # one claim, kept for 12 s by a 3 s lease


# ---------------------------------------------------------------------------
# Validation: a check set that cannot finish inside the round deadline is refused


def api_client(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


def post_change(client, target, health_checks):
    body = {"target": target.pk, "title": "t", "reason": "r", "health_checks": health_checks,
            "items": [{"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": ["192.0.2.74"]}]}
    return client.post("/api/v1/changes/", body, format="json")


def errors_of(response) -> dict[str, str]:
    return {e["field"]: e["message"] for e in response.json()["errors"]}


def test_a_check_timeout_above_the_round_deadline_is_refused_naming_the_field_and_limit(author, target):
    checks = [{"type": "tcp", "host": "127.0.0.1", "port": 443, "timeout": 1},
              {"type": "http", "url": "http://127.0.0.1/health", "timeout": 3}]
    response = post_change(api_client(author), target, checks)
    assert response.status_code == 400, response.json()
    errors = errors_of(response)
    assert list(errors) == ["health_checks[1].timeout"]
    assert "2.5" in errors["health_checks[1].timeout"]  # the limit: CHANGEGATE_CHECK_ROUND_SECONDS
    assert not ChangeRequest.objects.exists()


def test_a_check_timeout_at_the_round_deadline_is_accepted(author, target):
    checks = [{"type": "http", "url": "http://127.0.0.1/health", "timeout": 2.5}] * 3
    response = post_change(api_client(author), target, checks)
    assert response.status_code == 201, response.json()


def test_more_checks_than_a_round_runs_at_once_are_refused(author, target):
    from pipeline.check_specs import MAX_CHECKS

    checks = [{"type": "tcp", "host": "127.0.0.1", "port": 443, "timeout": 1}] * (MAX_CHECKS + 1)
    response = post_change(api_client(author), target, checks)
    assert response.status_code == 400, response.json()
    assert str(MAX_CHECKS) in errors_of(response)["health_checks"]


def test_a_target_with_a_check_above_the_round_deadline_is_refused(staff, named_server, fresh_zone):
    from changes.models import Target

    body = {"name": fresh_zone, "config": {"zone": fresh_zone, "primary": named_server.primary,
                                           "tsig_key_file": str(named_server.key_file), "timeout": 3},
            "health_checks": [{"type": "tcp", "host": "127.0.0.1", "port": 443, "timeout": 30}]}
    response = api_client(staff).post("/api/v1/targets/", body, format="json")
    assert response.status_code == 400, response.json()
    assert "health_checks[0].timeout" in errors_of(response)
    assert not Target.objects.filter(name=fresh_zone).exists()
