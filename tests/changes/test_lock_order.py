"""One lock order (changes/locking.py) under concurrent users and a baking worker
(issue 10, item 2), and the bounded retry of a whole transaction on a deadlock or
serialization failure.

The deadlock this reproduces: an API call locks its change and the target, then
waits for the audit chain head; the worker's check-round writer holds the head and,
when it commits, PostgreSQL checks the audit event's foreign key to the target,
which takes a KEY SHARE lock on the target row (Django's foreign keys are
DEFERRABLE INITIALLY DEFERRED, so that lock comes at COMMIT, after the head)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg.errors
import pytest
from django.db import OperationalError, connection, connections, transaction
from rest_framework.test import APIClient

from approvals.policy import change_approve
from audit.chain import chain_verify
from changes.errors import Contention
from changes.locking import RETRY_ATTEMPTS, retry_on_contention
from changes.models import AuditEvent, ChangeRequest, CheckResult
from changes.services import change_create, change_submit, target_update_policy
from pipeline import check_rounds as rounds_module  # where the check-round writer appends its event
from pipeline.checks import CheckOutcome
from pipeline.execution import execution_claim
from pipeline.run import _store_round
from tests.factories import WWW

# Real commits: threads with their own connections race for the locks, and
# retry_on_contention retries only when it owns the outermost transaction.
pytestmark = [pytest.mark.django_db(transaction=True)]
on_postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="row locks and truly concurrent writers are PostgreSQL's; SQLite serializes whole-database writes",
)
State = ChangeRequest.State
DEADLINE = 30.0  # seconds any wait below may take before the test fails instead of hanging


def item(n: int) -> list[dict[str, Any]]:
    return [{"op": "upsert", "name": f"host{n}", "type": "A", "ttl": 300, "records": [f"192.0.2.{n % 250 + 1}"]}]


@pytest.fixture
def baking(dns_target, staff, author, reviewer):
    """A change the worker holds the lease on, as while it bakes, and the lease."""
    target = target_update_policy(actor=staff, target=dns_target, bake_seconds=3600)
    change = change_create(actor=author, target=target, title="bake", reason="r", items=WWW)
    change = change_submit(actor=author, change=change)
    change = change_approve(actor=reviewer, change=change, fingerprint=change.fingerprint)
    lease = execution_claim(execution_id=change.execution.pk, worker="baker", lease_seconds=3600)
    assert lease is not None
    return change, lease


def outcomes(n: int) -> list[CheckOutcome]:
    return [CheckOutcome(name=f"check {n}", kind="dns", ok=True, detail="ok", duration_ms=1)]


def in_thread(work: Callable[[], Any], results: list[Any]) -> threading.Thread:
    """Run `work` on its own thread (and so its own database connection), keeping its
    result or exception."""

    def run() -> None:
        try:
            results.append(work())
        except BaseException as exc:  # noqa: BLE001 - inspected by the test thread
            results.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)  # polling a condition another process reports; not a guess at timing


def backends_waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND datname = current_database()")
        return cursor.fetchone()[0]


def deadlocks_retried(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What `retry_on_contention` logged, from any thread: each is a deadlock or a
    serialization failure that happened and was retried."""
    return [record.getMessage() for record in caplog.records if record.name == "changes.locking"]


def api(user) -> APIClient:
    client = APIClient(raise_request_exception=False)  # a crash is a 500 to count, as a client sees it
    client.force_authenticate(user)
    return client


# ---------------------------------------------------------------------------
# The interleaving from the issue, made exact


