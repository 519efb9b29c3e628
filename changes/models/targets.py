"""The target: a DNS zone or a firewall's owned tables that changes are proposed against,
with its approval policy and the permissions roles are granted on. Every other
model points at it, so it sits alone at the bottom of the package and imports
nothing from its siblings.
"""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class Target(models.Model):
    """A DNS zone or a firewall's owned tables that changes are proposed against."""

    name = models.CharField(max_length=253, unique=True)
    # A registered target kind (changes/kinds.py: "dns", "nft"). No choices here: the
    # registry is the one list, and services refuse a name it does not know.
    kind = models.CharField(max_length=16, default="dns")
    # Validated by the adapter. Secrets are never stored: only file references.
    config = models.JSONField(default=dict)
    required_approvals = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(10)]
    )
    # Ranges mirror services.POLICY_RANGES so the admin form refuses what the service would.
    approval_lifetime_seconds = models.PositiveIntegerField(
        default=24 * 3600, validators=[MinValueValidator(60), MaxValueValidator(30 * 86400)]
    )
    # The bake's minimum. A kind whose old state is cached (DNS: TTLs) bakes until the
    # caches may have let go of it, up to `bake_max_seconds` (pipeline/bake_time.py).
    bake_seconds = models.PositiveIntegerField(default=60, validators=[MaxValueValidator(86400)])
    bake_max_seconds = models.PositiveIntegerField(
        default=3600, validators=[MaxValueValidator(86400)],
        help_text="The longest a cache-derived bake (DNS: the old TTLs) may last; bake_seconds still applies.",
    )
    # The watch window after `applied` (issue 16): the declared checks keep running
    # every `watch_interval_seconds` for `watch_seconds` after the bake (null: as long
    # as the change's bake, the TTL-derived span); a failure alerts the author and
    # approvers and, with `watch_auto_revert`, reverts the change. While the window
    # runs, the author or one approver may revert it alone (changes.services.reverts).
    watch_seconds = models.PositiveIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(7 * 86400)],
        help_text="Seconds to keep checking after the bake; empty = as long as the change's bake.",
    )
    watch_interval_seconds = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1), MaxValueValidator(3600)],
        help_text="Seconds between check rounds in the watch window.",
    )
    watch_auto_revert = models.BooleanField(
        default=True, help_text="A check that fails in the watch window reverts the change automatically.",
    )
    # When changes may be applied (pipeline.windows): {"timezone": "Europe/Berlin",
    # "weekly": [{"days": ["mon", ...], "start": "09:00", "end": "17:00"}],
    # "freezes": [{"start": ISO, "end": ISO, "reason": "..."}]}. Empty: always.
    change_windows = models.JSONField(default=dict, blank=True)
    health_checks = models.JSONField(default=list, blank=True)
    frozen = models.BooleanField(default=False, help_text="A frozen target accepts proposals but applies nothing.")
    # Cached from the last whole-zone read, for the mass-delete risk flag: reading
    # the whole zone on every proposal would make planning cost O(zone).
    # Break-glass changes older than this without an after-the-fact review are overdue.
    emergency_review_hours = models.PositiveIntegerField(default=24, validators=[MinValueValidator(1)])
    webhook_url = models.URLField(blank=True, help_text="Alerts are POSTed here as JSON (optional).")
    # How many keyed values (DNS: RRsets) the target held at the last whole read.
    item_count = models.PositiveIntegerField(null=True, blank=True)
    item_count_at = models.DateTimeField(null=True, blank=True)
    # Out-of-band change detection (drift.sweep): how often the whole zone is read
    # and compared with its Baseline; 0 turns it off. `oob_checked_at` is the
    # last attempt, failed ones included, so an unreachable zone is retried (and
    # reported) once per interval, not on every sweep.
    oob_interval_seconds = models.PositiveIntegerField(
        default=300, validators=[MaxValueValidator(7 * 86400)],
        help_text="Seconds between whole-zone reads for out-of-band changes; 0 = off.",
    )
    oob_checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("submit_change", "Can propose and submit changes on this target"),
            ("approve_change", "Can approve changes on this target"),
            ("emergency_change", "Can apply emergency changes on this target"),
            ("export_audit", "Can export the audit log of this target"),
            # The operator role (changes.permissions): model-wide, never per target and
            # never implied by is_staff.
            ("operate_targets", "Operator: registers targets, edits their policy, grants roles"),
        ]

    def __str__(self) -> str:
        return self.name
