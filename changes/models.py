"""Targets, change requests and the audit log.

State is data: `ChangeRequest.State` and `TRANSITIONS` below. Only
`changes.services` assigns `state`; nothing is derived in save() or signals.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class Target(models.Model):
    """A DNS zone (later: a firewall) that changes are proposed against."""

    class Kind(models.TextChoices):
        DNS = "dns", "DNS zone"

    name = models.CharField(max_length=253, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.DNS)
    # Validated by the adapter. Secrets are never stored: only file references.
    config = models.JSONField(default=dict)
    required_approvals = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(10)]
    )
    # Ranges mirror services.POLICY_RANGES so the admin form refuses what the service would.
    approval_lifetime_seconds = models.PositiveIntegerField(
        default=24 * 3600, validators=[MinValueValidator(60), MaxValueValidator(30 * 86400)]
    )
    bake_seconds = models.PositiveIntegerField(default=60, validators=[MaxValueValidator(86400)])
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
    # Out-of-band change detection (changes.oob): how often the whole zone is read
    # and compared with its ZoneBaseline; 0 turns it off. `oob_checked_at` is the
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
    items = models.JSONField(default=list)
    allow_apex = models.BooleanField(default=False)
    health_checks = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.DRAFT, db_index=True)
    # Bumped by every edit: a plan computed for an older revision is not stored.
    revision = models.PositiveIntegerField(default=1)
    plan = models.JSONField(null=True, blank=True)
    fingerprint = models.CharField(max_length=64, blank=True)
    planned_at = models.DateTimeField(null=True, blank=True)
    risk_flags = models.JSONField(default=list, blank=True)
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
    S.APPLYING: frozenset({S.VERIFYING, S.APPLY_FAILED, S.DRIFTED}),
    S.VERIFYING: frozenset({S.APPLIED, S.ROLLING_BACK}),
    S.ROLLING_BACK: frozenset({S.ROLLED_BACK, S.ROLLBACK_FAILED}),
    S.DRIFTED: frozenset({S.PENDING_APPROVAL, S.CANCELLED}),
}
TERMINAL: frozenset[str] = frozenset(
    {S.APPLIED, S.APPLY_FAILED, S.ROLLED_BACK, S.ROLLBACK_FAILED, S.REJECTED, S.CANCELLED}
)
# States in which the items may still be edited (and the plan re-run).
EDITABLE: frozenset[str] = frozenset({S.DRAFT, S.PENDING_APPROVAL, S.DRIFTED})


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
    payload = models.JSONField(default=dict)
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


class Execution(models.Model):
    """One attempt at applying an approved change: the outbox row written in the
    transaction that approves the change, claimed by exactly one worker at a time
    through a lease, and the record of what happened. A change approved again (after
    drift, or after its approvals lapsed) gets a new attempt; every attempt is kept.

    The attempt's own state machine is data, like the change's: `State`,
    `EXECUTION_TRANSITIONS` below, and `changes.execution.execution_advance`, the
    only code that assigns `state` (the claim's conditional UPDATE reads its
    sources from the same table)."""

    class State(models.TextChoices):
        PENDING = "pending"  # waiting for a worker: new, held (hold_reason) or retrying (retry_at)
        CLAIMED = "claimed"  # a worker holds the lease and re-checks before sending
        APPLYING = "applying"  # the plan is being sent
        VERIFYING = "verifying"  # sent; the bake's checks run
        ROLLING_BACK = "rolling_back"  # the inverse plan is being sent
        DONE = "done"  # finished: `outcome` says how

    class Outcome(models.TextChoices):
        APPLIED = "applied"
        APPLY_FAILED = "apply_failed"
        ROLLED_BACK = "rolled_back"
        ROLLBACK_FAILED = "rollback_failed"
        DRIFTED = "drifted"  # the zone moved; the change may be re-planned and approved again
        APPROVAL_LAPSED = "approval_lapsed"  # back for review; a new approval makes a new attempt
        CANCELLED = "cancelled"  # the change was cancelled before this attempt ran

    # A foreign key, not one-to-one: a change whose attempt ended short of applying
    # (drifted, or its approvals lapsed) is approved again and gets a new attempt.
    change = models.ForeignKey(ChangeRequest, on_delete=models.PROTECT, related_name="executions")
    target = models.ForeignKey(Target, on_delete=models.PROTECT, related_name="executions")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING, db_index=True)
    # Lease: who runs it and until when. The fencing token grows with every claim,
    # so a worker that lost its lease cannot write over the one that took it.
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    token = models.PositiveIntegerField(default=0)
    claims = models.PositiveIntegerField(default=0)  # how many times a worker took the lease
    # Why a worker gave it back without running it (a frozen target). Kept across
    # claims so the hold is audited once when it starts or its reason changes, not on
    # every sweep; cleared when the attempt goes ahead.
    hold_reason = models.CharField(max_length=300, blank=True)
    # Transient failures (server unreachable) of this attempt, and when the current
    # run of them began: applying gives up after a number of them, a rollback after
    # CHANGEGATE_ROLLBACK_RETRY_SECONDS. `retry_at`: no claim before then (backoff).
    retries = models.PositiveIntegerField(default=0)
    retrying_since = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=20, choices=Outcome.choices, blank=True)
    apply_result = models.JSONField(null=True, blank=True)  # the adapter's response
    rollback_result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    log = models.JSONField(default=list, blank=True)  # every step: time, worker, what

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"execution of #{self.change_id} ({self.state})"


E = Execution.State
# An attempt's lifecycle as data. Any leased state may go back to CLAIMED: a
# worker whose lease ran out (it died) is taken over by the next one, which
# resumes from the change's state. Leased states go back to PENDING when the
# worker gives the lease back (a hold, a transient failure waiting for its retry).
EXECUTION_TRANSITIONS: dict[str, frozenset[str]] = {
    E.PENDING: frozenset({E.CLAIMED, E.DONE}),
    E.CLAIMED: frozenset({E.CLAIMED, E.APPLYING, E.VERIFYING, E.ROLLING_BACK, E.PENDING, E.DONE}),
    E.APPLYING: frozenset({E.CLAIMED, E.VERIFYING, E.PENDING, E.DONE}),
    E.VERIFYING: frozenset({E.CLAIMED, E.ROLLING_BACK, E.PENDING, E.DONE}),
    E.ROLLING_BACK: frozenset({E.CLAIMED, E.PENDING, E.DONE}),
}
# A worker holds the lease in these (until lease_expires_at).
LEASED: frozenset[str] = frozenset({E.CLAIMED, E.APPLYING, E.VERIFYING, E.ROLLING_BACK})
# The change's in-flight states the attempt mirrors while it runs.
EXECUTION_STATE_OF: dict[str, str] = {
    S.APPLYING: E.APPLYING, S.VERIFYING: E.VERIFYING, S.ROLLING_BACK: E.ROLLING_BACK,
}


class CheckResult(models.Model):
    """One health check's result in one round of the bake (or of the rollback's verification)."""

    execution = models.ForeignKey(Execution, on_delete=models.PROTECT, related_name="check_results")
    phase = models.CharField(max_length=10, default="apply")  # apply | rollback
    round = models.PositiveIntegerField()
    name = models.CharField(max_length=300)
    kind = models.CharField(max_length=20)
    ok = models.BooleanField()
    detail = models.TextField(blank=True)
    duration_ms = models.FloatField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["execution", "phase", "round", "pk"]


class ZoneBaseline(models.Model):
    """What a target's zone holds as far as changegate knows: the last whole-zone
    read, moved forward by every plan changegate itself applies or rolls back
    (changes.oob). A difference between a fresh read and this is an out-of-band
    change.

    `records` maps "owner type" (as RRKey's str) -> {"ttl", "rdatas"}, the same
    presentation form as a plan's steps, so a step's `after` is written in as is
    and the diff shows before and after values. It is one JSON value per zone:
    about 60 bytes per RRset, so 10,000 RRsets are ~0.6 MB and a 100,000-RRset
    zone ~6 MB, rewritten whenever the zone changed. Beyond that, move to one row
    per RRset (key, ttl, rdatas, digest) and rewrite only the keys that changed.
    """

    target = models.OneToOneField(Target, on_delete=models.CASCADE, related_name="zone_baseline")
    taken_at = models.DateTimeField()  # last whole-zone read that confirmed or refreshed it
    serial = models.PositiveBigIntegerField()  # SOA serial of that read
    rrset_count = models.PositiveIntegerField()
    # SHA-256 over the sorted "owner ttl type rdata" lines of `records`: anyone can
    # recompute it from the stored records (and from the audit event that quotes it).
    digest = models.CharField(max_length=64)
    # SHA-256 over the canonical rdata wire of the zone as last read (blank after a
    # plan moved the baseline): an equal fresh read is unchanged without parsing
    # a single rdata.
    wire_digest = models.CharField(max_length=64, blank=True)
    # Bumped by every write: a check that read the zone while an apply moved the
    # baseline compares against the wrong state and must give up.
    revision = models.PositiveIntegerField(default=1)
    records = models.JSONField(default=dict)

    def __str__(self) -> str:
        return f"baseline of {self.target_id} (serial {self.serial})"


# ---------------------------------------------------------------------------
# Who may do what (changes.permissions): grant requests and the history the
# self-grant rule reads.


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


# ---------------------------------------------------------------------------
# Notifications (changes.notify): the outbox of alerts.


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
    last_error = models.TextField(blank=True)  # never the URL or a secret (changes.notify)
    dead_letters = models.PositiveIntegerField(default=0)  # times it ended failed: the metric's counter
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-pk"]
        indexes = [models.Index(fields=["state", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.event} by {self.channel} to {self.destination} ({self.state})"
