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
a timer, and published to a file or webhook (`audit_checkpoints_publish`), or an
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
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

from .locking import key_share
from .models import (
    AuditChainHead,
    AuditCheckpoint,
    AuditCheckpointPublication,
    AuditEvent,
    ChangeRequest,
    Origin,
    Target,
    checkpoint_message,
)

EXPORT_FORMAT = "changegate-audit/1"
GENESIS_HASH = "0" * 64
WEBHOOK_TIMEOUT = 5.0
PUBLISH_BATCH = 200  # checkpoints sent per sink per run; the rest on the next run

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
    head, _ = AuditChainHead.objects.select_for_update().get_or_create(id=1)
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
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(id=1)
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


# ---------------------------------------------------------------------------
# Checkpoints on a timer, and out of the database


def audit_checkpoint_tick(*, now: dt.datetime | None = None) -> AuditCheckpoint | None:
    """The timer's checkpoint (Celery beat, every CHANGEGATE_AUDIT_CHECKPOINT_SECONDS):
    sign the head when it moved since the last checkpoint, so a quiet chain is
    vouched for too, not only every N events.

    Refuses to sign (logs an error, returns None) when the event at the last
    checkpoint's seq no longer has the hash that checkpoint signed: signing now
    would vouch for a rewritten history. Returns None without a key or a new event."""
    key = _signing_key()
    if key is None:
        return None
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(id=1)
        if head.seq == 0:
            return None
        last = AuditCheckpoint.objects.order_by("-seq", "-pk").values_list("seq", "head_hash").first()
        if last is not None:
            if last == (head.seq, head.hash):
                return None
            signed = AuditEvent.objects.filter(seq=last[0]).values_list("hash", flat=True).first()
            if signed != last[1]:
                logger.error("audit chain no longer extends the checkpoint at seq %s: not signing its head; "
                             "run manage.py audit_verify", last[0])
                return None
        return _checkpoint_write(key, seq=head.seq, head_hash=head.hash, created_at=now or timezone.now())


class PublishError(Exception):
    """A sink did not take a checkpoint (the message names the sink, never a secret)."""


SINK_FILE = "file"
SINK_WEBHOOK = "webhook"


def publish_sinks() -> list[tuple[str, Callable[[dict[str, Any]], None]]]:
    """The configured off-database sinks: (name, deliver(record))."""
    sinks: list[tuple[str, Callable[[dict[str, Any]], None]]] = []
    if settings.CHANGEGATE_AUDIT_CHECKPOINT_FILE:
        sinks.append((SINK_FILE, _file_sink(settings.CHANGEGATE_AUDIT_CHECKPOINT_FILE)))
    if settings.CHANGEGATE_AUDIT_CHECKPOINT_WEBHOOK:
        sinks.append((SINK_WEBHOOK, _webhook_sink(settings.CHANGEGATE_AUDIT_CHECKPOINT_WEBHOOK)))
    return sinks


def audit_checkpoints_publish() -> dict[str, int]:
    """Send every checkpoint that a configured sink has not confirmed yet, oldest
    first, as its export line (the format `changegate-audit verify --checkpoints`
    reads). A sink that fails stops at that checkpoint: the error is logged and
    stored on its publication row, and the next run retries from there. Returns
    {sink: checkpoints sent}.

    Checkpoint ids follow commit order: every checkpoint is inserted while its
    transaction holds the chain head lock, until it commits, so no checkpoint with
    a lower id can appear after the marker moved past it."""
    return {sink: _publish_to(sink, deliver) for sink, deliver in publish_sinks()}


def _publish_to(sink: str, deliver: Callable[[dict[str, Any]], None]) -> int:
    sent = 0
    with transaction.atomic():
        # The marker row lock keeps two publishers (an overlapping beat run, the
        # command) from sending the same checkpoints twice.
        AuditCheckpointPublication.objects.get_or_create(sink=sink)
        marker = AuditCheckpointPublication.objects.select_for_update().get(sink=sink)
        pending = list(AuditCheckpoint.objects.filter(pk__gt=marker.checkpoint_id).order_by("pk")[:PUBLISH_BATCH])
        for checkpoint in pending:
            try:
                deliver(checkpoint_record(checkpoint))
            except PublishError as exc:
                marker.failures += 1
                marker.last_error = str(exc)[:500]
                logger.error("audit checkpoint %s (seq %s) not published to the %s sink (attempt %s): %s; "
                             "retried on the next run", checkpoint.pk, checkpoint.seq, sink, marker.failures, exc)
                break
            marker.checkpoint_id = checkpoint.pk
            sent += 1
        else:
            marker.failures, marker.last_error = 0, ""
        marker.save()
    return sent


def _file_sink(path: str) -> Callable[[dict[str, Any]], None]:
    def deliver(record: dict[str, Any]) -> None:
        data = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode("ascii")
        try:
            # O_APPEND: one write lands whole at the end, even with another writer;
            # fsync before the marker moves, so "published" means on disk.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise PublishError(f"checkpoint file {path}: {exc.strerror or exc}") from None

    return deliver


def _webhook_sink(url: str) -> Callable[[dict[str, Any]], None]:
    where = urlsplit(url).hostname or "the webhook"  # never the URL: it may carry a token

    def deliver(record: dict[str, Any]) -> None:
        try:
            response = requests.post(url, json=record, timeout=WEBHOOK_TIMEOUT)
        except requests.RequestException as exc:
            raise PublishError(f"checkpoint webhook at {where}: {type(exc).__name__}") from None
        if not 200 <= response.status_code < 300:
            raise PublishError(f"checkpoint webhook at {where}: HTTP {response.status_code}")

    return deliver


def signing_public_key() -> bytes | None:
    """The raw public key of the configured signing key (None without one)."""
    key = _signing_key()
    return _raw_public(key.public_key()) if key is not None else None
