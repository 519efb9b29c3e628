"""Where a change is and until when (pipeline.phase): the one answer behind the API's
`phase`, the change page and `changegate wait`."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from changes.models import ChangeRequest, Execution, Target
from pipeline.phase import change_phase, watching

S = ChangeRequest.State
NOW = timezone.now()


def change(state: str, **fields) -> ChangeRequest:
    target = Target(name="t.test", kind="dns", config={"zone": "t.test."}, bake_seconds=120, bake_max_seconds=600,
                    watch_interval_seconds=15)
    return ChangeRequest(target=target, state=state, **fields)


def test_an_approved_change_held_for_its_window_says_when_it_runs():
    held = Execution(hold_reason="outside the change window; runs at 09:00", retry_at=NOW + timedelta(seconds=90))
    phase = change_phase(change(S.APPROVED), held, now=NOW)
    assert (phase.name, phase.until, phase.seconds_left) == ("waiting", held.retry_at, 90)
    assert phase.text == "approved, waiting: outside the change window; runs at 09:00 (90 s left)"
    assert change_phase(change(S.APPROVED), Execution(), now=NOW).name == "queued"


def test_a_verifying_change_bakes_until_applied_at_plus_its_bake():
    running = Execution(applied_at=NOW - timedelta(seconds=30))
    phase = change_phase(change(S.VERIFYING), running, now=NOW)
    assert phase.name == "baking" and phase.until == running.applied_at + timedelta(seconds=120)
    assert phase.seconds_left == 90
    assert phase.text == "baking: watching for 2 min: the target's minimum bake (90 s left)"


def test_an_applied_change_is_watched_until_its_window_ends():
    young = change(S.APPLIED, watch_until=NOW + timedelta(minutes=10), watch_next_at=NOW)
    phase = change_phase(young, Execution(), now=NOW)
    assert (phase.name, phase.seconds_left) == ("watching", 600)
    assert "checks every 15 s" in phase.text and "revert it alone" in phase.text
    assert watching(young, NOW)
    # After the window, or once the watch stopped (a failure, a later change): done.
    assert change_phase(young, Execution(), now=NOW + timedelta(minutes=10)).name == "done"
    stopped = change(S.APPLIED, watch_until=NOW + timedelta(minutes=10), watch_next_at=None)
    assert change_phase(stopped, Execution(), now=NOW).name == "done" and not watching(stopped, NOW)


def test_the_other_states_name_themselves():
    assert change_phase(change(S.DRAFT), None, now=NOW).to_json() == {
        "name": "draft", "text": "draft", "until": None, "seconds_left": None}
    assert change_phase(change(S.ROLLED_BACK), None, now=NOW).name == "done"
    assert change_phase(change(S.ROLLING_BACK), Execution(), now=NOW).name == "rolling_back"


def test_a_watch_stopped_early_still_says_the_revert_window_and_a_reverted_change_says_so():
    stopped = change(S.APPLIED, watch_until=NOW + timedelta(minutes=10), watch_next_at=None)
    phase = change_phase(stopped, Execution(), now=NOW)
    assert (phase.name, phase.seconds_left) == ("done", 600)
    assert phase.text.startswith("applied; its watch stopped early, and its author or an approver may still revert")
    young = change(S.APPLIED, watch_until=NOW + timedelta(minutes=10), watch_next_at=NOW)
    assert change_phase(young, Execution(), now=NOW, reverted=True).to_json() == {
        "name": "done", "text": "applied, then reverted", "until": None, "seconds_left": None}
