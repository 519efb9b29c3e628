"""Change windows (issue 16) through a real Celery worker process, a real redis-server
and a real named. Time is driven by the window clock setting the worker is started
with (CHANGEGATE_CLOCK_OFFSET_SECONDS), so a window opens seconds after the approval
instead of hours: never by sleeping until it does."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone
from guardian.shortcuts import assign_perm

from approvals.models import Approval
from approvals.policy import change_emergency
from changes.models import AuditEvent, ChangeRequest, Execution
from changes.services import change_create, target_update_policy
from pipeline.windows import window_now
from tests import worker_fixtures
from tests.changes.test_worker import approve, propose, wait_terminal, www
from tests.factories import api_client
from tests.polling import wait_until

# The real-process fixtures, found by pytest under these names.
broker, worker = worker_fixtures.broker, worker_fixtures.worker

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.named]
State = ChangeRequest.State
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
# Real seconds from the window being set to it opening: enough to see the hold first.
LEAD_SECONDS = 8
# How long starting a worker takes, roughly; only makes the wait shorter, never wrong.
STARTUP_SECONDS = 4


def hourly_window_from(opening: datetime) -> dict:
    """Every day from `opening` (a whole minute) for an hour, in Berlin: closed the 23 hours before."""
    local = opening.astimezone(ZoneInfo("Europe/Berlin"))
    return {"timezone": "Europe/Berlin",
            "weekly": [{"days": ALL_DAYS, "start": local.strftime("%H:%M"),
                        "end": (local + timedelta(hours=1)).strftime("%H:%M")}]}


def shifted_worker(worker, settings) -> int:
    """Start a worker whose window clock is hours ahead and about LEAD_SECONDS before a
    whole minute once it is ready (windows are whole minutes); the test process gets
    the same clock, for the API. Returns the offset in seconds."""
    now = timezone.now()
    aim = (now + timedelta(hours=5)).replace(second=60 - LEAD_SECONDS - 4, microsecond=0)
    offset = int((aim - now).total_seconds()) - STARTUP_SECONDS
    worker(CHANGEGATE_CLOCK_OFFSET_SECONDS=str(offset))
    settings.CHANGEGATE_CLOCK_OFFSET_SECONDS = offset
    return offset


def next_opening() -> datetime:
    """The first whole minute on the window clock at least LEAD_SECONDS away."""
    soon = window_now() + timedelta(seconds=LEAD_SECONDS)
    return soon.replace(second=0, microsecond=0) + timedelta(minutes=1 if soon.second or soon.microsecond else 0)


def test_a_change_approved_outside_its_window_waits_and_runs_at_the_windows_start(
        author, reviewer, staff, dns_target, worker, settings):
    offset = shifted_worker(worker, settings)
    opening = next_opening()
    target = target_update_policy(actor=staff, target=dns_target, bake_seconds=0,
                                  change_windows=hourly_window_from(opening))
    before = www(target)
    change = approve(reviewer, propose(author, target, "192.0.2.77"))

    wait_until(lambda: Execution.objects.get(change=change).hold_reason.startswith("outside the change window"),
               "the worker to hold the change for its window", timeout=30)
    assert window_now() < opening, "the window opened before the hold could be seen: raise LEAD_SECONDS"
    assert www(target) == before
    waiting = api_client(author).get(f"/api/v1/changes/{change.pk}/").json()["waiting_for_window"]
    assert datetime.fromisoformat(waiting["runs_at"]) == opening
    assert waiting["reason"].startswith("outside the change window (Mon-Sun ")
    assert Execution.objects.get(change=change).retries == 0

    assert wait_terminal(change, timeout=LEAD_SECONDS + 90) == State.APPLIED
    assert www(target) == ("192.0.2.77",)
    # It ran at the window's start: not before (real time = window clock - offset), and
    # woken by its own countdown, not seconds later by chance.
    started = AuditEvent.objects.get(change=change, action="apply_started").created_at
    opened_at = opening - timedelta(seconds=offset)
    assert opened_at - timedelta(seconds=1) <= started <= opened_at + timedelta(seconds=8), (started, opened_at)
    wait = AuditEvent.objects.get(change=change, action="change_window_wait")
    assert datetime.fromisoformat(wait.payload["runs_at"]) == opening
    assert api_client(author).get(f"/api/v1/changes/{change.pk}/").json()["waiting_for_window"] is None


def test_approvals_that_lapse_while_waiting_are_not_applied(author, reviewer, staff, dns_target, worker, settings):
    shifted_worker(worker, settings)
    opening = next_opening()
    target = target_update_policy(actor=staff, target=dns_target, bake_seconds=0,
                                  change_windows=hourly_window_from(opening))
    before = www(target)
    change = approve(reviewer, propose(author, target, "192.0.2.78"))
    wait_until(lambda: Execution.objects.get(change=change).hold_reason != "", "the window hold", timeout=30)
    assert window_now() < opening, "the window opened before the hold could be seen: raise LEAD_SECONDS"
    # The approval runs out while the change waits (its lifetime shorter than the wait).
    Approval.objects.filter(change=change).update(expires_at=timezone.now())

    wait_until(lambda: ChangeRequest.objects.get(pk=change.pk).state == State.PENDING_APPROVAL,
               "the change to go back for review when the window opens", timeout=LEAD_SECONDS + 90)
    assert www(target) == before
    assert not AuditEvent.objects.filter(change=change, action__in=["apply_started", "change_applied"]).exists()
    assert Execution.objects.get(change=change).outcome == Execution.Outcome.APPROVAL_LAPSED


def test_break_glass_outside_the_window_applies_at_once_and_says_so(author, staff, dns_target, worker):
    worker()  # the real clock: the window opens hours from now
    opening = (timezone.now() + timedelta(hours=3)).replace(second=0, microsecond=0)
    target = target_update_policy(actor=staff, target=dns_target, bake_seconds=0,
                                  change_windows=hourly_window_from(opening))
    assign_perm("changes.emergency_change", author, target)
    draft = change_create(actor=author, target=target, title="outage", reason="r",
                          items=[{"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": ["192.0.2.79"]}])
    change = change_emergency(actor=author, change=draft, reason="payments down since 10:02")

    assert wait_terminal(change, timeout=60) == State.APPLIED
    assert www(target) == ("192.0.2.79",)
    ignored = AuditEvent.objects.get(change=change, action="change_window_ignored")
    assert ignored.payload["change_window"].startswith("ignored (break-glass): outside the change window (")
    assert ignored.payload["emergency_reason"] == "payments down since 10:02"
    assert not AuditEvent.objects.filter(change=change, action="change_window_wait").exists()
    assert Execution.objects.get(change=change).hold_reason == ""
