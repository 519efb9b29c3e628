"""Writing the audit chain. Every service calls `audit_record` inside its own
transaction, so an event exists exactly when its change does.

Export format `changegate-audit/1` (JSON Lines; the offline verifier in
`changegate_audit` reads it without Django):

- an event line is `event_record(event)`: `{"type": "event", **event.hash_fields(),
  "hash": event.hash}`. The hash is the hex SHA-256 of `canonical_event(fields)`
  where `fields` is the line minus `type` and `hash`, i.e.
  `json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
  default=str).encode()`. `prev_hash` is the previous event's hash ("0" * 64 before
  seq 1); `seq` counts from 1 without gaps.
- a checkpoint line is `checkpoint_record(cp)`: `{"type": "checkpoint", "seq",
  "head_hash", "created_at" (ISO 8601), "key_id", "public_key", "signature"}`: an
  Ed25519 signature (base64) over `json.dumps({"seq", "head_hash", "created_at"},
  sort_keys=True, separators=(",", ":")).encode()`, made by the key whose raw
  32-byte public key is `public_key` (base64); `key_id` is the first 16 hex digits
  of SHA-256 of those 32 bytes. It asserts that event `seq` has hash `head_hash`.
- a column_mismatch line, `{"type": "column_mismatch", "seq", "fields"}`, right
  after an event line whose database columns no longer say what its stored
  canonical text (the hashed record, which the event line shows) says. The
  offline verifier fails on it (`tampered`).

What the chain proves, and what it cannot (issue 9): the hashes show any edit,
deletion, insertion or reordering *inside* an export, and the stored canonical
text is the record (columns that disagree with it are flagged, never shown as
the record). Someone who owns the database can still lift the append-only
triggers, rewrite the chain from some event on with every hash recomputed, or
drop its tail: the result is a valid chain. Only something kept out of the
database's reach shows that: checkpoints signed with a key the database owner
does not hold (`CHANGEGATE_AUDIT_SIGNING_KEY_FILE`), taken every N events and on
a timer, and published to a file or webhook (`audit.checkpoints`), or an
earlier export the auditor kept (`changegate-audit verify --extends`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.client_ip import client_address
from accounts.mfa import session_has_mfa
from changes.locking import key_share
from changes.models import (
    AuditChainHead,
    AuditCheckpoint,
    AuditEvent,
    ChangeRequest,
    Origin,
    Target,
    checkpoint_message,
)

EXPORT_FORMAT = "changegate-audit/1"
GENESIS_HASH = "0" * 64

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestOrigin:
    """Where an action came from: api/admin/cli/system, with the client's address."""

    kind: str = Origin.SYSTEM
    ip: str | None = None
    user_agent: str = ""
    # The person signed in through the identity provider with multi-factor
    # authentication, in this session (accounts.mfa). False for tokens, CLI, system.
    mfa: bool = False

    @classmethod
    def from_request(cls, request: HttpRequest, *, kind: str) -> RequestOrigin:
        agent = request.META.get("HTTP_USER_AGENT", "")[:300]
        # The CLI talks to the API; its user agent tells the two apart.
        if kind == Origin.API and agent.startswith("changegate-cli/"):
            kind = Origin.CLI
        return cls(kind=kind, ip=client_address(request) or None, user_agent=agent, mfa=session_has_mfa(request))


SYSTEM = RequestOrigin()


def lock_chain_head() -> AuditChainHead:
    """Lock the one chain-head row (created on first use): always the last lock of a
    transaction (changes.locking). Call inside a transaction."""
    head, _ = AuditChainHead.objects.select_for_update().get_or_create(id=1)
    return head


