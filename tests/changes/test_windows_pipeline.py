"""Change windows (issue 16) in the pipeline, in-process against a real named: the
hold, its audit, the break-glass exception and the API/CLI showing when a waiting
change runs. The real-worker path is tests/changes/test_windows_worker.py."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from approvals.models import Approval
from approvals.policy import change_emergency
from changegate_cli import render
from changes.models import AuditEvent, ChangeRequest, Execution, Notification, Target
from changes.services import change_create, target_update_policy
from pipeline.windows import change_window_wait
from tests.factories import WWW, api_client, approved, run, upsert

pytestmark = [pytest.mark.django_db, pytest.mark.named]
State = ChangeRequest.State
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def opening_in(hours: int) -> tuple[dict, datetime]:
    """Windows (every day, one hour) that open on the next whole minute `hours` from now, and that instant."""
    opening = (timezone.now() + timedelta(hours=hours, minutes=1)).replace(second=0, microsecond=0)
    local = opening.astimezone(ZoneInfo("Europe/Berlin"))
    end = local + timedelta(hours=1)
    windows = {"timezone": "Europe/Berlin",
               "weekly": [{"days": ALL_DAYS, "start": local.strftime("%H:%M"), "end": end.strftime("%H:%M")}]}
    return windows, opening


@pytest.fixture
def closed_target(fast_target, staff):
    windows, opening = opening_in(3)
    target = target_update_policy(actor=staff, target=fast_target, change_windows=windows)
    target.opening = opening
    return target


def test_a_change_outside_its_window_is_held_until_it_opens_and_the_wait_is_audited_once(
        author, reviewer, closed_target):
    author.email = "alice@example.test"
    author.save()
    change = approved(author, reviewer, closed_target)
    assert run(change) == "held"
    execution = Execution.objects.get(change=change)
    assert execution.hold_reason.startswith("outside the change window (Mon-Sun ")
    assert "Europe/Berlin); runs at " in execution.hold_reason
    # Not claimed again before the window opens, and a wait is not a transient failure.
    assert abs((execution.retry_at - closed_target.opening).total_seconds()) < 5
    assert execution.retries == 0
    assert run(change) == "not-claimed"
    waits = AuditEvent.objects.filter(change=change, action="change_window_wait")
    assert waits.count() == 1
    assert datetime.fromisoformat(waits.get().payload["runs_at"]) == closed_target.opening
    assert waits.get().payload["reason"] == execution.hold_reason
    # The author is told once when it will run instead.
    (told,) = Notification.objects.filter(change=change, event="waiting_for_window", channel="email")
    assert told.payload["runs_at"] == waits.get().payload["runs_at"] and told.payload["reason"] in told.payload["summary"]

    # A stray wake-up after retry_at (say the windows moved) finds the same wait: nothing new recorded.
    Execution.objects.filter(pk=execution.pk).update(retry_at=timezone.now())
    assert run(change) == "held"
    assert waits.count() == 1
    assert Notification.objects.filter(change=change, event="waiting_for_window").count() == 1
    assert AuditEvent.objects.filter(change=change, action="execution_held").count() == 1

    # Time passes (the window clock moves to the opening): it runs.
    Execution.objects.filter(pk=execution.pk).update(retry_at=timezone.now())
    with override_clock(closed_target.opening - timezone.now() + timedelta(seconds=1)):
        assert run(change) == State.APPLIED
    execution.refresh_from_db()
    assert execution.hold_reason == ""
    assert [e["what"] for e in execution.log if e["what"] == "hold_ended"] == ["hold_ended"]


def test_approvals_that_lapse_while_the_change_waits_send_it_back_for_review(author, reviewer, closed_target):
    change = approved(author, reviewer, closed_target)
    assert run(change) == "held"
    Approval.objects.filter(change=change).update(expires_at=timezone.now() - timedelta(seconds=1))
    Execution.objects.filter(change=change).update(retry_at=timezone.now())
    with override_clock(closed_target.opening - timezone.now() + timedelta(seconds=1)):
        assert run(change) == State.PENDING_APPROVAL
    assert not AuditEvent.objects.filter(change=change, action__in=["apply_started", "change_applied"]).exists()
    assert AuditEvent.objects.get(change=change, action="approval_lapsed").payload["valid_approvals"] == 0


def test_break_glass_ignores_the_window_and_the_audit_log_says_so(author, closed_target):
    from guardian.shortcuts import assign_perm

    assign_perm("changes.emergency_change", author, closed_target)
    draft = change_create(actor=author, target=closed_target, title="outage", reason="r", items=WWW)
    change = change_emergency(actor=author, change=draft, reason="payments down")
    assert run(change) == State.APPLIED
    ignored = AuditEvent.objects.get(change=change, action="change_window_ignored")
    assert ignored.payload["change_window"].startswith("ignored (break-glass): outside the change window (")
    assert datetime.fromisoformat(ignored.payload["window_opens_at"]) == closed_target.opening
    assert not AuditEvent.objects.filter(change=change, action="change_window_wait").exists()
    started = AuditEvent.objects.get(change=change, action="apply_started")
    assert ignored.pk < started.pk


def test_new_windows_wake_a_change_held_for_the_old_ones(author, reviewer, staff, closed_target):
    change = approved(author, reviewer, closed_target)
    assert run(change) == "held"
    assert run(change) == "not-claimed"  # waiting for the old opening, hours away
    # The policy service wakes it (pipeline.window_hold.window_holds_recheck) in the same transaction.
    target_update_policy(actor=staff, target=closed_target, change_windows={})
    assert Execution.objects.get(change=change).retry_at is None
    assert run(change) == State.APPLIED


def test_windows_stored_without_validation_hold_the_change_and_say_why(author, reviewer, closed_target):
    Target.objects.filter(pk=closed_target.pk).update(change_windows={"weekly": [{"days": "mon"}]})
    change = approved(author, reviewer, closed_target)
    assert change_window_wait(ChangeRequest.objects.get(pk=change.pk))["runs_at"] is None
    assert run(change) == "held"
    execution = Execution.objects.get(change=change)
    assert execution.hold_reason.startswith("the target's change windows are invalid (change_windows.timezone: ")
    assert not AuditEvent.objects.filter(change=change, action="apply_started").exists()


def test_break_glass_is_not_queued_behind_a_change_waiting_for_its_window(author, reviewer, closed_target):
    from guardian.shortcuts import assign_perm

    waiting = approved(author, reviewer, closed_target)
    assert run(waiting) == "held"
    assign_perm("changes.emergency_change", author, closed_target)
    draft = change_create(actor=author, target=closed_target, title="outage", reason="r",
                          items=upsert("mail", "192.0.2.5"))
    change = change_emergency(actor=author, change=draft, reason="payments down")
    assert run(change) == State.APPLIED
    assert AuditEvent.objects.filter(change=change, action="change_window_ignored").exists()
    assert Execution.objects.get(change=waiting).hold_reason  # the earlier one still waits for its window


def test_the_api_and_the_cli_show_when_a_waiting_change_runs(author, reviewer, staff, closed_target, monkeypatch):
    change = approved(author, reviewer, closed_target)
    body = api_client(author).get(f"/api/v1/changes/{change.pk}/").json()
    waiting = body["waiting_for_window"]
    assert datetime.fromisoformat(waiting["runs_at"]) == closed_target.opening
    assert waiting["reason"].startswith("outside the change window (")
    out = io.StringIO()
    monkeypatch.setattr(render, "_out", lambda: out)
    render.print_change(body, full=True)
    assert f"waits for the change window: runs at {waiting['runs_at']}" in out.getvalue()

    # Once held, the phase says it too, with the time left.
    assert run(change) == "held"
    body = api_client(author).get(f"/api/v1/changes/{change.pk}/").json()
    assert body["phase"]["name"] == "waiting" and "outside the change window" in body["phase"]["text"]
    assert body["phase"]["seconds_left"] > 3 * 3600 - 120

    # Open windows: nothing is shown.
    target_update_policy(actor=staff, target=closed_target, change_windows={})
    assert api_client(author).get(f"/api/v1/changes/{change.pk}/").json()["waiting_for_window"] is None


def test_a_target_registered_with_windows_keeps_them_normalised(staff, named_server, spare):
    windows = {"timezone": "Europe/Berlin", "weekly": [{"days": ["FRI", "mon"], "start": "22:00", "end": "02:00"}],
               "freezes": [{"start": "2026-12-20T00:00:00+01:00", "end": "2027-01-04T00:00:00+01:00",
                            "reason": " year-end freeze "}]}
    response = api_client(staff).post("/api/v1/targets/", register(named_server, spare, change_windows=windows),
                                      format="json")
    assert response.status_code == 201, response.json()
    stored = {"timezone": "Europe/Berlin", "weekly": [{"days": ["mon", "fri"], "start": "22:00", "end": "02:00"}],
              "freezes": [{"start": "2026-12-20T00:00:00+01:00", "end": "2027-01-04T00:00:00+01:00",
                           "reason": "year-end freeze"}]}
    assert response.json()["change_windows"] == stored
    assert Target.objects.get(pk=response.json()["id"]).change_windows == stored


@pytest.mark.parametrize(("windows", "field"), [
    ({"timezone": "Europe/Berlin", "weekly": [{"days": ["mon"], "start": "09:00", "end": "09:00"}]},
     "change_windows.weekly[0].end"),
    ({"timezone": "Europe/Berlin", "weekly": [{"days": ["funday"], "start": "09:00", "end": "17:00"}]},
     "change_windows.weekly[0].days"),
    ({"freezes": [{"start": "2026-12-20", "end": "2027-01-04T00:00:00+01:00", "reason": "x"}]},
     "change_windows.freezes[0].start"),
    ({"freezes": [{"start": "2027-01-04T00:00:00+01:00", "end": "2026-12-20T00:00:00+01:00", "reason": "x"}]},
     "change_windows.freezes[0].end"),
    ({"weekly": [{"days": ["mon"], "start": "09:00", "end": "17:00"}]}, "change_windows.timezone"),
    ("always", "change_windows"),
])
def test_registering_bad_windows_is_a_400_naming_the_field(staff, named_server, spare, windows, field):
    response = api_client(staff).post("/api/v1/targets/", register(named_server, spare, change_windows=windows),
                                      format="json")
    assert response.status_code == 400, response.json()
    assert field in {e["field"] for e in response.json()["errors"]}
    assert not Target.objects.filter(name=spare).exists()


def test_a_policy_update_with_bad_windows_changes_nothing(staff, fast_target):
    from changes.errors import ValidationFailed

    before = AuditEvent.objects.count()
    with pytest.raises(ValidationFailed) as caught:
        target_update_policy(actor=staff, target=fast_target, change_windows={"timezone": "Nowhere/City"})
    assert [e["field"] for e in caught.value.errors] == ["change_windows.timezone"]
    fast_target.refresh_from_db()
    assert fast_target.change_windows == {} and AuditEvent.objects.count() == before


# --- helpers ---------------------------------------------------------------------------

@pytest.fixture
def spare(module_zone) -> str:
    """A zone nobody registered (the database is reset per test): one for the module."""
    return module_zone


def register(named_server, zone: str, **overrides):
    body = {"name": zone, "config": {"zone": zone, "primary": named_server.primary,
                                     "tsig_key_file": str(named_server.key_file), "timeout": 3}}
    body.update(overrides)
    return body


class override_clock:  # noqa: N801 - used like django's override_settings
    """Move the window clock (CHANGEGATE_CLOCK_OFFSET_SECONDS) by `delta` in this process."""

    def __init__(self, delta: timedelta) -> None:
        from django.test import override_settings

        self._override = override_settings(CHANGEGATE_CLOCK_OFFSET_SECONDS=int(delta.total_seconds()) + 1)

    def __enter__(self) -> None:
        self._override.enable()

    def __exit__(self, *exc: object) -> None:
        self._override.disable()
