"""When a target accepts changes (issue 16, "change windows"): the one place for the rule.

A target's `change_windows` declares weekly windows in a time zone and freeze periods
with a reason. A change approved outside a window waits; the worker holds its
execution until `next_open(...)` and the API, the change page and the CLI show
`describe(...)`, so what the author sees is what the worker does. Break-glass
(emergency) changes ignore windows; the worker audits that it did.

Shape (normalised by `validate_change_windows`):
    {"timezone": "Europe/Berlin",
     "weekly": [{"days": ["mon", "tue"], "start": "09:00", "end": "17:00"}],
     "freezes": [{"start": "2026-12-20T00:00:00+01:00", "end": "2027-01-02T00:00:00+01:00",
                  "reason": "year-end freeze"}]}
{} (or no weekly and no freezes) means always open. No weekly windows but freezes:
open except during a freeze. A window whose end <= start crosses midnight
(22:00-02:00 runs into the next day); "24:00" is allowed as an end. A freeze
overrides the weekly windows.

Pure: no database, no network. Wall-clock times are resolved with zoneinfo on the
day they fall on, so a 09:00 window is at 09:00 local on both sides of a DST change.
A time inside a spring-forward gap is read with the offset before the gap (02:30 on
the night Berlin skips 02:00-03:00 is 03:30 CEST); one in the repeated autumn hour is
its first occurrence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime, time, timedelta
from datetime import timezone as dt_timezone
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from changes.errors import ValidationFailed

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HORIZON = timedelta(days=400)  # next_open gives up after this: "never" for any practical purpose
MAX_WEEKLY = 50
MAX_FREEZES = 200
MAX_REASON = 500
_KEYS = {"timezone", "weekly", "freezes"}
_TIME = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
_FIELD = "change_windows"


def validate_change_windows(raw: Any) -> dict[str, Any]:
    """Return `raw` normalised (days lower-case in week order, freezes as ISO 8601 with
    offset, reasons stripped); {} for None or empty. Raises ValidationFailed naming
    every bad field, e.g. "change_windows.weekly[0].start"."""
    if raw is None or raw == {} or raw == "":
        return {}
    errors: list[dict[str, Any]] = []

    def bad(field: str, message: str) -> None:
        errors.append({"index": None, "field": field, "message": message})

    if not isinstance(raw, Mapping):
        raise ValidationFailed([{"index": None, "field": _FIELD,
                                 "message": "must be an object with timezone, weekly and freezes"}])
    for key in sorted(set(raw) - _KEYS, key=str):
        bad(f"{_FIELD}.{key}", "unknown key (allowed: timezone, weekly, freezes)")

    weekly_raw = raw.get("weekly") if raw.get("weekly") is not None else []
    freezes_raw = raw.get("freezes") if raw.get("freezes") is not None else []

    tz_name = raw.get("timezone")
    if tz_name is None or tz_name == "":
        if weekly_raw:
            bad(f"{_FIELD}.timezone", "required with weekly windows (an IANA name, e.g. Europe/Berlin)")
        tz_name = "UTC"
    elif not isinstance(tz_name, str) or not _zone_ok(tz_name):
        bad(f"{_FIELD}.timezone", "not a known IANA time zone (e.g. Europe/Berlin, UTC)")

    weekly: list[dict[str, Any]] = []
    for where, item in _entries(weekly_raw, "weekly", ("days", "start", "end"), MAX_WEEKLY, bad):
        days = item.get("days")
        if not isinstance(days, list) or not days:
            bad(f"{where}.days", f"a non-empty list of {', '.join(DAYS)}")
            days_norm: list[str] = []
        else:
            wrong = [d for d in days if not isinstance(d, str) or d.strip().lower() not in DAYS]
            if wrong:
                bad(f"{where}.days", f"unknown day {wrong[0]!r} (use {', '.join(DAYS)})")
            picked = {d.strip().lower() for d in days if isinstance(d, str)}
            days_norm = [d for d in DAYS if d in picked]
        start, end = item.get("start"), item.get("end")
        start_ok = _time_ok(start, allow_24=False)
        end_ok = _time_ok(end, allow_24=True)
        if not start_ok:
            bad(f"{where}.start", "a time HH:MM from 00:00 to 23:59")
        if not end_ok:
            bad(f"{where}.end", "a time HH:MM from 00:01 to 24:00")
        if start_ok and end_ok and _minutes(start) == _minutes(end) % (24 * 60):
            bad(f"{where}.end", "equals start: an empty window (use 00:00-24:00 for a whole day)")
        weekly.append({"days": days_norm, "start": start, "end": end})

    freezes: list[dict[str, Any]] = []
    for where, item in _entries(freezes_raw, "freezes", ("start", "end", "reason"), MAX_FREEZES, bad):
        start_at = _instant(item.get("start"))
        end_at = _instant(item.get("end"))
        if start_at is None:
            bad(f"{where}.start", "an ISO 8601 date-time with offset, e.g. 2026-12-20T00:00:00+01:00")
        if end_at is None:
            bad(f"{where}.end", "an ISO 8601 date-time with offset, e.g. 2027-01-02T00:00:00+01:00")
        if start_at is not None and end_at is not None and end_at <= start_at:
            bad(f"{where}.end", "must be after start")
        reason = item.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            bad(f"{where}.reason", "required: say why changes are frozen")
        elif len(reason.strip()) > MAX_REASON:
            bad(f"{where}.reason", f"at most {MAX_REASON} characters")
        freezes.append({
            "start": start_at.isoformat() if start_at else None,
            "end": end_at.isoformat() if end_at else None,
            "reason": reason.strip() if isinstance(reason, str) else reason,
        })

    if errors:
        raise ValidationFailed(errors)
    if not weekly and not freezes:
        return {}
    return {"timezone": tz_name, "weekly": weekly, "freezes": freezes}


def _entries(raw: Any, name: str, keys: tuple[str, ...], most: int,
             bad: Callable[[str, str], None]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(path, entry) for each entry of the list `change_windows.<name>` that is an
    object; the list's shape, its length and unknown keys are reported through `bad`."""
    field, allowed = f"{_FIELD}.{name}", ", ".join(keys)
    if not isinstance(raw, list):
        bad(field, f"must be a list of {{{allowed}}}")
        return
    if len(raw) > most:
        bad(field, f"at most {most} entries")
        return
    for i, item in enumerate(raw):
        where = f"{field}[{i}]"
        if not isinstance(item, Mapping):
            bad(where, f"must be an object with {allowed}")
            continue
        for key in sorted(set(item) - set(keys), key=str):
            bad(f"{where}.{key}", f"unknown key (allowed: {allowed})")
        yield where, item


