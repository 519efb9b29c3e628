"""Approvals: one row per reviewer's "yes" to one plan fingerprint."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from changes.models import ChangeRequest


class Approval(models.Model):
    change = models.ForeignKey(ChangeRequest, on_delete=models.PROTECT, related_name="approvals")
    approver = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # Copied from the change for the CHECK below. The CHECK alone trusts this copy;
    # the author-set triggers (approvals.backstop, migration 0002) read the author and
    # the editors from the change itself.
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    fingerprint = models.CharField(max_length=64)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    invalidated_at = models.DateTimeField(null=True, blank=True)
    invalidated_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            # One live approval per person per change; an invalidated one may be renewed.
            models.UniqueConstraint(
                fields=["change", "approver"],
                condition=models.Q(invalidated_at__isnull=True),
                name="approval_one_live_per_approver",
            ),
            models.CheckConstraint(
                condition=~models.Q(approver=models.F("author")), name="approval_approver_is_not_author"
            ),
        ]

    def __str__(self) -> str:
        return f"approval of #{self.change_id} by {self.approver_id}"