def audit_record(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    origin: RequestOrigin,
    action: str,
    target: Target | None = None,
    change: ChangeRequest | None = None,
    payload: dict[str, Any] | None = None,
    outcome: str = "ok",
) -> AuditEvent:
    """Append one event to the chain. Must run inside the caller's transaction.

    Every `CHANGEGATE_AUDIT_CHECKPOINT_EVERY` events it also writes a signed
    checkpoint (when a signing key is configured), in the same transaction.
    Raises RuntimeError outside a transaction.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction of the change it records")
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    target = target if target is not None else (change.target if change is not None else None)
    # The head is the last lock of every transaction (the lock order, changes.locking).
    # The event's foreign keys take KEY SHARE on these rows at COMMIT (deferred
    # constraints), after the head: take them now, before it, so a writer holding the
    # head never waits for a row lock (issue 10: the check-round writer did).
    key_share(user, change, target)
    # The head row lock serializes writers: sequence numbers have no gaps and every
    # event's prev_hash is the hash of the one before it.
    head = lock_chain_head()
    event = AuditEvent(
        seq=head.seq + 1,
        created_at=timezone.now(),
        actor=user,
        actor_username=user.get_username() if user else "",
        origin=origin.kind,
        client_ip=origin.ip,
        user_agent=origin.user_agent,
        action=action,
        target=target,
        target_name=target.name if target is not None else "",
        change=change,
        outcome=outcome,
        payload=payload or {},
        prev_hash=head.hash,
    )
    canonical = event.canonical()
    event.canonical_text = canonical.decode("ascii")
    event.hash = hashlib.sha256(canonical).hexdigest()
    event.save()
    AuditChainHead.objects.filter(id=1).update(seq=event.seq, hash=event.hash)
    every = settings.CHANGEGATE_AUDIT_CHECKPOINT_EVERY
    if every and event.seq % every == 0:
        key = _signing_key()
        if key is not None:
            _checkpoint_write(key, seq=event.seq, head_hash=event.hash, created_at=event.created_at)
    return event


def audit_checkpoint_create(*, now: dt.datetime | None = None) -> AuditCheckpoint | None:
    """Sign the current head of the chain on demand.

    Returns None when no signing key is configured (`CHANGEGATE_AUDIT_SIGNING_KEY_FILE`
    unset) or the chain is still empty. Raises ImproperlyConfigured when the key file
    cannot be read or is not an Ed25519 private key.
    """
    key = _signing_key()
    if key is None:
        return None
    with transaction.atomic():
        # Holding the head lock means no event can land between reading the head and
        # storing the signature over it.
        head = lock_chain_head()
        if head.seq == 0:
            return None
        return _checkpoint_write(key, seq=head.seq, head_hash=head.hash, created_at=now or timezone.now())


def audit_signing_key_generate(path: str | os.PathLike[str]) -> str:
    """Write a new Ed25519 private key as unencrypted PKCS#8 PEM to `path`, mode 0600,
    and return its raw public key, base64 (what auditors pass to the verifier).

    Refuses (FileExistsError) to overwrite an existing file: replacing a signing key
    is a decision, not a side effect. Once per deployment:

        manage.py audit_keygen /etc/changegate/audit-signing.pem --public-out audit-signing.pub

    then set CHANGEGATE_AUDIT_SIGNING_KEY_FILE=/etc/changegate/audit-signing.pem.
    """
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return base64.b64encode(_raw_public(key.public_key())).decode()


def checkpoint_verify(checkpoint: AuditCheckpoint, *, public_key: bytes | None = None) -> bool:
    """True when the checkpoint's signature is valid for `public_key` (raw 32 bytes),
    or, without one, for the public key stored with it (self-consistency only: an
    auditor should pass the key they trust)."""
    raw = public_key if public_key is not None else base64.b64decode(checkpoint.public_key)
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(base64.b64decode(checkpoint.signature),
                                                       checkpoint.signed_bytes())
    except (InvalidSignature, ValueError):
        return False
    return True


def event_record(event: AuditEvent) -> dict[str, Any]:
    """One event as an export line (format EXPORT_FORMAT)."""
    return {"type": "event", **event.hash_fields(), "hash": event.hash}


def checkpoint_record(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    """One checkpoint as an export line (format EXPORT_FORMAT)."""
    return {
        "type": "checkpoint",
        "seq": checkpoint.seq,
        "head_hash": checkpoint.head_hash,
        "created_at": checkpoint.created_at.isoformat(),
        "key_id": checkpoint.key_id,
        "public_key": checkpoint.public_key,
        "signature": checkpoint.signature,
    }


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _signing_key() -> Ed25519PrivateKey | None:
    """The configured key, read on each use: checkpoints are rare, and a rotated
    file takes effect without a restart."""
    path = settings.CHANGEGATE_AUDIT_SIGNING_KEY_FILE
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImproperlyConfigured(f"CHANGEGATE_AUDIT_SIGNING_KEY_FILE={path!r} cannot be read: {exc.strerror}") from None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, password=None)
        elif len(data) == 32:
            key = Ed25519PrivateKey.from_private_bytes(data)
        else:
            raise ValueError("neither PEM nor a raw 32-byte key")
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"CHANGEGATE_AUDIT_SIGNING_KEY_FILE={path!r}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ImproperlyConfigured(f"CHANGEGATE_AUDIT_SIGNING_KEY_FILE={path!r} is not an Ed25519 private key")
    return key


def _checkpoint_write(key: Ed25519PrivateKey, *, seq: int, head_hash: str, created_at: dt.datetime) -> AuditCheckpoint:
    # UTC, so the ISO string signed now is the one the database hands back later.
    created_at = created_at.astimezone(dt.UTC)
    raw_public = _raw_public(key.public_key())
    signature = key.sign(checkpoint_message(seq=seq, head_hash=head_hash, created_at=created_at.isoformat()))
    checkpoint = AuditCheckpoint(
        seq=seq,
        head_hash=head_hash,
        created_at=created_at,
        key_id=hashlib.sha256(raw_public).hexdigest()[:16],
        signature=base64.b64encode(signature).decode(),
        public_key=base64.b64encode(raw_public).decode(),
    )
    checkpoint.save()
    return checkpoint


def chain_verify(events: list[AuditEvent], *, start_hash: str = GENESIS_HASH) -> int | None:
    """Return the seq of the first event whose link or hash is wrong, else None."""
    previous = start_hash
    expected_seq = events[0].seq if events else 1
    for event in events:
        if event.seq != expected_seq or event.prev_hash != previous or event.compute_hash() != event.hash:
            return event.seq
        previous, expected_seq = event.hash, expected_seq + 1
    return None


# ---------------------------------------------------------------------------
# The stored canonical text is the record
#
# A database owner can edit a row's columns and leave `canonical_text` and `hash`
# alone: the chain still verifies (it covers the canonical text), but anything
# that displayed the columns would show the edited values under the old hash.
# So readers take the record from the canonical text, and compare the columns
# with it to flag such a row.


@dataclass(frozen=True)
class CheckedEvent:
    """One event as read for display: `record` is the export line of the hashed
    record (from the stored canonical text); `tampered` names what disagrees with
    it: columns, or "hash" when the stored text no longer hashes to the stored hash."""

    record: dict[str, Any]
    tampered: tuple[str, ...]


def event_checked(event: AuditEvent) -> CheckedEvent:
    """Read `event` from its stored canonical text and compare its columns with it."""
    columns = event.hash_fields()
    if event.canonical_text is None:  # written before the column existed: the columns are all there is
        bad = () if event.compute_hash() == event.hash else ("hash",)
        return CheckedEvent({"type": "event", **columns, "hash": event.hash}, bad)
    hashed = json.loads(event.canonical_text)
    bad = tuple(column_mismatches(hashed, columns))
    if hashlib.sha256(event.canonical_text.encode("ascii")).hexdigest() != event.hash:
        bad += ("hash",)
    return CheckedEvent({"type": "event", **hashed, "hash": event.hash}, bad)


def column_mismatches(hashed: dict[str, Any], columns: dict[str, Any]) -> list[str]:
    """The hashed fields whose column value (as `hash_fields` gives it, or with
    `created_at` still a datetime) differs from the hashed record, in key order.
    Compares meaning, not spelling: the same moment in another offset, the same
    address written differently (PostgreSQL's inet normalizes it)."""
    if hashed == columns:  # every intact row: one comparison in C
        return []
    bad = [key for key in hashed if key not in columns]
    for key, value in columns.items():
        stored = hashed.get(key, _ABSENT)
        if stored == value and type(stored) is type(value):
            continue
        if key == "created_at" and stored is not _ABSENT and _same_moment(stored, value):
            continue
        if key == "client_ip" and stored is not None and value is not None and _same_address(stored, value):
            continue
        if key == "payload" and stored == value:  # JSON: 1 and 1.0 are one number
            continue
        bad.append(key)
    return bad


_ABSENT = object()


def _same_moment(stored: Any, value: Any) -> bool:
    try:
        moment = dt.datetime.fromisoformat(stored)
        other = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    if moment.tzinfo is None or other.tzinfo is None:
        return False
    return moment == other


def _same_address(stored: Any, value: Any) -> bool:
    try:
        return ipaddress.ip_address(str(stored)) == ipaddress.ip_address(str(value).split("/")[0])
    except ValueError:
        return False


def signing_public_key() -> bytes | None:
    """The raw public key of the configured signing key (None without one)."""
    key = _signing_key()
    return _raw_public(key.public_key()) if key is not None else None
