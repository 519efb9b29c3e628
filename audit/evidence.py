"""The evidence report of one change: everything an assessor needs about it in one
JSON document (the plan, who approved which fingerprint, every attempt and check,
the rollback, and the change's audit events with their hashes). Reads only; the API
view and the admin's printable page render it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from approvals.standing import approvals_of, approvals_required, approvals_valid
from audit.chain import event_checked
from changes.kinds import risk_description
from changes.models import ChangeRequest, CheckResult, Execution
from changes.selectors import change_events, change_executions
from pipeline.bake_time import bake_for


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _person(user: AbstractBaseUser | None) -> dict[str, Any] | None:
    return {"id": user.pk, "username": user.get_username()} if user is not None else None


def _event_person(event: dict[str, Any]) -> dict[str, Any]:
    return {"id": event["actor_id"], "username": event["actor_username"]}


def _execution(execution: Execution | None) -> dict[str, Any] | None:
    if execution is None:
        return None
    return {
        "id": execution.pk,
        "worker": execution.lease_owner,
        "state": execution.state,
        "claims": execution.claims,
        "attempts": execution.claims,  # the old name of `claims` (an Execution is now itself an attempt)
        "token": execution.token,
        "fence": execution.token,
        "hold_reason": execution.hold_reason,
        "retries": execution.retries,
        "retrying_since": _iso(execution.retrying_since),
        "retry_at": _iso(execution.retry_at),
        "enqueued_at": _iso(execution.enqueued_at),
        "started_at": _iso(execution.started_at),
        "applied_at": _iso(execution.applied_at),
        "finished_at": _iso(execution.finished_at),
        "outcome": execution.outcome,
        "apply_result": execution.apply_result,
        "rollback_result": execution.rollback_result,
        "error": execution.error,
        "log": execution.log,
    }


def _checks(execution: Execution | None) -> list[dict[str, Any]]:
    if execution is None:
        return []
    results: Iterable[CheckResult] = execution.check_results.order_by("phase", "round", "pk")
    return [
        {"phase": r.phase, "round": r.round, "name": r.name, "kind": r.kind, "ok": r.ok, "detail": r.detail,
         "duration_ms": r.duration_ms, "at": _iso(r.created_at)}
        for r in results
    ]


def _rollback(events: list[dict[str, Any]], execution: Execution | None) -> dict[str, Any] | None:
    started = next((e for e in events if e["action"] == "rollback_started"), None)
    if started is None:
        return None
    ended = next((e for e in events if e["action"] in ("change_rolled_back", "rollback_failed")), None)
    return {
        "started_at": started["created_at"],
        "failed_checks": started["payload"].get("failed_checks", []),
        "outcome": (ended["payload"].get("to") or ended["action"]) if ended else None,
        "finished_at": ended["created_at"] if ended else None,
        "result": execution.rollback_result if execution else None,
        "error": ended["payload"].get("error", "") if ended else "",
    }


# The audit actions that say how a change met the target's change windows (held
# outside one, or break-glass ignoring one) and how a one-person revert was approved.
WINDOW_ACTION_PREFIX = "change_window"
REVERT_APPROVED = "change_revert_approved"


def _aftercare(change: ChangeRequest, events: list[dict[str, Any]]) -> dict[str, Any]:
    """What watched the change once applied and what undid it (issue 16): the bake
    and why it lasted that long, the watch window, the change it reverts or the
    changes that revert it, how a revert was approved, and the change windows it met."""
    bake = bake_for(change, change.target)
    approved = next((e for e in events if e["action"] == REVERT_APPROVED), None)
    return {
        "bake": {"seconds": bake.seconds, "why": bake.why},
        "watch_until": _iso(change.watch_until),
        "reverts": change.reverts_id,
        "reverted_by": list(change.reverted_by.order_by("pk").values_list("pk", flat=True)),
        "revert_approval": ({"seq": approved["seq"], "by": _event_person(approved), "at": approved["created_at"],
                             "payload": approved["payload"]} if approved else None),
        "window_events": [{"seq": e["seq"], "action": e["action"], "at": e["created_at"], "payload": e["payload"]}
                          for e in events if e["action"].startswith(WINDOW_ACTION_PREFIX)],
    }


def change_evidence(change: ChangeRequest) -> dict[str, Any]:
    """What happened to `change`, for an auditor (PCI DSS v4 6.5.1 / 10.2.2, SOC 2
    CC8.1): who asked and why, the exact plan and its fingerprint, who approved
    which fingerprint when, rejections, the break-glass flag and its review, the
    execution with the adapter's answers, every health-check result, the
    rollback, and the change's audit events with their hashes. JSON-ready values.
    No secret is stored anywhere it reads from (targets hold key file paths).

    The events are read from their stored canonical text (the hashed record), and
    so are the rejections, cancellations and rollback told from them; an event
    whose columns disagree with it is listed in `tampered_events` with the fields,
    and `tampered` is true."""
    change = ChangeRequest.objects.select_related(
        "target", "author", "emergency_by", "emergency_reviewed_by").get(pk=change.pk)
    checked = [event_checked(event) for event in change_events(change)]
    events = [c.record for c in checked]
    execution = change.execution  # the latest attempt (a re-approved change has several)
    valid_ids = set(approvals_valid(change).values_list("pk", flat=True))
    return {
        "generated_at": timezone.now().isoformat(),
        "change": {
            "id": change.pk, "title": change.title, "reason": change.reason, "reference": change.reference,
            "state": change.state,
            "revision": change.revision, "allow_apex": bool(change.options.get("allow_apex")),
            "created_at": _iso(change.created_at),
            "submitted_at": _iso(change.submitted_at), "updated_at": _iso(change.updated_at),
        },
        "requester": _person(change.author),
        "editors": [_person(user) for user in change.editors.order_by("pk")],
        "target": {"id": change.target.pk, "name": change.target.name, "kind": change.target.kind,
                   "zone": change.target.config.get("zone", "")},
        "items": change.items,
        "health_checks": change.health_checks,
        "target_health_checks": change.target.health_checks,
        "plan": change.plan,
        "fingerprint": change.fingerprint,
        "planned_at": _iso(change.planned_at),
        "risk_flags": [{"flag": flag, "description": risk_description(flag)} for flag in change.risk_flags],
        "approvals_required": approvals_required(change),
        "approvals": [
            {"approver": _person(a.approver), "fingerprint": a.fingerprint,
             "matches_plan": a.fingerprint == change.fingerprint, "comment": a.comment,
             "created_at": _iso(a.created_at), "expires_at": _iso(a.expires_at), "valid": a.pk in valid_ids,
             "invalidated_at": _iso(a.invalidated_at), "invalidated_reason": a.invalidated_reason}
            for a in approvals_of(change)
        ],
        "rejections": [
            {"seq": e["seq"], "by": _event_person(e), "at": e["created_at"],
             "comment": e["payload"].get("comment", ""), "fingerprint": e["payload"].get("fingerprint", "")}
            for e in events if e["action"] == "change_rejected"
        ],
        "cancellations": [
            # The reason a cancellation must give (older events: a comment).
            {"seq": e["seq"], "by": _event_person(e), "at": e["created_at"],
             "comment": e["payload"].get("reason", e["payload"].get("comment", ""))}
            for e in events if e["action"] == "change_cancelled"
        ],
        "emergency": {
            "flag": change.emergency, "reason": change.emergency_reason, "by": _person(change.emergency_by),
            "at": _iso(change.emergency_at), "reviewed_by": _person(change.emergency_reviewed_by),
            "reviewed_at": _iso(change.emergency_reviewed_at), "review_comment": change.emergency_review_comment,
        },
        # Every attempt, oldest first, each with its own checks; `execution` and
        # `checks` are the latest attempt's, as before there were several.
        "executions": [{**_execution(attempt), "checks": _checks(attempt)} for attempt in change_executions(change)],
        "execution": _execution(execution),
        "checks": _checks(execution),
        "rollback": _rollback(events, execution),
        "aftercare": _aftercare(change, events),
        "events": events,
        "tampered": any(c.tampered for c in checked),
        "tampered_events": [{"seq": c.record["seq"], "fields": list(c.tampered)} for c in checked if c.tampered],
    }
