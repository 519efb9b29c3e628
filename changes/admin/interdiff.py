"""What changed between two plan revisions of a change (issue 15), for the change page:
per key, what the older revision would have written (`after`) next to what the newer
one writes, and the keys one revision touches and the other does not. Drawn like the
plan diff (changes.admin.diff), every piece of text through format_html."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from adapters import RRKey, RRValue, TargetKind
from changes.admin.diff import STEP_CLASS
from changes.kinds import kind_of
from changes.models import AuditEvent, ChangeRequest
from changes.revisions import Revision, last_look, plan_revisions

LOOK_WORDS = {"approval_given": "approved", "change_rejected": "rejected", "comment_added": "commented on",
              "change_edited": "edited", "change_planned": "re-planned", "change_created": "created"}


def _afters(plan: dict[str, Any]) -> dict[tuple[str, str], Any]:
    return {(str(step.get("name", "")), str(step.get("type", ""))): step.get("after")
            for step in plan.get("steps") or [] if isinstance(step, dict)}


def _value_lines(kind: TargetKind, key: tuple[str, str], value: Any) -> list[str]:
    try:
        return kind.value_lines(RRKey(*key), RRValue.from_json(value)) or ["(absent)"]
    except (TypeError, ValueError, KeyError, AttributeError):  # a payload from another version: shown as stored
        return [json.dumps(value, sort_keys=True)]


def interdiff_rows(kind: TargetKind, old: Revision, new: Revision) -> list[dict[str, Any]]:
    """One entry per key whose written value differs between the revisions, in the newer
    plan's order then the keys only the older one had: {"key", "status", "lines"}, lines
    as (sign, text) with "-" only the older revision writes, "+" only the newer one."""
    before, after = _afters(old.plan), _afters(new.plan)
    rows = []
    for key in [*after, *(key for key in before if key not in after)]:
        if key in before and key in after and before[key] == after[key]:
            continue
        if key not in before:
            status, old_lines = "added to the plan", []
        elif key not in after:
            status, old_lines = "removed from the plan", _value_lines(kind, key, before[key])
        else:
            status, old_lines = "value changed", _value_lines(kind, key, before[key])
        new_lines = _value_lines(kind, key, after[key]) if key in after else []
        kept = set(old_lines) & set(new_lines)
        lines = ([("-", line) for line in old_lines if line not in kept]
                 + [(" ", line) for line in new_lines if line in kept]
                 + [("+", line) for line in new_lines if line not in kept])
        rows.append({"key": f"{key[0]} {key[1]}", "status": status, "lines": lines})
    return rows


def interdiff_html(kind: TargetKind, old: Revision, new: Revision) -> SafeString:
    rows = interdiff_rows(kind, old, new)
    if not rows:
        return format_html('<p class="cg-empty">{}</p>', "Both revisions write the same values; only what the plan "
                                                         "was read against differs.")
    sections = format_html_join("", '<tbody class="cg-rrset"><tr class="cg-hunk"><th colspan="2">{} '
                                    '<span class="cg-op">{}</span></th></tr>{}</tbody>', (
        (row["key"], row["status"], format_html_join(
            "", '<tr class="{}"><td class="cg-sign">{}</td><td class="cg-line"><code>{}</code></td></tr>',
            ((STEP_CLASS[sign], sign, line) for sign, line in row["lines"])))
        for row in rows))
    return format_html(
        '<table class="cg-diff cg-interdiff"><thead><tr><th colspan="2">- revision {} ({}…)<br>+ revision {} ({}…)'
        "</th></tr></thead>{}</table>",
        old.number, old.fingerprint[:12], new.number, new.fingerprint[:12], sections,
    )


def interdiff_context(change: ChangeRequest, events: Sequence[AuditEvent], user_id: Any) -> dict[str, Any]:
    """The page's "plan revisions" section and, for someone who reviewed an older plan,
    the "changed since your last review" marker. Nothing for a change with one plan."""
    revisions = plan_revisions(events)
    if len(revisions) < 2 or revisions[-1].fingerprint != change.fingerprint:
        # One plan, or events that do not end in the stored plan (a change from before
        # plans were written into the chain): no revision history to show honestly.
        return {}
    kind = kind_of(change.target)
    current = revisions[-1]
    context: dict[str, Any] = {"plan_revision": {
        "number": current.number, "count": len(revisions), "previous": revisions[-2],
        "diff": interdiff_html(kind, revisions[-2], current),
    }}
    look = last_look(events, revisions, user_id)
    if look is not None and look.revision.fingerprint != current.fingerprint:
        context["since_my_review"] = {
            "revision": look.revision, "event": look.event, "how": LOOK_WORDS.get(look.event.action, "saw"),
            # The previous revision's diff is already on the page.
            "diff": (context["plan_revision"]["diff"] if look.revision is revisions[-2]
                     else interdiff_html(kind, look.revision, current)),
        }
    return context
