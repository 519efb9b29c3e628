"""The state machine's moving parts, shared by `changes.services` and
`approvals.policy`: lock a change, move it along `TRANSITIONS` (the only code that
assigns `state`), and tell who belongs to a change's author set.

Locks are taken in the one order written down in `changes.locking`: change ->
target -> execution -> grant request -> audit chain head, the head always last."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from audit.chain import RequestOrigin, audit_record
from changes.errors import Conflict, InvalidTransition
from changes.locking import lock_change as _lock_change_row
from changes.models import EDITABLE, TRANSITIONS, ChangeRequest


def lock_change(change: ChangeRequest) -> ChangeRequest:
    """Lock the change, then its target: the first two steps of the lock order
    (`changes.locking`), FOR NO KEY UPDATE so inserts referencing them never wait."""
    return _lock_change_row(change.pk)


def lock_editable(change: ChangeRequest, *, revision: int) -> ChangeRequest:
    """Lock the change and prove it is still the revision the live read was for."""
    locked = lock_change(change)
    if locked.revision != revision:
        raise Conflict(f"change #{change.pk} was edited meanwhile; reload and try again")
    if locked.state not in EDITABLE:
        raise InvalidTransition(f"change #{change.pk} is {locked.state}; it can no longer be edited or re-planned")
    return locked


def can_move(change: ChangeRequest, to: str) -> bool:
    """Whether `TRANSITIONS` lets the change move from its state to `to`: the rule
    `transition` enforces, asked beforehand by a service or a page deciding what to offer."""
    return to in TRANSITIONS.get(change.state, frozenset())


def transition(
    change: ChangeRequest, to: str, *, actor: AbstractBaseUser | None, origin: RequestOrigin, action: str,
    payload: dict[str, Any] | None = None,
) -> None:
    """The only place that assigns `state`. Caller holds the row lock."""
    if not can_move(change, to):
        raise InvalidTransition(f"change #{change.pk} is {change.state}; it cannot move to {to}")
    previous = change.state
    change.state = to
    change.save()
    audit_record(actor=actor, origin=origin, action=action, change=change, outcome=to,
                 payload={"from": previous, "to": to, **(payload or {})})


def in_author_set(user: AbstractBaseUser, change: ChangeRequest) -> bool:
    return change.author_id == user.pk or change.editors.filter(pk=user.pk).exists()
