"""What the admin's change page shows a reviewer (issue 15): the buttons this person
may press on this change now, the approve step with its confirmation, why the
change failed, its health checks and their rounds, and the discussion.

Nothing here decides a rule: which buttons appear is asked of the functions the
services and the policy raise from (`may_submit`, `may_plan`, `may_cancel`,
`can_review`, `can_move`, `require_approval_mfa`), and the services still decide
on POST."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest

from adapters import RRKey, RRValue, TargetKind
from approvals.policy import approvals_of, approvals_valid, can_review, require_approval_mfa
from approvals.standing import approvals_required_parts
from changes.admin.common import _admin_origin
from changes.admin.diff import live_drift_context, plan_diff_html
from changes.admin.interdiff import interdiff_context
from changes.admin.record_history import record_history_url
from changes.errors import NotPermitted
from changes.kinds import kind_of, risk_description
from changes.lifecycle import can_move
from changes.models import COMMENT_BODY_MAX, AuditEvent, ChangeRequest
from changes.selectors import change_comments, change_executions, change_plan_of
from changes.services.change_requests import may_cancel, may_edit, may_plan, may_submit
from changes.services.reverts import may_revert
from pipeline.bake_time import bake_for
from pipeline.checks import check_name
from pipeline.phase import change_phase
from pipeline.watch import watch_text

State = ChangeRequest.State


class CommentForm(forms.Form):
    # Not required here: the service says what is wrong with a body, in the API's words.
    body = forms.CharField(
        label="Comment", required=False,
        widget=forms.Textarea(attrs={"rows": 3, "maxlength": COMMENT_BODY_MAX, "required": True}),
        help_text="Everyone who may see this change can read it. @name alerts that person by email.",
    )


def approve_confirmed(post: Any) -> bool:
    """Whether the approve POST carries the ticked box naming the very fingerprint it approves."""
    fingerprint = post.get("fingerprint", "").strip()
    return not fingerprint or post.get("reviewed", "").strip() == fingerprint


def step_count(change: ChangeRequest) -> int:
    plan = change_plan_of(change)
    return len(plan.steps) if plan else 0


def required_text(change: ChangeRequest) -> tuple[int, str]:
    """(N, "1 for the target + 1 for the risk flag 'mail'"), from the policy's own parts."""
    parts = approvals_required_parts(change)
    return sum(count for count, _ in parts), " + ".join(f"{count} {why}" for count, why in parts)


# ---------------------------------------------------------------------------
# Buttons


def may_review(user: AbstractBaseUser, change: ChangeRequest) -> bool:
    """Approve and reject: a pending change (the lifecycle's move), a person the policy lets review it."""
    return can_move(change, State.APPROVED) and can_review(user, change)


def offered(user: AbstractBaseUser, change: ChangeRequest, request: HttpRequest) -> dict[str, Any]:
    """Which of the page's buttons this person may press on this change now."""
    reviewing = may_review(user, change)
    mfa_refusal = ""
    if reviewing:
        try:
            require_approval_mfa(_admin_origin(request))
        except NotPermitted as exc:
            mfa_refusal = exc.message
    return {
        "may_edit": may_edit(user, change),
        "may_submit": may_submit(user, change),
        "may_plan": may_plan(user, change),
        "may_cancel": may_cancel(user, change),
        # The one-person revert while the change is young (changes.services.reverts).
        "may_revert": may_revert(user, change),
        "show_review": reviewing,  # approve and reject: the same person, the same state
        "approve_refused": mfa_refusal,
    }


# ---------------------------------------------------------------------------
# Why a change failed, from the events the pipeline wrote


FAILED_STATES = frozenset({State.APPLY_FAILED, State.ROLLED_BACK, State.ROLLBACK_FAILED, State.DRIFTED})
FAILURE_ACTIONS = frozenset({"apply_failed", "rollback_failed", "change_rolled_back", "change_drifted"})


def _lines(kind: TargetKind, key: str, steps: dict[str, Any], value: Any) -> list[str]:
    step = steps.get(key)
    rrkey = step.key if step is not None else RRKey(*(key.rsplit(" ", 1) + [""])[:2])
    try:
        parsed = value if isinstance(value, RRValue) or value is None else RRValue.from_json(value)
        return kind.value_lines(rrkey, parsed) or ["(absent)"]
    except (TypeError, ValueError, KeyError, AttributeError):  # a payload from another version: shown as stored
        return [json.dumps(value, sort_keys=True)]


