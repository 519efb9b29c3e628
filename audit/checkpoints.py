"""Checkpoints on a timer, and out of the database: the timer signs the chain's
head when it moved (`audit_checkpoint_tick`), and `audit_checkpoints_publish`
sends every checkpoint a sink has not confirmed to a file or webhook, where the
database's owner cannot rewrite it (see `audit.chain` for what that proves)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.chain import _checkpoint_write, _signing_key, checkpoint_record, lock_chain_head
from changes.models import AuditCheckpoint, AuditCheckpointPublication, AuditEvent

WEBHOOK_TIMEOUT = 5.0
PUBLISH_BATCH = 200  # checkpoints sent per sink per run; the rest on the next run

# The chain's logger, not this module's: alerts on "changes.audit" errors keep seeing these (the logger name predates the audit room).
logger = logging.getLogger("changes.audit")



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
        head = lock_chain_head()
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
