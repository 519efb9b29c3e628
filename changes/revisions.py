"""A change's plan revisions and a person's last look at it, read from its audit events
(issue 15: "what changed since I last looked").

Every service that stores a plan writes it into its event's payload (`change_created`,
`change_edited`, `change_planned`), so the chain already holds every plan a reviewer
could have seen; nothing else is stored. These functions take the events the caller
has already read (the change page reads them once for its event list), in seq order,
so the page costs no extra statement."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from changes.models import AuditEvent

# The events whose payload carries the plan stored by that step.
PLAN_ACTIONS = frozenset({"change_created", "change_edited", "change_planned"})
# What a reviewer did on a change that shows they looked at its plan. A page view is
# not recorded, so it is not guessed at: only what the chain says they did.
REVIEW_ACTIONS = frozenset({"approval_given", "change_rejected", "comment_added"})


@dataclass(frozen=True)
class Revision:
    number: int  # 1-based, in the order the plans were stored
    fingerprint: str
    plan: dict[str, Any]
    event: AuditEvent  # the event that stored it first


@dataclass(frozen=True)
class LastLook:
    event: AuditEvent
    revision: Revision


def plan_revisions(events: Iterable[AuditEvent]) -> list[Revision]:
    """The plans a change has had, oldest first: a new revision each time the stored
    fingerprint differs from the one before (a re-plan or an edit that yields the same
    plan is not a new revision; a plan that comes back after another one is)."""
    revisions: list[Revision] = []
    for event in events:
        payload = event.payload or {}
        if event.action not in PLAN_ACTIONS or not payload.get("fingerprint") or not isinstance(
                payload.get("plan"), dict):
            continue
        if revisions and revisions[-1].fingerprint == payload["fingerprint"]:
            continue
        revisions.append(Revision(len(revisions) + 1, payload["fingerprint"], payload["plan"], event))
    return revisions


def revision_at(revisions: Sequence[Revision], seq: int) -> Revision | None:
    """The revision that was the change's plan when the event `seq` was written."""
    current = None
    for revision in revisions:
        if revision.event.seq > seq:
            break
        current = revision
    return current


def last_look(events: Sequence[AuditEvent], revisions: Sequence[Revision], user_id: Any) -> LastLook | None:
    """The person's last look at the change, or None if they never reviewed it
    (approved, rejected or commented). Their own edits and re-plans count as a look
    once they have reviewed: whoever stored a plan has seen it, and must not be told
    it changed since."""
    if user_id is None:
        return None
    mine = [event for event in events if event.actor_id == user_id]
    if not any(event.action in REVIEW_ACTIONS for event in mine):
        return None
    looks = [event for event in mine if event.action in REVIEW_ACTIONS or event.action in PLAN_ACTIONS]
    event = max(looks, key=lambda e: e.seq)
    revision = revision_at(revisions, event.seq)
    return LastLook(event, revision) if revision is not None else None
