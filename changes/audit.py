"""Writing the audit chain. Every service calls `audit_record` inside its own
transaction, so an event exists exactly when its change does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from .models import AuditChainHead, AuditEvent, ChangeRequest, Origin, Target


@dataclass(frozen=True)
class RequestOrigin:
    """Where an action came from: api/admin/cli/system, with the client's address."""

    kind: str = Origin.SYSTEM
    ip: str | None = None
    user_agent: str = ""

    @classmethod
    def from_request(cls, request: HttpRequest, *, kind: str) -> RequestOrigin:
        agent = request.META.get("HTTP_USER_AGENT", "")[:300]
        # The CLI talks to the API; its user agent tells the two apart.
        if kind == Origin.API and agent.startswith("changegate-cli/"):
            kind = Origin.CLI
        return cls(kind=kind, ip=request.META.get("REMOTE_ADDR") or None, user_agent=agent)


SYSTEM = RequestOrigin()


def audit_record(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    origin: RequestOrigin,
    action: str,
    target: Target | None = None,
    change: ChangeRequest | None = None,
    payload: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain. Must run inside the caller's transaction."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction of the change it records")
    # The head row lock serializes writers: sequence numbers have no gaps and every
    # event's prev_hash is the hash of the one before it.
    head, _ = AuditChainHead.objects.select_for_update().get_or_create(id=1)
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    event = AuditEvent(
        seq=head.seq + 1,
        created_at=timezone.now(),
        actor=user,
        actor_username=user.get_username() if user else "",
        origin=origin.kind,
        client_ip=origin.ip,
        user_agent=origin.user_agent,
        action=action,
        target=target if target is not None else (change.target if change is not None else None),
        change=change,
        payload=payload or {},
        prev_hash=head.hash,
    )
    event.hash = event.compute_hash()
    event.save()
    AuditChainHead.objects.filter(id=1).update(seq=event.seq, hash=event.hash)
    return event


def chain_verify(events: list[AuditEvent], *, start_hash: str = "0" * 64) -> int | None:
    """Return the seq of the first event whose link or hash is wrong, else None."""
    previous = start_hash
    expected_seq = events[0].seq if events else 1
    for event in events:
        if event.seq != expected_seq or event.prev_hash != previous or event.compute_hash() != event.hash:
            return event.seq
        previous, expected_seq = event.hash, expected_seq + 1
    return None
