"""Attempts at applying an approved change (`Execution`, the outbox row a
worker claims through a lease) with their own state machine as data, and the
health-check results of each attempt's bake. Separate from requests.py because
an attempt's state is the pipeline's alone (pipeline.execution assigns it),
while the change's lifecycle there is what services and permissions read.
"""

from __future__ import annotations

from django.db import models

from changes.models.requests import ChangeRequest, S
from changes.models.targets import Target


class Execution(models.Model):
    """One attempt at applying an approved change: the outbox row written in the
    transaction that approves the change, claimed by exactly one worker at a time
    through a lease, and the record of what happened. A change approved again (after
    drift, or after its approvals lapsed) gets a new attempt; every attempt is kept.

    The attempt's own state machine is data, like the change's: `State`,
    `EXECUTION_TRANSITIONS` below, and `pipeline.execution.execution_advance`, the
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
    phase = models.CharField(max_length=10, default="apply")  # apply | rollback | watch
    round = models.PositiveIntegerField()
    name = models.CharField(max_length=300)
    kind = models.CharField(max_length=20)
    ok = models.BooleanField()
    detail = models.TextField(blank=True)
    duration_ms = models.FloatField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["execution", "phase", "round", "pk"]
