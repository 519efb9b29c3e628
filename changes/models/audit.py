"""The append-only, hash-chained audit log: events, the chain head that
serializes writers, signed checkpoints and how far each sink has received them,
plus the canonical bytes a hash or a signature covers. Separate because the
offline verifier (changegate_audit) must rebuild exactly these bytes, so this is
the one place to read when the hashed form is in question.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.conf import settings
from django.db import models

from changes.models.requests import ChangeRequest
from changes.models.targets import Target


class Origin(models.TextChoices):
    API = "api"
    ADMIN = "admin"
    CLI = "cli"
    SYSTEM = "system"


class AuditChainHead(models.Model):
    """The one row that serializes audit writers: whoever holds its row lock owns
    the next sequence number, so the chain never forks or skips."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64, default="0" * 64)


class AppendOnlyError(Exception):
    pass


class AppendOnlyQuerySet(models.QuerySet):
    """Bulk ORM writes would bypass the models' `save()`/`delete()`; refuse them
    here too (the database triggers from migration 0004 refuse raw SQL)."""

    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyError(f"{self.model._meta.verbose_name_plural} are append-only")

    def delete(self) -> Any:
        raise AppendOnlyError(f"{self.model._meta.verbose_name_plural} are append-only")

    delete.queryset_only = True  # type: ignore[attr-defined]  # as Django's: no Manager.delete()


class CanonicalPayloadEncoder(json.JSONEncoder):
    """The payload column's JSON text as the canonical text spells the payload
    (sorted keys, compact, ASCII): on SQLite the column then holds exactly the
    payload's part of `canonical_text`, so the export's column check is one string
    comparison instead of decoding both (audit.export._intact). PostgreSQL's jsonb
    keeps its own spelling; nothing reads the column's text otherwise."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "sort_keys": True, "separators": (",", ":"), "ensure_ascii": True})


class AuditEvent(models.Model):
    """Append-only, hash-chained record of everything that happened."""

    seq = models.PositiveBigIntegerField(unique=True)
    created_at = models.DateTimeField()
    # The user id is a copy, not a live reference: deleting a user must neither
    # rewrite (SET NULL would change a hashed field, and the UPDATE trigger refuses
    # it) nor be blocked by the log. `actor_username` keeps the name readable.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False,
    )
    actor_username = models.CharField(max_length=150, blank=True)  # survives deletion of the user
    origin = models.CharField(max_length=8, choices=Origin.choices)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    action = models.CharField(max_length=64)
    target = models.ForeignKey(Target, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    target_name = models.CharField(max_length=253, blank=True)  # the name at the time, if renamed later
    change = models.ForeignKey(ChangeRequest, null=True, blank=True, on_delete=models.PROTECT, related_name="events")
    outcome = models.CharField(max_length=64, blank=True)  # resulting state, or "ok"
    payload = models.JSONField(default=dict, encoder=CanonicalPayloadEncoder)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)
    # The exact ASCII bytes the hash covers, kept from write time so an export
    # splices them into its line instead of decoding and re-encoding every row.
    # Not hashed itself (it IS the hashed text); NULL on rows older than the column.
    canonical_text = models.TextField(null=True, blank=True, editable=False)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"{self.seq} {self.action}"

    def canonical(self) -> bytes:
        return canonical_event(self.hash_fields())

    def hash_fields(self) -> dict[str, Any]:
        """Every field the hash covers; the export writes exactly these keys."""
        return {
            "seq": self.seq,
            "created_at": self.created_at.isoformat(),
            "actor_id": self.actor_id,
            "actor_username": self.actor_username,
            "origin": self.origin,
            "client_ip": self.client_ip,
            "user_agent": self.user_agent,
            "action": self.action,
            "target_id": self.target_id,
            "target_name": self.target_name,
            "change_id": self.change_id,
            "outcome": self.outcome,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
        }

    def compute_hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise AppendOnlyError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise AppendOnlyError("audit events are append-only")


class AuditCheckpoint(models.Model):
    """An Ed25519 signature over (seq, head hash, time) of the chain: whoever holds
    the public key can tell a later export still extends this exact history.

    Append-only like the events (same triggers)."""

    seq = models.PositiveBigIntegerField(db_index=True)
    head_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    key_id = models.CharField(max_length=16)  # first 16 hex of sha256(raw public key)
    signature = models.TextField()  # base64 of the 64-byte Ed25519 signature
    public_key = models.TextField()  # base64 of the raw 32-byte public key

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["seq", "id"]

    def __str__(self) -> str:
        return f"checkpoint {self.seq} {self.key_id}"

    def signed_bytes(self) -> bytes:
        return checkpoint_message(seq=self.seq, head_hash=self.head_hash, created_at=self.created_at.isoformat())

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise AppendOnlyError("audit checkpoints are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise AppendOnlyError("audit checkpoints are append-only")


class AuditCheckpointPublication(models.Model):
    """How far one off-database sink (the checkpoint file, the webhook) has received
    the checkpoints: every checkpoint with a higher id is still to be sent. Only
    moved forward after the sink confirmed (file written and fsynced, webhook 2xx),
    so a failed publish is retried and never counted as done. Not evidence itself:
    someone with the database can move it, and at worst stops future publishing,
    never takes back what the sink already holds."""

    sink = models.CharField(max_length=16, unique=True)  # "file" or "webhook"
    checkpoint_id = models.PositiveBigIntegerField(default=0)  # the last AuditCheckpoint.pk delivered
    failures = models.PositiveIntegerField(default=0)  # failed attempts since the last success
    last_error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.sink} published through checkpoint #{self.checkpoint_id}"


def canonical_event(fields: dict[str, Any]) -> bytes:
    """The bytes an event's hash covers: sorted-key compact JSON (the offline
    verifier recomputes exactly this)."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str).encode()


def checkpoint_message(*, seq: int, head_hash: str, created_at: str) -> bytes:
    """The bytes a checkpoint's signature covers (the offline verifier rebuilds them)."""
    return json.dumps({"seq": seq, "head_hash": head_hash, "created_at": created_at},
                      sort_keys=True, separators=(",", ":")).encode()