def _zone_ok(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        return False
    return True


def _time_ok(value: Any, *, allow_24: bool) -> bool:
    if not isinstance(value, str):
        return False
    m = _TIME.match(value)
    if not m:
        return False
    hours, minutes = int(m.group(1)), int(m.group(2))
    if hours == 24:
        return allow_24 and minutes == 0
    return True


def _minutes(value: str) -> int:
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    # Without an offset the instant depends on the reader's zone: refuse rather than guess.
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return None
    return parsed


class WindowWait(NamedTuple):
    """Why a change may not be applied at `now`, and when it may (None: not within HORIZON)."""

    runs_at: datetime | None
    reason: str


def window_now() -> datetime:
    """The instant window decisions are taken at: now, shifted by the
    CHANGEGATE_CLOCK_OFFSET_SECONDS setting (0 in production). Tests move a real
    worker's clock with it instead of sleeping until a window opens; nothing else
    (leases, retries, audit timestamps) reads this clock."""
    from django.conf import settings
    from django.utils import timezone

    offset = float(getattr(settings, "CHANGEGATE_CLOCK_OFFSET_SECONDS", 0) or 0)
    return timezone.now() + timedelta(seconds=offset)


def always_open(windows: Any) -> bool:
    return not windows or (isinstance(windows, Mapping) and not windows.get("weekly") and not windows.get("freezes"))


def next_open(windows: Mapping[str, Any] | None, now: datetime) -> datetime | None:
    """`now` if changes may be applied at `now`; else the first instant after it at
    which they may (inside a weekly window and outside every freeze); None if not
    within HORIZON. `windows` is the normalised shape; `now` is aware."""
    if always_open(windows):
        return now
    if _open_at(windows, now):
        return now
    horizon = now + HORIZON
    # Openings happen only where a weekly window starts or a freeze ends.
    candidates = {end for _, end, _ in _freezes(windows) if now < end <= horizon}
    if windows.get("weekly"):
        candidates.update(start for start, _ in _intervals(windows, now, horizon) if now < start <= horizon)
    for instant in sorted(candidates):
        if _open_at(windows, instant):
            return instant
    return None


def wait_for(windows: Mapping[str, Any] | None, now: datetime) -> WindowWait | None:
    """None if changes may be applied at `now`; else when and why they wait, e.g.
    "outside the change window (Mon-Fri 09:00-17:00 Europe/Berlin); runs at
    2026-12-02 09:00 CET" or "frozen until 2027-01-02 00:00 CET: year-end freeze"."""
    if always_open(windows):
        return None
    try:
        windows = validate_change_windows(windows)
    except ValidationFailed as exc:
        # Stored some way that skipped validation: closed (a gate fails shut), and said why.
        return WindowWait(None, f"the target's change windows are invalid ({exc.message}); nothing runs until "
                                "they are fixed")
    runs_at = next_open(windows, now)
    if runs_at == now:
        return None
    tz = _zone(windows)
    when = f"runs at {_local(runs_at, tz)}" if runs_at else f"does not open within {HORIZON.days} days"
    freeze = _freeze_at(windows, now)
    if freeze is not None:
        _, end, reason = freeze
        text = f"frozen until {_local(end, tz)}: {reason}"
        if runs_at != end:
            text += f"; {when}"
        return WindowWait(runs_at, text)
    return WindowWait(runs_at, f"outside the change window ({summary(windows)}); {when}")


def describe(windows: Mapping[str, Any] | None, now: datetime) -> str | None:
    """The reason text of `wait_for`, or None when open."""
    wait = wait_for(windows, now)
    return wait.reason if wait else None


def summary(windows: Mapping[str, Any]) -> str:
    """"Mon-Fri 09:00-17:00, Sat 10:00-12:00 Europe/Berlin"."""
    weekly = windows.get("weekly") or []
    if not weekly:
        return f"always, outside freezes ({windows.get('timezone') or 'UTC'})"
    parts = [f"{_days_text(w['days'])} {w['start']}-{w['end']}" for w in weekly]
    return f"{', '.join(parts)} {windows.get('timezone') or 'UTC'}"


def change_window_wait(change: Any, *, now: datetime | None = None) -> dict[str, Any] | None:
    """{"runs_at": iso, "reason": text} while an approved, non-emergency change waits
    for its target's change window; None otherwise. For the API, the change page
    and the CLI: the same rule the worker holds the execution by."""
    state = getattr(change, "state", None)
    if state != "approved" or getattr(change, "emergency", False):
        return None
    target = getattr(change, "target", None)
    windows = getattr(target, "change_windows", None)
    if always_open(windows):
        return None
    wait = wait_for(windows, now or window_now())
    if wait is None:
        return None
    return {"runs_at": wait.runs_at.isoformat() if wait.runs_at else None, "reason": wait.reason}


def _zone(windows: Mapping[str, Any]) -> ZoneInfo:
    try:
        return ZoneInfo(windows.get("timezone") or "UTC")
    except (ZoneInfoNotFoundError, ValueError, TypeError, OSError):
        return ZoneInfo("UTC")  # stored before validation existed: read as UTC rather than fail the worker


def _local(instant: datetime, tz: ZoneInfo) -> str:
    return instant.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def _days_text(days: list[str]) -> str:
    """["mon".."fri"] -> "Mon-Fri"; ["mon", "wed", "thu", "fri"] -> "Mon, Wed-Fri"."""
    idx = sorted(DAYS.index(d) for d in days if d in DAYS)
    runs: list[list[int]] = []
    for i in idx:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    out = []
    for run in runs:
        first, last = DAYS[run[0]].title(), DAYS[run[-1]].title()
        out.append(first if len(run) == 1 else f"{first}-{last}" if len(run) > 2 else f"{first}, {last}")
    return ", ".join(out)


def _freezes(windows: Mapping[str, Any]) -> Iterator[tuple[datetime, datetime, str]]:
    for freeze in windows.get("freezes") or []:
        start, end = _instant(freeze.get("start")), _instant(freeze.get("end"))
        if start is not None and end is not None and end > start:
            yield start, end, str(freeze.get("reason") or "")


def _freeze_at(windows: Mapping[str, Any], instant: datetime) -> tuple[datetime, datetime, str] | None:
    """The freeze covering `instant` that ends last (overlapping freezes chain)."""
    covering = [f for f in _freezes(windows) if f[0] <= instant < f[1]]
    return max(covering, key=lambda f: f[1]) if covering else None


def _wall(day: date, hhmm: str, tz: ZoneInfo) -> datetime:
    """The instant of wall-clock `hhmm` on `day` in `tz`; "24:00" is midnight of the next day.
    In a spring-forward gap fold=0 takes the offset before the gap (02:30 -> 03:30 CEST)."""
    hours, minutes = (int(x) for x in hhmm.split(":"))
    if hours == 24:
        day, hours = day + timedelta(days=1), 0
    local = datetime.combine(day, time(hours, minutes), tzinfo=tz)
    return local.astimezone(dt_timezone.utc).astimezone(tz)  # normalise a time in a DST gap


def _intervals(windows: Mapping[str, Any], since: datetime, until: datetime) -> Iterator[tuple[datetime, datetime]]:
    """Every weekly window instance that may overlap [since, until]."""
    tz = _zone(windows)
    # One day earlier: a window that crosses midnight starts the day before.
    day = since.astimezone(tz).date() - timedelta(days=1)
    last = until.astimezone(tz).date()
    while day <= last:
        name = DAYS[day.weekday()]
        for window in windows.get("weekly") or []:
            if name not in window["days"]:
                continue
            start = _wall(day, window["start"], tz)
            end_day = day if _minutes(window["end"]) > _minutes(window["start"]) else day + timedelta(days=1)
            end = _wall(end_day, window["end"], tz) if window["end"] != "24:00" else _wall(day, "24:00", tz)
            if end > start:
                yield start, end
        day += timedelta(days=1)


def _open_at(windows: Mapping[str, Any], instant: datetime) -> bool:
    if _freeze_at(windows, instant) is not None:
        return False
    if not windows.get("weekly"):
        return True
    return any(start <= instant < end for start, end in _intervals(windows, instant, instant))
