"""Cells the change list and the history by record share (issue 15): a state with its
colour (a CSS class per state, changes/static/changes/change_states.css), a time to
the second, the emergency mark. Built once per distinct value where the value allows:
a list page renders a hundred rows."""

from __future__ import annotations

from datetime import datetime
from functools import cache

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from changes.models import ChangeRequest

STATES_CSS = "changes/change_states.css"
# Sortable and exact, in the server's time zone: reviewers compare times across changes
# and with logs, where "Dec. 1, 2026, 3:53 a.m." hides the seconds. Django's "Y-m-d H:i:s",
# written out: dateformat.format parses its format string and builds a formatter per
# call, a third of a list page's row rendering (two times a row).
TIME_FORMAT = "Y-m-d H:i:s"


def _time_text(value: datetime) -> str:
    """`value` as date_format(value, TIME_FORMAT) writes it."""
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}")


@cache
def state_cell(state: str) -> SafeString:
    """The state's label in a span of class `cg-state cg-state-<state>` (the change page's own classes)."""
    try:
        label = ChangeRequest.State(state).label
    except ValueError:
        label = state
    return format_html('<span class="cg-state cg-state-{}">{}</span>', state, label)


def time_cell(value: datetime | None) -> SafeString | str:
    if value is None:
        return ""
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    # Digits and separators only (isoformat, _time_text): nothing to escape.
    return mark_safe(f'<time class="cg-time" datetime="{value.isoformat()}">{_time_text(local)}</time>')


# Only emergency changes are marked: a mark on every ordinary row says nothing.
EMERGENCY_MARK = format_html('<span class="cg-emergency-mark" title="{}">{}</span>',
                             "Emergency change (break-glass)", "\u26a0 emergency")


def emergency_cell(emergency: bool) -> SafeString | str:
    return EMERGENCY_MARK if emergency else ""
