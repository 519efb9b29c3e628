"""Change windows (issue 16), the pure rule: pipeline.windows validates a target's
windows and says when a change may run and why it waits. No database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from changes.errors import ValidationFailed
from pipeline.windows import (
    change_window_wait,
    describe,
    next_open,
    validate_change_windows,
    wait_for,
)

BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc
OFFICE = {"timezone": "Europe/Berlin", "weekly": [{"days": ["mon", "tue", "wed", "thu", "fri"],
                                                   "start": "09:00", "end": "17:00"}]}


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def fields(raw) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        validate_change_windows(raw)
    return [e["field"] for e in caught.value.errors]


# --- validate --------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [None, {}, "", {"timezone": "UTC"}, {"weekly": [], "freezes": []}])
def test_nothing_declared_is_always_open_and_normalises_to_empty(raw):
    assert validate_change_windows(raw) == {}


def test_validate_normalises_days_and_reasons():
    raw = {"timezone": "Europe/Berlin", "weekly": [{"days": ["FRI", " mon", "fri"], "start": "22:00", "end": "24:00"}],
           "freezes": [{"start": "2026-12-20T00:00:00+01:00", "end": "2027-01-02T00:00:00+01:00",
                        "reason": "  year-end freeze "}]}
    assert validate_change_windows(raw) == {
        "timezone": "Europe/Berlin", "weekly": [{"days": ["mon", "fri"], "start": "22:00", "end": "24:00"}],
        "freezes": [{"start": "2026-12-20T00:00:00+01:00", "end": "2027-01-02T00:00:00+01:00",
                     "reason": "year-end freeze"}]}


@pytest.mark.parametrize(("raw", "field"), [
    ([], "change_windows"),
    ("mon-fri", "change_windows"),
    ({"timezone": "Mars/Olympus", "weekly": OFFICE["weekly"]}, "change_windows.timezone"),
    ({"timezone": 5, "freezes": []}, "change_windows.timezone"),
    ({"weekly": OFFICE["weekly"]}, "change_windows.timezone"),
    ({"timezone": "UTC", "weekly": {"days": ["mon"]}}, "change_windows.weekly"),
    ({"timezone": "UTC", "weekly": ["09:00"]}, "change_windows.weekly[0]"),
    ({"timezone": "UTC", "weekly": [{"days": [], "start": "09:00", "end": "17:00"}]}, "change_windows.weekly[0].days"),
    ({"timezone": "UTC", "weekly": [{"days": ["monday"], "start": "09:00", "end": "17:00"}]},
     "change_windows.weekly[0].days"),
    ({"timezone": "UTC", "weekly": [{"days": ["mon"], "start": "9:00", "end": "17:00"}]},
     "change_windows.weekly[0].start"),
    ({"timezone": "UTC", "weekly": [{"days": ["mon"], "start": "24:00", "end": "17:00"}]},
     "change_windows.weekly[0].start"),
    ({"timezone": "UTC", "weekly": [{"days": ["mon"], "start": "09:00", "end": "24:30"}]},
     "change_windows.weekly[0].end"),
    ({"timezone": "UTC", "weekly": [{"days": ["mon"], "start": "09:00", "end": "09:00"}]},
     "change_windows.weekly[0].end"),
    ({"timezone": "UTC", "weekly": [{"days": ["mon"], "start": "00:00", "end": "17:00", "tz": "x"}]},
     "change_windows.weekly[0].tz"),
    ({"timezone": "UTC", "every": "day"}, "change_windows.every"),
    ({"freezes": [{"start": "2026-12-20T00:00:00+01:00", "end": "2027-01-02T00:00:00+01:00"}]},
     "change_windows.freezes[0].reason"),
    ({"freezes": [{"start": "2026-12-20T00:00:00+01:00", "end": "2027-01-02T00:00:00+01:00", "reason": " "}]},
     "change_windows.freezes[0].reason"),
    ({"freezes": [{"start": "2026-12-20T00:00:00", "end": "2027-01-02T00:00:00+01:00", "reason": "x"}]},
     "change_windows.freezes[0].start"),
    ({"freezes": [{"start": "2026-12-20T00:00:00+01:00", "end": "next year", "reason": "x"}]},
     "change_windows.freezes[0].end"),
    ({"freezes": [{"start": "2027-01-02T00:00:00+01:00", "end": "2026-12-20T00:00:00+01:00", "reason": "x"}]},
     "change_windows.freezes[0].end"),
    ({"freezes": "christmas"}, "change_windows.freezes"),
])
def test_validate_names_the_bad_field(raw, field):
    assert field in fields(raw)


def test_validate_names_every_bad_field_with_its_index():
    raw = {"timezone": "Europe/Berlin",
           "weekly": [OFFICE["weekly"][0], {"days": ["sat"], "start": "10:00", "end": "x"}],
           "freezes": [{"start": "2026-12-20T00:00:00+01:00", "end": "2027-01-02T00:00:00+01:00", "reason": "a"},
                       {"start": "2026-12-20T00:00:00+01:00", "end": "2027-01-02T00:00:00+01:00"}]}
    assert fields(raw) == ["change_windows.weekly[1].end", "change_windows.freezes[1].reason"]


# --- next_open -------------------------------------------------------------------------

def test_open_inside_a_window_is_now():
    now = berlin(2026, 12, 1, 10, 30)  # a Tuesday
    assert next_open(OFFICE, now) == now
    assert wait_for(OFFICE, now) is None


def test_always_open_without_windows():
    now = berlin(2026, 12, 5, 3, 0)
    assert next_open({}, now) == now
    assert next_open(None, now) == now


def test_the_end_is_exclusive_and_the_start_inclusive():
    assert next_open(OFFICE, berlin(2026, 12, 1, 9, 0)) == berlin(2026, 12, 1, 9, 0)
    assert next_open(OFFICE, berlin(2026, 12, 1, 17, 0)) == berlin(2026, 12, 2, 9, 0)


def test_after_hours_waits_for_the_next_morning_and_friday_night_for_monday():
    assert next_open(OFFICE, berlin(2026, 12, 1, 18, 0)) == berlin(2026, 12, 2, 9, 0)
    assert next_open(OFFICE, berlin(2026, 12, 4, 17, 30)) == berlin(2026, 12, 7, 9, 0)  # Fri -> Mon


def test_the_reason_says_the_window_and_when_it_runs():
    assert describe(OFFICE, berlin(2026, 12, 1, 18, 0)) == (
        "outside the change window (Mon-Fri 09:00-17:00 Europe/Berlin); runs at 2026-12-02 09:00 CET")


def test_the_window_is_in_its_own_time_zone_whatever_zone_now_is_given_in():
    # 07:30 UTC is 08:30 in Berlin (CET, +01:00): half an hour before it opens.
    now = datetime(2026, 12, 1, 7, 30, tzinfo=UTC)
    assert next_open(OFFICE, now) == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def test_a_window_stays_at_local_wall_clock_time_across_the_dst_change():
    # Berlin goes from CET (+01) to CEST (+02) on Sunday 2027-03-28: 09:00 local is
    # 08:00 UTC the Friday before and 07:00 UTC the Monday after.
    friday = next_open(OFFICE, datetime(2027, 3, 26, 6, 0, tzinfo=UTC))
    monday = next_open(OFFICE, datetime(2027, 3, 26, 17, 0, tzinfo=UTC))
    assert friday == datetime(2027, 3, 26, 8, 0, tzinfo=UTC)
    assert monday == datetime(2027, 3, 29, 7, 0, tzinfo=UTC)
    assert describe(OFFICE, datetime(2027, 3, 26, 17, 0, tzinfo=UTC)).endswith("runs at 2027-03-29 09:00 CEST")


def test_a_start_inside_the_spring_forward_gap_is_read_with_the_offset_before_it():
    # 02:30 does not exist in Berlin on 2027-03-28 (02:00 -> 03:00).
    nightly = {"timezone": "Europe/Berlin", "weekly": [{"days": ["sun"], "start": "02:30", "end": "04:00"}]}
    opens = next_open(nightly, datetime(2027, 3, 27, 12, 0, tzinfo=UTC))
    assert opens == datetime(2027, 3, 28, 1, 30, tzinfo=UTC)  # 03:30 CEST: 02:30 read with the offset before the gap
    assert next_open(nightly, datetime(2027, 3, 28, 1, 45, tzinfo=UTC)) == datetime(2027, 3, 28, 1, 45, tzinfo=UTC)


def test_a_window_in_the_autumn_repeated_hour_is_open_for_both_hours():
    # 2026-10-25 Berlin: 03:00 CEST -> 02:00 CET; 02:00-03:00 local happens twice.
    night = {"timezone": "Europe/Berlin", "weekly": [{"days": ["sun"], "start": "01:00", "end": "04:00"}]}
    first_0230 = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)   # 02:30 CEST
    second_0230 = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET
    assert next_open(night, first_0230) == first_0230
    assert next_open(night, second_0230) == second_0230
    after = datetime(2026, 10, 25, 3, 0, tzinfo=UTC)  # 04:00 CET: closed
    assert next_open(night, after) == datetime(2026, 11, 1, 0, 0, tzinfo=UTC)  # next Sunday 01:00 CET


def test_a_window_ending_before_it_starts_crosses_midnight():
    nightly = {"timezone": "UTC", "weekly": [{"days": ["fri"], "start": "22:00", "end": "02:00"}]}
    friday_night = datetime(2026, 12, 4, 23, 0, tzinfo=UTC)
    saturday_early = datetime(2026, 12, 5, 1, 59, tzinfo=UTC)  # still Friday's window
    assert next_open(nightly, friday_night) == friday_night
    assert next_open(nightly, saturday_early) == saturday_early
    assert next_open(nightly, datetime(2026, 12, 5, 2, 0, tzinfo=UTC)) == datetime(2026, 12, 11, 22, 0, tzinfo=UTC)
    assert next_open(nightly, datetime(2026, 12, 4, 12, 0, tzinfo=UTC)) == datetime(2026, 12, 4, 22, 0, tzinfo=UTC)


def test_24_00_ends_at_midnight():
    evening = {"timezone": "UTC", "weekly": [{"days": ["tue"], "start": "20:00", "end": "24:00"}]}
    assert next_open(evening, datetime(2026, 12, 1, 23, 59, tzinfo=UTC)) == datetime(2026, 12, 1, 23, 59, tzinfo=UTC)
    assert next_open(evening, datetime(2026, 12, 2, 0, 0, tzinfo=UTC)) == datetime(2026, 12, 8, 20, 0, tzinfo=UTC)
    whole_day = {"timezone": "UTC", "weekly": [{"days": ["wed"], "start": "00:00", "end": "24:00"}]}
    assert next_open(whole_day, datetime(2026, 12, 1, 12, 0, tzinfo=UTC)) == datetime(2026, 12, 2, 0, 0, tzinfo=UTC)
    assert next_open(whole_day, datetime(2026, 12, 2, 23, 59, tzinfo=UTC)) == datetime(2026, 12, 2, 23, 59, tzinfo=UTC)


YEAR_END = {"start": "2026-12-20T00:00:00+01:00", "end": "2027-01-04T00:00:00+01:00", "reason": "year-end freeze"}


def test_a_freeze_overrides_the_weekly_window():
    windows = {**OFFICE, "freezes": [YEAR_END]}
    inside_window_and_freeze = berlin(2026, 12, 22, 10, 0)  # a Tuesday
    assert next_open(windows, inside_window_and_freeze) == berlin(2027, 1, 4, 9, 0)  # Monday after the freeze
    assert describe(windows, inside_window_and_freeze) == (
        "frozen until 2027-01-04 00:00 CET: year-end freeze; runs at 2027-01-04 09:00 CET")


def test_a_freeze_that_ends_inside_a_window_opens_at_its_end():
    freeze = {"start": "2026-12-01T08:00:00+01:00", "end": "2026-12-01T11:15:00+01:00", "reason": "core switch swap"}
    windows = {**OFFICE, "freezes": [freeze]}
    assert next_open(windows, berlin(2026, 12, 1, 10, 0)) == berlin(2026, 12, 1, 11, 15)
    assert describe(windows, berlin(2026, 12, 1, 10, 0)) == "frozen until 2026-12-01 11:15 CET: core switch swap"


def test_freezes_without_weekly_windows_close_only_the_freeze():
    windows = validate_change_windows({"freezes": [YEAR_END]})
    assert next_open(windows, berlin(2026, 12, 19, 23, 0)) == berlin(2026, 12, 19, 23, 0)
    assert next_open(windows, berlin(2026, 12, 24, 3, 0)) == berlin(2027, 1, 4, 0, 0)


def test_overlapping_freezes_chain():
    second = {"start": "2027-01-03T00:00:00+01:00", "end": "2027-01-06T12:00:00+01:00", "reason": "inventory"}
    windows = validate_change_windows({"freezes": [YEAR_END, second]})
    assert next_open(windows, berlin(2026, 12, 24, 3, 0)) == berlin(2027, 1, 6, 12, 0)


def test_never_within_the_horizon_is_none_and_said():
    forever = {"start": "2026-01-01T00:00:00+00:00", "end": "2030-01-01T00:00:00+00:00", "reason": "decommissioned"}
    windows = {**OFFICE, "freezes": [forever]}
    now = berlin(2026, 12, 1, 10, 0)
    assert next_open(windows, now) is None
    wait = wait_for(windows, now)
    assert wait is not None and wait.runs_at is None
    assert "decommissioned" in wait.reason and "does not open within 400 days" in wait.reason


def test_day_lists_are_summarised():
    windows = {"timezone": "UTC", "weekly": [
        {"days": ["mon", "wed", "thu", "fri", "sun"], "start": "09:00", "end": "10:00"},
        {"days": ["sat", "sun"], "start": "22:00", "end": "02:00"}]}
    assert describe(windows, datetime(2026, 12, 1, 12, 0, tzinfo=UTC)).startswith(
        "outside the change window (Mon, Wed-Fri, Sun 09:00-10:00, Sat, Sun 22:00-02:00 UTC)")


class _Target:
    change_windows = OFFICE


class _Change:
    def __init__(self, state: str, emergency: bool = False) -> None:
        self.state, self.emergency, self.target = state, emergency, _Target()


def test_the_selector_shows_the_wait_only_for_an_approved_non_emergency_change():
    evening = berlin(2026, 12, 1, 18, 0)
    shown = change_window_wait(_Change("approved"), now=evening)
    assert shown == {"runs_at": berlin(2026, 12, 2, 9, 0).isoformat(),
                     "reason": "outside the change window (Mon-Fri 09:00-17:00 Europe/Berlin); "
                               "runs at 2026-12-02 09:00 CET"}
    assert change_window_wait(_Change("approved", emergency=True), now=evening) is None
    assert change_window_wait(_Change("pending_approval"), now=evening) is None
    assert change_window_wait(_Change("approved"), now=evening + timedelta(hours=15, minutes=30)) is None
