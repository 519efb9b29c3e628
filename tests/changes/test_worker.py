"""The apply pipeline through a real Celery worker process, a real redis-server
and a real named: approve -> applied, rollback, kill -9 at every crash point,
and redis restarted empty."""

from __future__ import annotations

import socket
import time

import pytest

from approvals.policy import change_approve
from changes.models import TERMINAL, AuditEvent, ChangeRequest, Execution
from changes.services import change_create, change_submit, target_update_policy
from config.celery_app import app
from dns_adapters.local_named import free_port
from pipeline.execution import execution_sweep
from pipeline.faults import POINTS
from tests.factories import wrong_secret, www
from tests.polling import wait_until as wait_for
from tests.processes import point_app_at
from tests.worker_fixtures import broker, worker  # noqa: F401 - fixtures

# Real commits: real worker processes (and live_server) read the database through
# their own connections.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.named]
State = ChangeRequest.State


@pytest.fixture
def target(dns_target, staff):
    return target_update_policy(actor=staff, target=dns_target, bake_seconds=0)


def propose(author, target, value: str, **kwargs) -> ChangeRequest:
    items = [{"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": [value]}]
    change = change_create(actor=author, target=target, title="t", reason="r", items=items, **kwargs)
    return change_submit(actor=author, change=change)


def approve(reviewer, change) -> ChangeRequest:
    return change_approve(actor=reviewer, change=change, fingerprint=change.fingerprint)


