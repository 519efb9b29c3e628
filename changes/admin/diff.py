"""How a change's plan and the live zone since the plan are shown: the coloured diff
(the same unified diff the API and CLI show) and the live-drift section."""

from __future__ import annotations

from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from adapters import RRKey, RRValue, Step, TargetKind
from changes.errors import ServiceError
from changes.kinds import kind_of
from changes.models import ChangeRequest
from changes.selectors import change_diff, change_live_drift, change_plan_of

STEP_CLASS = {"-": "cg-del", "+": "cg-add", " ": "cg-ctx"}


def _step_summary(step: Step) -> str:
    if step.before is None:
        return "create"
    if step.after is None:
        return "delete"
    return "replace"


def plan_diff_html(change: ChangeRequest) -> SafeString:
    """The plan as a coloured diff, one table body per RRset. Built from the same
    unified diff the API and CLI show; every piece of text goes through format_html."""
    plan = change_plan_of(change)
    if plan is None:
        return format_html('<p class="cg-empty">{}</p>', "No plan has been computed.")
    lines = change_diff(change).splitlines()
    header, body = lines[:2], lines[2:]
    hunks: list[tuple[str, list[str]]] = []
    for line in body:
        if line.startswith("@@"):
            hunks.append((line.strip("@ "), []))
        elif hunks:
            hunks[-1][1].append(line)
    if not hunks:
        return format_html('<p class="cg-empty">{}</p>', "The live zone already matches this change: nothing to do.")
    sections = []
    for index, (key, rows) in enumerate(hunks):
        summary = _step_summary(plan.steps[index]) if index < len(plan.steps) else ""
        row_html = format_html_join(
            "", '<tr class="{}"><td class="cg-sign">{}</td><td class="cg-line"><code>{}</code></td></tr>',
            ((STEP_CLASS.get(row[:1], "cg-ctx"), row[:1], row[1:]) for row in rows),
        )
        sections.append(format_html(
            '<tbody class="cg-rrset"><tr class="cg-hunk"><th colspan="2">{} <span class="cg-op">{}</span></th></tr>'
            "{}</tbody>", key, summary, row_html,
        ))
    return format_html(
        '<table class="cg-diff"><thead><tr><th colspan="2">{}<br>{}</th></tr></thead>{}</table>',
        header[0], header[1], format_html_join("", "{}", ((s,) for s in sections)),
    )


# What the live zone holds is compared with the plan's `before` only while the plan
# has not been applied: afterwards the live zone is meant to differ from it.
LIVE_COMPARED = frozenset({
    ChangeRequest.State.DRAFT, ChangeRequest.State.PENDING_APPROVAL, ChangeRequest.State.APPROVED,
    ChangeRequest.State.DRIFTED,
})


def _rrset_text(kind: TargetKind, name: str, rdtype: str, value: RRValue | None) -> list[str]:
    return kind.value_lines(RRKey(name, rdtype), value) or ["(absent)"]


def live_drift_context(change: ChangeRequest) -> dict[str, Any]:
    """The "live zone since the plan was read" section: rows, or why there are none.
    A target that cannot be read is a message on the page, never a 500."""
    if change.state not in LIVE_COMPARED:
        return {"drift_note": f"Not compared: the change is {change.get_state_display()}."}
    try:
        rows = change_live_drift(change)
    except ServiceError as exc:  # TargetUnavailable
        return {"drift_error": exc.message}
    if not rows:
        return {"drift_note": "The plan has no steps."}
    kind = kind_of(change.target)
    return {
        "drift": [
            {**row, "before_lines": _rrset_text(kind, row["name"], row["type"], row["before"]),
             "live_lines": _rrset_text(kind, row["name"], row["type"], row["live"])}
            for row in rows
        ],
        "drift_count": sum(1 for row in rows if not row["matches"]),
    }
