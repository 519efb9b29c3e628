"""The change request and its lifecycle as data: `ChangeRequest.State`,
`TRANSITIONS`, `TERMINAL` and `EDITABLE`. Kept apart from the attempts that
apply a change (executions.py) because the lifecycle is what services and
permissions read, while the execution machinery is the pipeline's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models

from changes.models.targets import Target

if TYPE_CHECKING:
    # Only for the `execution` property's annotation, never imported at run time:
    # executions.py imports this module (its foreign key and `S`), so a run-time
    # import back would be a circle.
    from changes.models import Execution


class ChangeRequest(models.Model):
    class State(models.TextChoices):
        DRAFT = "draft"
        PENDING_APPROVAL = "pending_approval"
        APPROVED = "approved"
        APPLYING = "applying"
        VERIFYING = "verifying"
        APPLIED = "applied"
        APPLY_FAILED = "apply_failed"
        ROLLING_BACK = "rolling_back"
        ROLLED_BACK = "rolled_back"
        ROLLBACK_FAILED = "rollback_failed"
        REJECTED = "rejected"
        DRIFTED = "drifted"
        CANCELLED = "cancelled"

    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="changes")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="authored_changes")
    editors = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="edited_changes", blank=True)
    title = models.CharField(max_length=200)
    reason = models.TextField(help_text="Why the change is needed.")
    # The organisation's own change ticket (free text, e.g. CHG0012345), for auditors to match records.
    reference = models.CharField(max_length=100, blank=True, default="")
    items = models.JSONField(default=list)
    # The target kind's options for this change (DNS: {"allow_apex": true}); the
    # kind reads them when it validates and plans the items.
    options = models.JSONField(default=dict, blank=True)
    health_checks = models.JSONField(default=list, blank=True)
    # The author's own bake length, replacing the target's rule (pipeline/bake_time.py);
    # null = the rule. The reason is required with it and shown to reviewers.
    bake_override_seconds = models.PositiveIntegerField(null=True, blank=True, validators=[MaxValueValidator(86400)])
    bake_override_reason = models.TextField(blank=True, default="")
    state = models.CharField(max_length=20, choices=State.choices, default=State.DRAFT, db_index=True)
    # Bumped by every edit: a plan computed for an older revision is not stored.
    revision = models.PositiveIntegerField(default=1)
    plan = models.JSONField(null=True, blank=True)
    fingerprint = models.CharField(max_length=64, blank=True)
    planned_at = models.DateTimeField(null=True, blank=True)
    risk_flags = models.JSONField(default=list, blank=True)
    # The adapter's advice for the reviewer on the stored plan (an MX whose in-zone
    # target has no address), replaced whenever the plan is. Outside `plan` and the
    # fingerprint on purpose: an approval binds to what the plan does, and a warning
    # changes nothing it does (adapters/plan.py).
    plan_warnings = models.JSONField(default=list, blank=True)
    emergency = models.BooleanField(default=False)
    emergency_reason = models.TextField(blank=True)
    emergency_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="+")
    emergency_at = models.DateTimeField(null=True, blank=True)
    # The second pair of eyes a break-glass change gets after the fact.
    emergency_reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                              on_delete=models.PROTECT, related_name="+")
    emergency_reviewed_at = models.DateTimeField(null=True, blank=True)
    emergency_review_comment = models.TextField(blank=True)
    # A revert of a young change (issue 16): the exact inverse of that change's applied
    # plan, approved by its original approvals (changes.services.reverts).
    reverts = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="reverted_by")
    # The watch window after `applied` (pipeline.watch): its end, set when the bake
    # passes; the next round's due time (the sweep's claim); consecutive failed rounds.
    watch_until = models.DateTimeField(null=True, blank=True)
    watch_next_at = models.DateTimeField(null=True, blank=True)
    watch_failures = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["target", "state"])]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title}"

    @property
    def execution(self) -> Execution | None:
        """The latest attempt at applying this change; every attempt is kept."""
        return self.executions.order_by("-pk").first()


S = ChangeRequest.State
# The lifecycle of DESIGN.md as data. A move not listed here is refused.
TRANSITIONS: dict[str, frozenset[str]] = {
    S.DRAFT: frozenset({S.PENDING_APPROVAL, S.CANCELLED}),
    S.PENDING_APPROVAL: frozenset({S.APPROVED, S.REJECTED, S.CANCELLED, S.DRIFTED}),
    # approved -> apply_failed: the target could not even be read for the last re-plan.
    # approved -> pending_approval: its approvals lapsed before the worker started it.
    S.APPROVED: frozenset({S.APPLYING, S.DRIFTED, S.CANCELLED, S.APPLY_FAILED, S.PENDING_APPROVAL}),
    # rollback_failed straight from applying: the target dropped part of the update
    # and the adapter's immediate restore failed too (pipeline.run._partially_applied).
    S.APPLYING: frozenset({S.VERIFYING, S.APPLY_FAILED, S.DRIFTED, S.ROLLBACK_FAILED}),
    S.VERIFYING: frozenset({S.APPLIED, S.ROLLING_BACK}),
    S.ROLLING_BACK: frozenset({S.ROLLED_BACK, S.ROLLBACK_FAILED}),
    S.DRIFTED: frozenset({S.PENDING_APPROVAL, S.CANCELLED}),
}
TERMINAL: frozenset[str] = frozenset(
    {S.APPLIED, S.APPLY_FAILED, S.ROLLED_BACK, S.ROLLBACK_FAILED, S.REJECTED, S.CANCELLED}
)
# States in which the items may still be edited (and the plan re-run).
EDITABLE: frozenset[str] = frozenset({S.DRAFT, S.PENDING_APPROVAL, S.DRIFTED})
