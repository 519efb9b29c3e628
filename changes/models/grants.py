"""Who may do what (changes.permissions): grant requests, and the history the
self-grant rule reads (privilege gains, who created each account). Separate
because these rows are about people and roles, not about changes.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from changes.models.targets import Target


class GrantRequest(models.Model):
    """A request to give `role` on `target` to a user or a group. Roles that let a
    person approve or break glass (reviewer, emergency) are only given when a
    second operator approves the request (changes.permissions)."""

    class State(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"

    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="grant_requests")
    role = models.CharField(max_length=32)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                             related_name="+")
    group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField()
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="+")
    requested_by_label = models.CharField(max_length=200, blank=True)  # "os:user@host" for a command
    created_at = models.DateTimeField(auto_now_add=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=True) ^ models.Q(group__isnull=True), name="grant_request_one_principal"
            ),
            # The database refuses a decision by the requester (four eyes on grants).
            models.CheckConstraint(
                condition=models.Q(decided_by__isnull=True) | ~models.Q(decided_by=models.F("requested_by")),
                name="grant_request_decider_is_not_requester",
            ),
        ]

    def __str__(self) -> str:
        who = self.user or self.group
        return f"{self.role} on {self.target} for {who} ({self.state})"


class PrivilegeGain(models.Model):
    """One row each time a user gained a privilege: a role on a target (target set),
    or something that reaches every target (target null: superuser flag, a
    model-wide permission, a group membership). Read by the rule that nobody
    approves where they, or the author, just gave them rights."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    target = models.ForeignKey(Target, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    privilege = models.CharField(max_length=200)
    granted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-at"]


class AccountOrigin(models.Model):
    """Who created each account (null: a command, `created_by_label` says which OS
    user). A person's second account may not approve that person's changes."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True,
                                related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_by_label = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
