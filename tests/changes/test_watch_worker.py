"""Issue 16 through a real Celery worker process, a real redis-server and a real
named: the worker opens the watch window as the bake passes, the beat's task
(`changes.watch_applied`, run by the worker) finds the declared check failing, and
the automatic revert it starts is applied by the worker; the one-person revert is
applied by the worker too."""

from __future__ import annotations

import socket
import time

import pytest

from changes.models import TERMINAL, AuditEvent, ChangeRequest, Notification
from changes.services import change_revert, target_update_policy
from config.celery_app import app
from tests.factories import approved, www
from tests.polling import wait_until
from tests.worker_fixtures import broker, worker  # noqa: F401 - fixtures

# Real commits: the worker process reads the database through its own connection.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.named]
State = ChangeRequest.State
OLD = ("192.0.2.10", "192.0.2.11")


@pytest.fixture
def target(dns_target, operator):
    return target_update_policy(actor=operator, target=dns_target, bake_seconds=0, watch_seconds=600,
                                watch_interval_seconds=1)


def state(change) -> str:
    return ChangeRequest.objects.values_list("state", flat=True).get(pk=change.pk)


def ended(change) -> bool:
    return state(change) in TERMINAL


def test_the_beat_task_catches_a_late_failure_and_the_worker_applies_the_revert(
        author, reviewer, target, worker):  # noqa: F811 - the imported fixture
    author.email = "alice@example.test"
    author.save()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    check = {"type": "tcp", "host": "127.0.0.1", "port": sock.getsockname()[1], "timeout": 0.5}
    worker()
    change = approved(author, reviewer, target, health_checks=[check])
    wait_until(lambda: ended(change), f"change #{change.pk} to end")
    assert state(change) == State.APPLIED and www(target) == ("192.0.2.99",)
    sock.close()  # the service goes down after the bake passed
    started = time.monotonic()

    def reverted() -> bool:
        app.send_task("changes.watch_applied")  # what the beat sends every CHANGEGATE_WATCH_SWEEP_SECONDS
        return ChangeRequest.objects.filter(reverts=change, state=State.APPLIED).exists()

    wait_until(reverted, f"the automatic revert of #{change.pk} to be applied", timeout=60)
    assert www(target) == OLD
    # Two failed rounds a second apart, then the revert: seconds, not the 10-minute window.
    assert time.monotonic() - started < 30
    assert AuditEvent.objects.get(change=change, action="watch_failed").payload["revert"] == (
        ChangeRequest.objects.get(reverts=change).pk)
    assert Notification.objects.filter(change=change, event="watch_check_failed").count() == 1


def test_a_one_person_revert_is_applied_by_the_worker(author, reviewer, target, worker):  # noqa: F811
    worker()
    change = approved(author, reviewer, target)
    wait_until(lambda: ended(change), f"change #{change.pk} to end")
    revert = change_revert(actor=reviewer, change=ChangeRequest.objects.get(pk=change.pk), reason="502s")
    wait_until(lambda: ended(revert), f"revert #{revert.pk} to end")
    assert state(revert) == State.APPLIED and www(target) == OLD