def wait_terminal(change: ChangeRequest, *, timeout: float = 60, sweep: bool = False) -> str:
    """Follow the change until it ends; with `sweep`, run the beat's sweep meanwhile
    (what recovers a change whose worker died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = ChangeRequest.objects.values_list("state", flat=True).get(pk=change.pk)
        if state in TERMINAL or state == State.DRIFTED:
            return state
        if sweep:
            execution_sweep()
        time.sleep(0.2)  # poll interval while a separate process works
    raise AssertionError(f"change #{change.pk} still {state} after {timeout}s")


def applies(change) -> int:
    return AuditEvent.objects.filter(change=change, action="change_applied").count()


def test_approved_change_is_applied_by_the_worker(author, reviewer, target, worker):
    started = worker()
    change = approve(reviewer, propose(author, target, "192.0.2.99"))
    assert wait_terminal(change) == State.APPLIED
    assert www(target) == ("192.0.2.99",)
    assert applies(change) == 1
    # The lease names the worker process that ran it (pipeline.execution.worker_id: host:pid).
    assert Execution.objects.get(change=change).lease_owner == f"{socket.gethostname()}:{started.process.pid}"


def test_failing_check_rolls_back_through_the_worker(author, reviewer, target, worker):
    before = www(target)
    worker()
    dead = [{"type": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": 0.5}]
    change = approve(reviewer, propose(author, target, "192.0.2.98", health_checks=dead))
    assert wait_terminal(change) == State.ROLLED_BACK
    assert www(target) == before


# What a kill -9 at each crash point (pipeline.faults, placed in pipeline.run._drive
# and _store_round) leaves behind: the zone, the change's state and how many
# change_applied events were recorded. Before the send nothing reached named; after
# the send named holds the change but the worker died before recording it; during the
# checks the send is recorded and the change is verifying. A new crash point without
# an entry here fails with a KeyError.
AT_CRASH = {
    "before_send": ("before", State.APPLYING, 0),
    "after_send": ("after", State.APPLYING, 0),
    "during_checks": ("after", State.VERIFYING, 1),
}


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("attempt", range(2))
def test_kill_9_inside_the_apply_never_applies_twice(point, attempt, author, reviewer, target, worker):
    before = www(target)
    after = (f"192.0.2.{60 + attempt}",)
    crashing = worker(CHANGEGATE_CRASH_AT=point)
    change = approve(reviewer, propose(author, target, after[0]))
    assert crashing.wait_dead() == -9  # SIGKILL at the crash point
    zone, state, recorded = AT_CRASH[point]
    assert www(target) == {"before": before, "after": after}[zone]
    assert ChangeRequest.objects.values_list("state", flat=True).get(pk=change.pk) == state
    assert applies(change) == recorded
    worker()
    end = wait_terminal(change, sweep=True)
    assert end == State.APPLIED
    assert www(target) == (f"192.0.2.{60 + attempt}",)
    assert applies(change) == 1
    sent = [e for e in Execution.objects.get(change=change).log if e["what"] == "change_applied"]
    assert len(sent) == 1


def test_redis_restarted_empty_loses_nothing(author, reviewer, target, worker, broker, make_user):
    # Three changes on three zones' worth of RRsets would apply in any order; on one
    # RRset the approval order decides, and each later one drifts: so use one change
    # per name.
    changes = []
    for name in ("a1", "a2", "a3"):
        items = [{"op": "upsert", "name": name, "type": "A", "ttl": 300, "records": ["192.0.2.31"]}]
        change = change_create(actor=author, target=target, title="t", reason="r", items=items)
        changes.append(approve(reviewer, change_submit(actor=author, change=change)))
    broker.restart_empty()  # the published wake-ups are gone; no worker ever saw them
    point_app_at(app, broker.url)
    worker()
    for change in changes:
        assert wait_terminal(change, sweep=True) == State.APPLIED


def test_cli_wait_follows_the_change_to_applied(author, reviewer, target, worker, live_server, capsys):
    from rest_framework.authtoken.models import Token

    from changegate_cli import main as cli

    token = Token.objects.create(user=author).key
    worker()
    change = approve(reviewer, propose(author, target, "192.0.2.97"))
    code = cli.main(["--url", live_server.url, "--token", token, "wait", str(change.pk), "--interval", "0.2",
                     "--timeout", "60"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"change #{change.pk} ended applied" in out.out


def test_cli_wait_exits_non_zero_when_rolled_back(author, reviewer, target, worker, live_server, capsys):
    from rest_framework.authtoken.models import Token

    from changegate_cli import main as cli

    token = Token.objects.create(user=author).key
    worker()
    dead = [{"type": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": 0.5}]
    change = approve(reviewer, propose(author, target, "192.0.2.96", health_checks=dead))
    code = cli.main(["--url", live_server.url, "--token", token, "wait", str(change.pk), "--interval", "0.2"])
    assert code == 1
    assert "ended rolled_back" in capsys.readouterr().out


def test_the_worker_sends_back_a_change_whose_approval_expired_while_frozen(
        author, reviewer, target, worker, staff):
    from datetime import timedelta

    from django.utils import timezone

    from approvals.models import Approval

    before = www(target)
    target_update_policy(actor=staff, target=target, frozen=True)
    worker()
    change = approve(reviewer, propose(author, target, "192.0.2.95"))
    wait_for(lambda: "frozen" in Execution.objects.get(change=change).hold_reason, "the frozen hold")
    Approval.objects.filter(change=change).update(expires_at=timezone.now() - timedelta(seconds=1))
    target_update_policy(actor=staff, target=target, frozen=False)
    execution_sweep()  # what beat does: held executions are published again
    wait_for(lambda: Execution.objects.get(change=change).state == Execution.State.DONE, "the worker's decision")
    assert ChangeRequest.objects.get(pk=change.pk).state == State.PENDING_APPROVAL
    assert AuditEvent.objects.filter(change=change, action="approval_lapsed").count() == 1
    assert applies(change) == 0 and www(target) == before


# ---------------------------------------------------------------------------
# Attempts, permanent errors and the rollback's retries, through the real worker.


def outside_update(named_server, target, value: str) -> None:
    import dns.query
    import dns.tsigkeyring
    import dns.update

    update = dns.update.UpdateMessage(target.name, keyring=dns.tsigkeyring.from_file(named_server.key_file))
    update.replace("www", 300, "A", value)
    dns.query.tcp(update, "127.0.0.1", port=named_server.port, timeout=3)


def test_a_drifted_change_is_approved_again_and_the_worker_applies_the_new_attempt(
        author, reviewer, target, worker, named_server):
    from changes.services import change_plan

    change = approve(reviewer, propose(author, target, "192.0.2.94"))
    outside_update(named_server, target, "203.0.113.94")  # before any worker runs it
    worker()
    assert wait_terminal(change, sweep=True) == State.DRIFTED
    change = change_plan(actor=author, change=ChangeRequest.objects.get(pk=change.pk))
    change = approve(reviewer, change_submit(actor=author, change=change))
    assert wait_terminal(change, sweep=True) == State.APPLIED
    assert www(target) == ("192.0.2.94",)
    attempts = list(Execution.objects.filter(change=change).order_by("pk").values_list("outcome", "claims"))
    assert attempts == [("drifted", 1), ("applied", 1)]


@pytest.mark.parametrize("breakage", ["wrong secret", "deleted"])
def test_a_bad_key_fails_the_change_once_in_the_worker_instead_of_looping(
        breakage, author, reviewer, keyed_target, worker, named_server):
    target, key_file = keyed_target
    change = approve(reviewer, propose(author, target, "192.0.2.93"))
    if breakage == "wrong secret":
        wrong_secret(key_file, named_server)
    else:
        key_file.unlink()
    worker()
    assert wait_terminal(change, timeout=30, sweep=True) == State.APPLY_FAILED
    execution = Execution.objects.get(change=change)
    assert (execution.state, execution.outcome, execution.claims) == ("done", "apply_failed", 1)
    assert execution_sweep() == []  # nothing left to re-claim
    (event,) = AuditEvent.objects.filter(change=change, action="apply_failed")
    assert event.payload["permanent"] is True and execution.error == event.payload["error"]
    assert named_server.secret not in event.canonical_text


def test_named_stopped_during_the_bake_and_back_later_is_rolled_back_by_the_worker(
        author, reviewer, own_named, staff, worker):
    from changes.services import target_register
    from tests.conftest import grant

    down = target_register(actor=staff, name="down.test", bake_seconds=5, bake_max_seconds=0, config={
        "zone": "down.test", "primary": own_named.primary, "tsig_key_file": str(own_named.key_file), "timeout": 1})
    grant(author, "engineer", down)
    grant(reviewer, "reviewer", down)
    before = www(down)
    worker(CHANGEGATE_ROLLBACK_RETRY_SECONDS="120", CHANGEGATE_RETRY_DELAY_SECONDS="1")
    change = approve(reviewer, propose(author, down, "192.0.2.92"))
    wait_for(lambda: ChangeRequest.objects.get(pk=change.pk).state == State.VERIFYING, "the bake")
    port = own_named.port
    own_named.stop(cleanup=False)
    wait_for(lambda: Execution.objects.get(change=change).retries >= 2, "the rollback's retries")
    assert ChangeRequest.objects.get(pk=change.pk).state == State.ROLLING_BACK
    own_named.start(port=port)
    assert wait_terminal(change, timeout=90) == State.ROLLED_BACK
    assert www(down) == before
    assert not AuditEvent.objects.filter(change=change, action="rollback_failed").exists()
