"""Sign the audit chain's head now (if it moved) and publish pending checkpoints:
what the Celery beat entry `audit-checkpoint` does every
CHANGEGATE_AUDIT_CHECKPOINT_SECONDS, on demand."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.checkpoints import audit_checkpoint_tick, audit_checkpoints_publish, publish_sinks
from changes.models import AuditCheckpointPublication


class Command(BaseCommand):
    help = ("Sign the audit chain's head if it moved since the last checkpoint, then publish every checkpoint a "
            "configured sink (CHANGEGATE_AUDIT_CHECKPOINT_FILE, CHANGEGATE_AUDIT_CHECKPOINT_WEBHOOK) has not taken "
            "yet. Exits 1 if a sink failed (it is retried on the next run).")

    def handle(self, *args: Any, **options: Any) -> None:
        checkpoint = audit_checkpoint_tick()
        if checkpoint is not None:
            self.stdout.write(f"signed seq {checkpoint.seq} head {checkpoint.head_hash} (key_id {checkpoint.key_id})")
        else:
            self.stdout.write("no new checkpoint (no signing key, no new event, or see the log)")
        sent = audit_checkpoints_publish()
        if not publish_sinks():
            self.stdout.write("no sink configured: checkpoints stay in the database only")
        for sink, count in sent.items():
            self.stdout.write(f"published {count} checkpoint(s) to the {sink} sink")
        failed = AuditCheckpointPublication.objects.filter(sink__in=sent, failures__gt=0)
        if failed.exists():
            raise CommandError("; ".join(f"{m.sink}: {m.last_error} ({m.failures} failed attempts)" for m in failed))