def _moved(change: ChangeRequest, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The keys that moved: what the approved plan was read with, and what was live instead."""
    plan = change_plan_of(change)
    steps = {str(step.key): step for step in (plan.steps if plan else [])}
    kind = kind_of(change.target)
    live = payload.get("live") or {}
    return [
        {"key": key,
         "planned": _lines(kind, key, steps, steps[key].before) if key in steps else ["(not in the plan)"],
         "live": _lines(kind, key, steps, live.get(key))}
        for key in payload.get("moved") or payload.get("keys") or []
    ]


def failure_context(change: ChangeRequest, events: list[AuditEvent]) -> dict[str, Any]:
    """The "why it failed" box at the top, or nothing for a change that did not fail."""
    if change.state not in FAILED_STATES:
        return {}
    event = next((e for e in reversed(events) if e.action in FAILURE_ACTIONS), None)
    if event is None:
        return {}
    payload = event.payload or {}
    because = payload.get("because") or {}
    checks = because.get("failed_checks") or payload.get("failed_checks") or []
    rounds = because.get("round") or payload.get("round")
    reverted = because.get("reverted_by_target") or payload.get("reverted_by_target") or ""
    error = str(payload.get("error") or "")
    if checks:
        names = ", ".join(str(check.get("name", "?")) for check in checks)
        cause = f"health check{'s' if len(checks) > 1 else ''} {names} failed" + (f" in round {rounds}" if rounds else "")
    elif reverted:
        cause = f"the target reverted it: {reverted}"
    else:
        cause = ""
    if change.state == State.DRIFTED:
        moved = payload.get("moved") or []
        headline = (f"Drifted: {len(moved)} key{'s' if len(moved) != 1 else ''} changed outside changegate since "
                    "the plan was approved; the approvals no longer count. Re-plan and submit it again.")
    elif change.state == State.ROLLED_BACK:
        headline = f"Rolled back: {cause}." if cause else "Rolled back."
    elif change.state == State.ROLLBACK_FAILED:
        headline = f"The rollback failed: {error}." if error else "The rollback failed."
        if cause:
            headline += f" It was rolling back because {cause}."
    else:
        headline = f"Applying failed: {error}." if error else "Applying failed."
    return {"failure": {
        "headline": headline, "event": event, "failed_checks": checks, "round": rounds, "reverted": reverted,
        "error": error, "moved": _moved(change, payload) if payload.get("moved") or payload.get("keys") else [],
    }}


# ---------------------------------------------------------------------------
# Health checks: what is declared, and every round that ran


def _settings(check: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in check.items() if key not in ("type", "name"))


def checks_context(change: ChangeRequest, events: list[AuditEvent]) -> dict[str, Any]:
    declared = [
        {"name": check_name(check), "kind": check.get("type", ""), "settings": _settings(check), "source": source}
        for source, checks in (("this change", change.health_checks), ("the target", change.target.health_checks))
        for check in (checks or []) if isinstance(check, dict)
    ]
    rounds = [
        {"at": event.created_at, "phase": (event.payload or {}).get("phase", ""),
         "round": (event.payload or {}).get("round"), "ok": (event.payload or {}).get("ok"),
         "results": (event.payload or {}).get("results") or []}
        for event in events if event.action == "checks_round"
    ]
    return {"declared_checks": declared, "check_rounds": rounds}


# ---------------------------------------------------------------------------
# The page


def change_page_context(request: HttpRequest, change: ChangeRequest, *, events: list[tuple[AuditEvent, str]],
                        comment_form: CommentForm | None = None) -> dict[str, Any]:
    """Everything the change page shows but the admin's frame (each_context, opts)."""
    user = request.user
    valid_ids = set(approvals_valid(change).values_list("pk", flat=True))
    required, required_why = required_text(change)
    plain_events = [event for event, _ in events]
    executions = list(change_executions(change))
    return {
        "change": change,
        "original": change,
        "editors": list(change.editors.all()),
        "risks": [(flag, risk_description(flag, "")) for flag in change.risk_flags],
        "diff": plan_diff_html(change),
        # What changed since the previous plan and since this person's last review,
        # from the events already read for the list below (no statement of its own).
        **interdiff_context(change, plain_events, user.pk),
        "steps": step_count(change),
        "events": events,
        "executions": executions,  # every attempt, oldest first
        # Where it is now and until when (baking until, waiting for its window, watching).
        "phase": change_phase(change, executions[-1] if executions else None),
        **offered(user, change, request),  # type: ignore[arg-type]
        "approvals": [(approval, approval.pk in valid_ids) for approval in approvals_of(change)],
        "approved_by_me": approvals_valid(change).filter(approver_id=user.pk).first(),
        "approvals_valid_count": len(valid_ids),
        "approvals_required": required,
        "approvals_required_why": required_why,
        # How long it will be watched once applied (the same rule the worker bakes by).
        "bake_why": bake_for(change, change.target).why,
        # The watch window after applied (pipeline.watch), and the revert links both ways.
        "watch_text": watch_text(change),
        "reverted_by": list(change.reverted_by.order_by("pk")),
        **live_drift_context(change),
        **failure_context(change, plain_events),
        **checks_context(change, plain_events),
        # Each key the plan touches, linked to every change that ever touched it.
        "record_links": [(f"{step['name']} {step['type']}",
                          record_history_url(target=change.target_id, name=step["name"], rdtype=step["type"]))
                         for step in (change.plan or {}).get("steps", [])],
        "comments": list(change_comments(change)),
        "comment_form": comment_form or CommentForm(),
        "can_view_events": user.has_perm("changes.view_auditevent"),
    }


def approve_confirm_context(change: ChangeRequest, *, fingerprint: str, comment: str,
                            unticked: bool) -> dict[str, Any]:
    """The confirmation page: the plan shown again, with the box to tick."""
    required, required_why = required_text(change)
    return {
        "change": change,
        "original": change,
        "fingerprint": fingerprint,
        "current": fingerprint == change.fingerprint,
        "comment": comment,
        "steps": step_count(change),
        "diff": plan_diff_html(change),
        "approvals_valid_count": approvals_valid(change).count(),
        "approvals_required": required,
        "approvals_required_why": required_why,
        "unticked": unticked,
    }