@on_postgresql_only
@pytest.mark.named
@pytest.mark.parametrize("verb", ["submit", "approve", "cancel"])
def test_a_change_action_while_a_check_round_holds_the_audit_head_is_not_a_deadlock(
    verb, baking, author, reviewer, monkeypatch, caplog,
):
    baked, lease = baking
    other = change_create(actor=author, target=baked.target, title="other", reason="r", items=item(7))
    if verb == "approve":
        other = change_submit(actor=author, change=other)
    head_held, go = threading.Event(), threading.Event()
    real_audit_record = rounds_module.audit_record

    def audit_record_then_pause(**kwargs: Any) -> Any:
        # The check-round writer, stopped inside its transaction right after it
        # appended its event: it holds the chain head and has not committed yet.
        event = real_audit_record(**kwargs)
        head_held.set()
        assert go.wait(DEADLINE)
        return event

    monkeypatch.setattr(rounds_module, "audit_record", audit_record_then_pause)
    worker: list[Any] = []
    worker_thread = in_thread(lambda: _store_round(lease, baked, "apply", 1, outcomes(1)), worker)
    assert head_held.wait(DEADLINE)

    url = f"/api/v1/changes/{other.pk}/{verb}/"
    body = {"approve": {"fingerprint": other.fingerprint}, "cancel": {"reason": "superseded"}}.get(verb, {})
    user = reviewer if verb == "approve" else author
    responses: list[Any] = []
    api_thread = in_thread(lambda: api(user).post(url, body, format="json"), responses)
    # The API call now holds its change (and the target) and waits for the head.
    wait_until(lambda: backends_waiting_on_a_lock() >= 1, "the API call to wait for the audit head")
    go.set()
    worker_thread.join(DEADLINE)
    api_thread.join(DEADLINE)

    assert not isinstance(worker[0], BaseException), worker[0]
    assert not isinstance(responses[0], BaseException), responses[0]
    assert responses[0].status_code == 200, responses[0].content
    assert CheckResult.objects.filter(execution_id=lease.execution_id, round=1).count() == 1
    assert chain_verify(list(AuditEvent.objects.order_by("seq"))) is None
    assert deadlocks_retried(caplog) == []  # not a deadlock the retry papered over: none at all


# ---------------------------------------------------------------------------
# The load from the issue: many submit/approve/cancel calls while a change bakes


@on_postgresql_only
@pytest.mark.named
def test_concurrent_approvals_while_a_change_bakes_answer_no_5xx_and_the_worker_never_deadlocks(
    baking, author, reviewer, second_reviewer, caplog,
):
    baked, lease = baking
    users, per_user = 5, 12  # 120 calls, as in the issue
    # Different owners for the threads' changes: each thread is its own author, so
    # they all contend on the one target and the audit head, not on one user.
    changes = [[change_create(actor=author, target=baked.target, title=f"c{u}.{i}", reason="r",
                              items=item(u * per_user + i)) for i in range(per_user)] for u in range(users)]
    done = threading.Event()
    statuses: list[tuple[str, int, bytes]] = []
    lock = threading.Lock()

    def bake() -> int:
        rounds = 0
        while not done.is_set():
            rounds += 1
            _store_round(lease, baked, "apply", rounds, outcomes(rounds))
        return rounds

    def user_calls(mine: list[ChangeRequest]) -> None:
        as_author, as_reviewer = api(author), api(reviewer if len(statuses) % 2 else second_reviewer)
        for i, change in enumerate(mine):
            base = f"/api/v1/changes/{change.pk}"
            calls = [(as_author, "submit", {})]
            if i % 3 == 2:
                calls.append((as_author, "cancel", {"reason": "changed my mind"}))
            else:
                calls.append((as_reviewer, "approve", {"fingerprint": change.fingerprint}))
            for client, verb, body in calls:
                response = client.post(f"{base}/{verb}/", body, format="json")
                with lock:
                    statuses.append((verb, response.status_code, response.content))

    worker: list[Any] = []
    baker = in_thread(bake, worker)
    callers_done: list[Any] = []
    callers = [in_thread(lambda mine=mine: user_calls(mine), callers_done) for mine in changes]
    for caller in callers:
        caller.join(120)
    done.set()
    baker.join(DEADLINE)

    assert [r for r in callers_done if isinstance(r, BaseException)] == []
    assert not isinstance(worker[0], BaseException), worker[0]
    assert len(statuses) == users * per_user * 2
    assert [s for s in statuses if s[1] >= 500] == []
    assert {s[1] for s in statuses} == {200}, [s for s in statuses if s[1] != 200][:3]
    assert CheckResult.objects.filter(execution_id=lease.execution_id).count() == worker[0]
    assert chain_verify(list(AuditEvent.objects.order_by("seq"))) is None
    assert deadlocks_retried(caplog) == []


# ---------------------------------------------------------------------------
# The retry of a whole transaction


def deadlock_error() -> OperationalError:
    """What Django raises for PostgreSQL's 40P01: its OperationalError, caused by psycopg's."""
    try:
        try:
            raise psycopg.errors.DeadlockDetected("deadlock detected")
        except psycopg.errors.DeadlockDetected as cause:
            raise OperationalError("deadlock detected") from cause
    except OperationalError as exc:
        return exc


