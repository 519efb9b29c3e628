"""Audit: the export's query, one exported record, and the evidence bundle of
one change (PCI DSS v4 6.5.1 / 10.2.2, SOC 2 CC8.1). Separate because these
shapes are read by auditors and by `changegate-audit verify`, so they change
only on purpose, never along with the working change view.
"""

from __future__ import annotations

from rest_framework import serializers

from changes.api.serializers.change_requests import PlanSerializer, RiskFlagSerializer
from changes.api.serializers.shapes import HealthChecksField, ItemsField
from changes.api.serializers.targets import KIND_CHOICES
from changes.models import ChangeRequest, Execution


class AuditExportQuerySerializer(serializers.Serializer):
    """Documents the export's query; `audit.export.export_query` checks it."""

    format = serializers.ChoiceField(choices=["jsonl", "csv"], required=False, default="jsonl",
                                     help_text="jsonl (verifiable with `changegate-audit verify`) or csv.")
    since = serializers.CharField(required=False, help_text="ISO 8601 date or date-time (inclusive); naive is UTC.")
    until = serializers.CharField(required=False, help_text="ISO 8601 date or date-time (exclusive); naive is UTC.")
    target = serializers.CharField(required=False, help_text="Target id or name.")
    actor = serializers.CharField(required=False, help_text="Username of the actor.")
    change = serializers.IntegerField(required=False, help_text="Change id.")


class AuditRecordSerializer(serializers.Serializer):
    """One audit event as the JSON Lines export writes it: the hashed fields plus its hash."""

    type = serializers.ChoiceField(choices=["event"])
    seq = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    actor_id = serializers.IntegerField(allow_null=True)
    actor_username = serializers.CharField()
    origin = serializers.CharField()
    client_ip = serializers.CharField(allow_null=True)
    user_agent = serializers.CharField()
    action = serializers.CharField()
    target_id = serializers.IntegerField(allow_null=True)
    target_name = serializers.CharField(help_text="Copied, so the record reads the same if the target is renamed.")
    change_id = serializers.IntegerField(allow_null=True)
    outcome = serializers.CharField(help_text='"ok", or the state a change moved to, or "passed"/"failed" for checks.')
    payload = serializers.JSONField()
    prev_hash = serializers.CharField()
    hash = serializers.CharField(help_text="SHA-256 of the canonical serialization of the fields above.")


class PersonSerializer(serializers.Serializer):
    id = serializers.IntegerField(allow_null=True, help_text="null when the user was deleted since.")
    username = serializers.CharField()


class EvidenceChangeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    reason = serializers.CharField()
    reference = serializers.CharField(help_text="The change ticket it belongs to (free text), or empty.")
    state = serializers.ChoiceField(choices=ChangeRequest.State.choices)
    revision = serializers.IntegerField()
    allow_apex = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    submitted_at = serializers.DateTimeField(allow_null=True)
    updated_at = serializers.DateTimeField()


class EvidenceTargetSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=KIND_CHOICES)
    zone = serializers.CharField()


class EvidenceApprovalSerializer(serializers.Serializer):
    approver = PersonSerializer()
    fingerprint = serializers.CharField(help_text="The plan fingerprint this approval is bound to.")
    matches_plan = serializers.BooleanField(help_text="The fingerprint is the change's current one.")
    comment = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    valid = serializers.BooleanField(help_text="Counts now: current plan, not expired, not invalidated.")
    invalidated_at = serializers.DateTimeField(allow_null=True)
    invalidated_reason = serializers.CharField()


class EvidenceRejectionSerializer(serializers.Serializer):
    seq = serializers.IntegerField(help_text="The audit event that records it.")
    by = PersonSerializer()
    at = serializers.DateTimeField()
    comment = serializers.CharField()
    fingerprint = serializers.CharField()


class EvidenceCancellationSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    by = PersonSerializer()
    at = serializers.DateTimeField()
    comment = serializers.CharField()


class EvidenceEmergencySerializer(serializers.Serializer):
    flag = serializers.BooleanField(help_text="Applied as a break-glass change, without a second approver.")
    reason = serializers.CharField()
    by = PersonSerializer(allow_null=True)
    at = serializers.DateTimeField(allow_null=True)
    reviewed_by = PersonSerializer(allow_null=True, help_text="The after-the-fact second pair of eyes.")
    reviewed_at = serializers.DateTimeField(allow_null=True)
    review_comment = serializers.CharField()


class EvidenceExecutionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    worker = serializers.CharField(help_text="The worker that last held the lease (host:pid).")
    state = serializers.ChoiceField(choices=Execution.State.choices)
    claims = serializers.IntegerField(help_text="How many times a worker took the lease.")
    attempts = serializers.IntegerField(help_text="The old name of `claims`.")
    token = serializers.IntegerField()
    fence = serializers.IntegerField(help_text="The fencing token of the last claim (same as `token`).")
    hold_reason = serializers.CharField()
    retries = serializers.IntegerField(help_text="Transient failures in the phase it ended in.")
    retrying_since = serializers.DateTimeField(allow_null=True)
    retry_at = serializers.DateTimeField(allow_null=True)
    enqueued_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    applied_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    outcome = serializers.CharField(help_text="The change's end state, once finished.")
    apply_result = serializers.JSONField(allow_null=True, help_text="The adapter's answer to the apply.")
    rollback_result = serializers.JSONField(allow_null=True, help_text="The adapter's answer to the rollback.")
    error = serializers.CharField()
    log = serializers.JSONField(help_text="Every step: time, worker, what.")


class EvidenceCheckSerializer(serializers.Serializer):
    phase = serializers.CharField()
    round = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.CharField()
    ok = serializers.BooleanField()
    detail = serializers.CharField()
    duration_ms = serializers.FloatField()
    at = serializers.DateTimeField()


class EvidenceAttemptSerializer(EvidenceExecutionSerializer):
    checks = EvidenceCheckSerializer(many=True, help_text="This attempt's health-check results.")


class EvidenceRollbackSerializer(serializers.Serializer):
    started_at = serializers.DateTimeField()
    failed_checks = serializers.JSONField(help_text="The checks that failed the bake.")
    outcome = serializers.CharField(allow_null=True, help_text="rolled_back, rollback_failed, or null while running.")
    finished_at = serializers.DateTimeField(allow_null=True)
    result = serializers.JSONField(allow_null=True)
    error = serializers.CharField()


class EvidenceBakeSerializer(serializers.Serializer):
    seconds = serializers.IntegerField()
    why = serializers.CharField(help_text="E.g. 'watching for 20 min: www A had TTL 1200'.")


class EvidenceAftercareSerializer(serializers.Serializer):
    bake = EvidenceBakeSerializer(help_text="How long the checks watched the change after apply, and why.")
    watch_until = serializers.DateTimeField(allow_null=True, help_text="The end of its watch window, if it had one.")
    reverts = serializers.IntegerField(allow_null=True, help_text="The change this one reverts (one-person revert).")
    reverted_by = serializers.ListField(child=serializers.IntegerField(), help_text="Changes that revert this one.")
    revert_approval = serializers.JSONField(
        allow_null=True, help_text="For a revert: the event approving it on the reverted change's approvals.")
    window_events = serializers.JSONField(
        help_text="Change-window events: held outside a window, or a break-glass change that ignored one.")


class EvidenceTamperedSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    fields = serializers.ListField(child=serializers.CharField(), help_text="Columns that disagree with the hashed "
                                   'record, or "hash" when the stored record no longer hashes to the stored hash.')


class EvidenceSerializer(serializers.Serializer):
    """The full story of one change (PCI DSS v4 6.5.1 / 10.2.2, SOC 2 CC8.1)."""

    generated_at = serializers.DateTimeField()
    change = EvidenceChangeSerializer()
    requester = PersonSerializer()
    editors = PersonSerializer(many=True)
    target = EvidenceTargetSerializer()
    items = ItemsField()
    health_checks = HealthChecksField()
    target_health_checks = HealthChecksField()
    plan = PlanSerializer(allow_null=True)
    fingerprint = serializers.CharField()
    planned_at = serializers.DateTimeField(allow_null=True)
    risk_flags = RiskFlagSerializer(many=True)
    approvals_required = serializers.IntegerField()
    approvals = EvidenceApprovalSerializer(many=True)
    rejections = EvidenceRejectionSerializer(many=True)
    cancellations = EvidenceCancellationSerializer(many=True)
    emergency = EvidenceEmergencySerializer()
    executions = EvidenceAttemptSerializer(many=True, help_text="Every attempt at applying it, oldest first.")
    execution = EvidenceExecutionSerializer(allow_null=True, help_text="The latest attempt.")
    checks = EvidenceCheckSerializer(many=True, help_text="The latest attempt's health-check results.")
    rollback = EvidenceRollbackSerializer(allow_null=True)
    aftercare = EvidenceAftercareSerializer()
    events = AuditRecordSerializer(many=True, help_text="The change's audit events, in seq order, with their hashes: "
                                   "the hashed records as stored (never the database columns).")
    tampered = serializers.BooleanField(help_text="An event's database row disagrees with its hashed record.")
    tampered_events = EvidenceTamperedSerializer(many=True)
