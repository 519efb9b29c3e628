"""Celery tasks: thin wrappers over pipeline.execution (the rules live there)."""

from __future__ import annotations

from celery import shared_task

from audit.checkpoints import audit_checkpoint_tick, audit_checkpoints_publish
from drift.sweep import oob_sweep
from pipeline.execution import execution_sweep
from pipeline.outbox import (
    emergency_reviews_overdue_alert,
    notification_deliver,
    notification_sweep,
)
from pipeline.run import execution_run
from pipeline.watch import watch_sweep


@shared_task(name="changes.apply_change", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def apply_change(execution_id: int) -> str:
    return execution_run(execution_id=execution_id)


@shared_task(name="changes.sweep_executions", ignore_result=True)
def sweep_executions() -> int:
    return len(execution_sweep())


@shared_task(name="changes.watch_applied", ignore_result=True)
def watch_applied() -> int:
    """One round of checks for every applied change whose watch window has one due."""
    return len(watch_sweep())


@shared_task(name="changes.check_out_of_band", ignore_result=True)
def check_out_of_band() -> int:
    """Read every due target's zone and report changes made behind changegate's back."""
    return len(oob_sweep())


@shared_task(name="changes.audit_checkpoint", ignore_result=True)
def audit_checkpoint() -> int:
    """Sign the audit head if it moved, then publish pending checkpoints off the database."""
    audit_checkpoint_tick()
    return sum(audit_checkpoints_publish().values())


# Notifications: acks_late so a worker killed mid-attempt has its message redelivered;
# the claim in notification_deliver makes a duplicate a no-op. Retries are published by
# the service with a countdown (the row holds the attempt count, not the broker); a
# countdown message Redis redelivers after its visibility timeout finds the attempt taken.
@shared_task(name="changes.deliver_notification", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver_notification(notification_id: int, attempt: int) -> str:
    return notification_deliver(notification_id=notification_id, attempt=attempt)


@shared_task(name="changes.sweep_notifications", ignore_result=True)
def sweep_notifications() -> int:
    """Re-publish notifications nobody picked up; alert overdue break-glass reviews."""
    return len(notification_sweep()) + len(emergency_reviews_overdue_alert())