def test_the_retry_helper_retries_a_deadlock_then_succeeds(caplog):
    calls: list[int] = []

    @retry_on_contention
    def service() -> str:
        calls.append(1)
        with transaction.atomic():
            if len(calls) == 1:
                raise deadlock_error()
            return "done"

    assert service() == "done" and len(calls) == 2
    assert deadlocks_retried(caplog) == [f"{service.__qualname__}: 40P01 (attempt 1 of {RETRY_ATTEMPTS})"]


def test_the_retry_helper_never_retries_a_real_error():
    calls: list[int] = []

    @retry_on_contention
    def service() -> None:
        calls.append(1)
        raise OperationalError("connection refused")

    with pytest.raises(OperationalError, match="connection refused"):
        service()
    assert len(calls) == 1


def test_the_retry_helper_gives_up_after_a_bound_with_a_contention_error():
    calls: list[int] = []

    @retry_on_contention
    def service() -> None:
        calls.append(1)
        raise deadlock_error()

    with pytest.raises(Contention) as raised:
        service()
    assert raised.value.status == 503 and len(calls) == RETRY_ATTEMPTS


def test_inside_an_outer_transaction_the_owner_of_that_transaction_retries():
    # A savepoint cannot be retried: the deadlock aborted the whole transaction.
    calls: list[int] = []

    @retry_on_contention
    def service() -> None:
        calls.append(1)
        raise deadlock_error()

    with pytest.raises(OperationalError), transaction.atomic():
        service()
    assert len(calls) == 1


@on_postgresql_only
def test_a_real_postgresql_deadlock_is_retried_and_both_transactions_commit(author, reviewer):
    # Two transactions lock two rows in opposite orders, each holding its first lock
    # (the barrier) before asking for the second: PostgreSQL aborts one with 40P01,
    # and the helper runs that one's whole transaction again.
    from django.contrib.auth import get_user_model

    User = get_user_model()
    both_hold_one = threading.Barrier(2)
    attempts = {"ab": 0, "ba": 0}

    def opposite(first: int, second: int, name: str) -> Callable[[], str]:
        @retry_on_contention
        def work() -> str:
            attempts[name] += 1
            with transaction.atomic():
                User.objects.select_for_update(no_key=True).get(pk=first)
                if attempts[name] == 1:
                    both_hold_one.wait(DEADLINE)
                User.objects.select_for_update(no_key=True).get(pk=second)
                User.objects.filter(pk=first).update(first_name=name)
            return name

        return work

    results: list[Any] = []
    threads = [in_thread(opposite(author.pk, reviewer.pk, "ab"), results),
               in_thread(opposite(reviewer.pk, author.pk, "ba"), results)]
    for thread in threads:
        thread.join(DEADLINE)
    assert sorted(results) == ["ab", "ba"]
    assert sorted(attempts.values()) == [1, 2]  # exactly one was the deadlock victim, and it ran again


@pytest.mark.named
def test_the_api_answers_lasting_contention_with_a_503_json_error_never_a_500(author, dns_target, monkeypatch):
    from changes.services import change_requests

    change = change_create(actor=author, target=dns_target, title="t", reason="r", items=WWW)
    attempts: list[int] = []

    def always_deadlocked(*args: Any, **kwargs: Any) -> None:
        attempts.append(1)
        raise deadlock_error()

    # Every attempt of the submit transaction is chosen as the deadlock victim.
    monkeypatch.setattr(change_requests, "transition", always_deadlocked)
    response = api(author).post(f"/api/v1/changes/{change.pk}/submit/", {}, format="json")
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "contention" and response["Retry-After"] == "1"
    assert len(attempts) == RETRY_ATTEMPTS
    assert ChangeRequest.objects.get(pk=change.pk).state == State.DRAFT


def test_a_deadlock_on_a_path_without_the_retry_is_still_a_503_json_error(author, monkeypatch):
    from changes.api import views

    def deadlocked(**kwargs: Any) -> None:
        raise deadlock_error()

    monkeypatch.setattr(views.ChangeSubmitView, "service", staticmethod(deadlocked))
    monkeypatch.setattr(views.selectors, "access_change", lambda **kwargs: None)
    response = api(author).post("/api/v1/changes/1/submit/", {}, format="json")
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "contention"
