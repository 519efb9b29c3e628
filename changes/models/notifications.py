"""Notifications (pipeline.outbox): the outbox of alerts, one row per alert
per channel, delivered after commit and dead-lettered after its retries.
Separate because only the outbox reads and writes it.
"""

from __future__ import annotations

from django.db import models

from changes.models.requests import ChangeRequest
from changes.models.targets import Target


class Notification(models.Model):
    """One alert over one channel to one set of recipients: written in the
    transaction of the event it reports (an outbox row), delivered by a Celery
    task after commit, retried with backoff up to CHANGEGATE_NOTIFY_MAX_ATTEMPTS,
    then dead-lettered (state failed). `delivered` is only written after the SMTP
    server took the message or the webhook answered 2xx."""

    class Channel(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook"

    class State(models.TextChoices):
        PENDING = "pending"  # waiting for its first or next attempt
        DELIVERED = "delivered"
        FAILED = "failed"  # dead letter: every attempt failed

    event = models.CharField(max_length=64)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING, db_index=True)
    change = models.ForeignKey(ChangeRequest, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    target = models.ForeignKey(Target, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    recipients = models.JSONField(default=list, blank=True)  # email addresses (email channel)
    # The webhook URL as it was when the alert was raised. It may carry a token:
    # never shown, logged or audited; `destination` is what people see.
    webhook_url = models.TextField(blank=True, editable=False)
    destination = models.CharField(max_length=300, blank=True)  # host of the webhook, or "n recipients"
    subject = models.CharField(max_length=300)
    payload = models.JSONField(default=dict)
    attempts = models.PositiveIntegerField(default=0)  # attempts started in the current budget
    # An attempt in flight owns the row until then; a worker that died mid-attempt
    # loses it and the sweep publishes the row again.
    claimed_until = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField()
    last_error = models.TextField(blank=True)  # never the URL or a secret (pipeline.outbox)
    dead_letters = models.PositiveIntegerField(default=0)  # times it ended failed: the metric's counter
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-pk"]
        indexes = [models.Index(fields=["state", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.event} by {self.channel} to {self.destination} ({self.state})"
