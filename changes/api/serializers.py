"""Request and response shapes of the REST API.

Request serializers check only the JSON types of top-level fields. What a change
item or a health check must contain is decided in one place, the services (and
the adapter behind them), so items and checks pass through here as raw JSON and
come back as errors naming `items[0].ttl`; the schema still documents their shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.settings import api_settings

from approvals.models import Approval
from approvals.policy import approvals_of, approvals_required, approvals_valid

from .. import selectors
from ..health import CHECK_FIELDS
from ..kinds import REGISTRY, kind_of, risk_description
from ..models import AuditEvent, ChangeRequest, Execution, Target
from ..permissions import is_operator

# ---------------------------------------------------------------------------
# Errors (every non-2xx answer has this shape)


class FieldErrorSerializer(serializers.Serializer):
    index = serializers.IntegerField(allow_null=True, help_text="Item index, or null for a top-level field.")
    field = serializers.CharField(help_text='Where the bad value is: "title", "items[0].ttl", "config.primary".')
    message = serializers.CharField()
    line = serializers.IntegerField(required=False, help_text="Line of the patch text the item came from.")


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField(
        help_text="invalid, parse_error, not_authenticated, permission_denied, not_found, "
        "invalid_state, conflict, target_unavailable, target_misconfigured, ..."
    )
    errors = FieldErrorSerializer(many=True, required=False, help_text="Present for code invalid.")


# ---------------------------------------------------------------------------
# Strict input fields


class StrictCharField(serializers.CharField):
    """A JSON string and nothing else: DRF's CharField would turn 42 into "42"."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON true or false: DRF's BooleanField would take "yes" and 1."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: DRF's IntegerField would take "5" and 5.0."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string"}], "description": "Target id or name."})
class TargetRefField(serializers.Field):
    default_error_messages = {"invalid": "Give the target's id (integer) or name (string)."}

    def to_internal_value(self, data: Any) -> int | str:
        if isinstance(data, bool) or not isinstance(data, int | str) or (isinstance(data, str) and not data.strip()):
            self.fail("invalid")
        return data


class StrictInputSerializer(serializers.Serializer):
    """Unknown fields are refused."""

    def to_internal_value(self, data: Any) -> Any:
        # Not ignored: a misspelt "helth_checks" must not silently drop the checks
        # the author meant to declare.
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields), key=str)
            if unknown:
                raise serializers.ValidationError({str(key): ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)


# ---------------------------------------------------------------------------
# Documented shapes of raw JSON inputs (validated by the services)


# Every registered kind's item operations (DNS: upsert, delete, add, remove).
ITEM_OPS = tuple(dict.fromkeys(op for kind in REGISTRY.all() for op in kind.item_ops))


class ChangeItemSerializer(serializers.Serializer):
    op = serializers.ChoiceField(
        choices=ITEM_OPS, help_text="upsert replaces the RRset, delete removes it, add/remove touch single records."
    )
    name = serializers.CharField(help_text='Owner name, relative to the zone unless it ends in "."; "@" is the apex.')
    type = serializers.CharField(help_text='Record type, e.g. "A".')
    ttl = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=2147483647)
    records = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Record data in zone-file syntax."
    )


class TCPCheckSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["tcp"])
    host = serializers.CharField()
    port = serializers.IntegerField(min_value=1, max_value=65535)
    timeout = serializers.FloatField(required=False, help_text="Seconds, default 2, at most CHANGEGATE_CHECK_ROUND_SECONDS (half the lease by default).")


class HTTPCheckSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["http"])
    url = serializers.URLField()
    expect_status = serializers.IntegerField(required=False, min_value=100, max_value=599)
    contains = serializers.CharField(required=False)
    timeout = serializers.FloatField(required=False)


class DNSResolveCheckSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=["dns_resolve"])
    resolver = serializers.CharField(help_text="ip:port")
    name = serializers.CharField()
    rdtype = serializers.CharField(required=False)
    expect = serializers.ListField(child=serializers.CharField())
    timeout = serializers.FloatField(required=False)


assert set(CHECK_FIELDS) == {"tcp", "http", "dns_resolve"}, "document the new check type here"

HealthCheckSchema = PolymorphicProxySerializer(
    component_name="HealthCheck",
    serializers={"tcp": TCPCheckSerializer, "http": HTTPCheckSerializer, "dns_resolve": DNSResolveCheckSerializer},
    resource_type_field_name="type",
    many=True,
)


class TargetConfigSerializer(serializers.Serializer):
    zone = serializers.CharField()
    primary = serializers.CharField(help_text="ip:port of the primary that accepts signed UPDATEs.")
    tsig_key_file = serializers.CharField(
        help_text="Absolute path of a BIND-format key file inside the gateway's key directory "
                  "(CHANGEGATE_KEY_DIR). Never the secret itself."
    )
    nameservers = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="ip:port of every server to verify on; default [primary]."
    )
    timeout = serializers.FloatField(required=False)


@extend_schema_field(ChangeItemSerializer(many=True))
class ItemsField(serializers.JSONField):
    """Raw items, validated by the service."""


@extend_schema_field(HealthCheckSchema)
class HealthChecksField(serializers.JSONField):
    """Raw declared checks, validated by the service."""


@extend_schema_field(TargetConfigSerializer)
class TargetConfigField(serializers.JSONField):
    """Raw adapter config, validated by the adapter."""


# ---------------------------------------------------------------------------
# Targets


class TargetSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.CharField()
    zone = serializers.CharField(source="config.zone")
    primary = serializers.CharField(source="config.primary")
    nameservers = serializers.ListField(child=serializers.CharField(), source="config.nameservers")
    tsig_key_file = serializers.CharField(
        source="config.tsig_key_file", required=False,
        help_text="Operators only: where the key lives on the gateway (never the secret).",
    )
    required_approvals = serializers.IntegerField()
    approval_lifetime_seconds = serializers.IntegerField()
    bake_seconds = serializers.IntegerField()
    health_checks = HealthChecksField()
    frozen = serializers.BooleanField()
    rrset_count = serializers.IntegerField(allow_null=True, source="item_count")

    def to_representation(self, instance: Target) -> dict[str, Any]:
        data = super().to_representation(instance)
        request = self.context.get("request")
        user = getattr(request, "user", None)
        if not is_operator(user):
            # Where secrets live is the kind's to say (DNS: the TSIG key file).
            for field in kind_of(instance).secret_fields:
                data.pop(field, None)
        return data


class TargetRegisterSerializer(StrictInputSerializer):
    name = StrictCharField(max_length=253)
    kind = serializers.ChoiceField(choices=Target.Kind.choices, default=Target.Kind.DNS)
    config = TargetConfigField()
    required_approvals = StrictIntegerField(required=False, default=1)
    approval_lifetime_seconds = StrictIntegerField(required=False, default=24 * 3600)
    bake_seconds = StrictIntegerField(required=False, default=60)
    health_checks = HealthChecksField(required=False, default=list)
    frozen = StrictBooleanField(required=False, default=False)


class LiveQuerySerializer(serializers.Serializer):
    name = serializers.CharField(help_text='Owner name, relative to the zone unless it ends in "."; "@" is the apex.')
    type = serializers.CharField(help_text='Record type, e.g. "A".')


class RRValueSerializer(serializers.Serializer):
    ttl = serializers.IntegerField()
    rdatas = serializers.ListField(child=serializers.CharField())


class LiveRRsetSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="Absolute owner name.")
    type = serializers.CharField()
    value = RRValueSerializer(allow_null=True, help_text="null when the RRset does not exist.")


# ---------------------------------------------------------------------------
# Changes: output


class TargetRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class StepSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField()
    before = RRValueSerializer(allow_null=True)
    after = RRValueSerializer(allow_null=True)


class GuardSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.CharField()
    value = RRValueSerializer(allow_null=True)


class PlanSerializer(serializers.Serializer):
    zone = serializers.CharField()
    steps = StepSerializer(many=True)
    guards = GuardSerializer(many=True)


class RiskFlagSerializer(serializers.Serializer):
    flag = serializers.CharField()
    description = serializers.CharField()


class EventSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    action = serializers.CharField()
    actor = serializers.SerializerMethodField()
    origin = serializers.CharField()
    created_at = serializers.DateTimeField()
    hash = serializers.CharField()

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_actor(self, event: AuditEvent) -> str | None:
        return event.actor_username or None


class ApprovalSerializer(serializers.Serializer):
    approver = serializers.CharField(source="approver.username")
    fingerprint = serializers.CharField(help_text="The plan fingerprint this approval is bound to.")
    comment = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    valid = serializers.SerializerMethodField(help_text="Counts now: current plan, not expired, not invalidated.")
    invalidated_reason = serializers.CharField()

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_valid(self, approval: Approval) -> bool:
        return approval.pk in self.context.get("valid_ids", set())


class ExecutionSerializer(serializers.Serializer):
    """One attempt at applying the change, with its own claim, lease and outcome."""

    id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=Execution.State.choices)
    outcome = serializers.CharField(help_text="How the attempt ended (blank while it runs): the change's end "
                                    "state, drifted, approval_lapsed or cancelled.")
    claims = serializers.IntegerField(help_text="How many times a worker took the lease.")
    lease_owner = serializers.CharField(help_text="The worker that last held the lease (host:pid).")
    fence = serializers.IntegerField(source="token", help_text="The fencing token of the last claim.")
    lease_expires_at = serializers.DateTimeField(allow_null=True)
    hold_reason = serializers.CharField(help_text="Why it waits without running (a frozen target).")
    retries = serializers.IntegerField(help_text="Transient failures (server unreachable) in the current phase.")
    retry_at = serializers.DateTimeField(allow_null=True, help_text="No retry before this (backoff).")
    enqueued_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    applied_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField()


class ChangeSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    target = TargetRefSerializer()
    author = serializers.CharField(source="author.username")
    title = serializers.CharField()
    state = serializers.ChoiceField(choices=ChangeRequest.State.choices)
    revision = serializers.IntegerField()
    fingerprint = serializers.CharField()
    risk_flags = serializers.SerializerMethodField()
    emergency = serializers.BooleanField()
    emergency_overdue = serializers.SerializerMethodField(
        help_text="A break-glass change whose after-the-fact review is overdue.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    submitted_at = serializers.DateTimeField(allow_null=True)

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_emergency_overdue(self, change: ChangeRequest) -> bool:
        return selectors.emergency_overdue(change)

    @extend_schema_field(RiskFlagSerializer(many=True))
    def get_risk_flags(self, change: ChangeRequest) -> list[dict[str, str]]:
        return [{"flag": flag, "description": risk_description(flag)} for flag in change.risk_flags]


class ChangeDetailSerializer(ChangeSummarySerializer):
    editors = serializers.SerializerMethodField()
    emergency_reason = serializers.CharField()
    emergency_by = serializers.SerializerMethodField()
    emergency_at = serializers.DateTimeField(allow_null=True)
    emergency_reviewed_by = serializers.SerializerMethodField()
    emergency_reviewed_at = serializers.DateTimeField(allow_null=True)
    emergency_review_comment = serializers.CharField()

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_emergency_by(self, change: ChangeRequest) -> str | None:
        return change.emergency_by.get_username() if change.emergency_by else None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_emergency_reviewed_by(self, change: ChangeRequest) -> str | None:
        return change.emergency_reviewed_by.get_username() if change.emergency_reviewed_by else None
    reason = serializers.CharField()
    items = ItemsField()
    health_checks = HealthChecksField()
    allow_apex = serializers.BooleanField()
    plan = PlanSerializer(allow_null=True)
    planned_at = serializers.DateTimeField(allow_null=True)
    diff = serializers.SerializerMethodField(help_text="The plan as a unified diff of zone-file lines.")
    events = serializers.SerializerMethodField()
    executions = serializers.SerializerMethodField(help_text="Every attempt at applying it, oldest first.")
    approvals = serializers.SerializerMethodField()
    approvals_required = serializers.SerializerMethodField(
        help_text="Distinct approvals needed: the target's count, plus one for a plan with risk flags.")

    @extend_schema_field(ApprovalSerializer(many=True))
    def get_approvals(self, change: ChangeRequest) -> list[dict[str, Any]]:
        valid_ids = set(approvals_valid(change).values_list("pk", flat=True))
        return ApprovalSerializer(approvals_of(change), many=True, context={"valid_ids": valid_ids}).data

    @extend_schema_field(OpenApiTypes.INT)
    def get_approvals_required(self, change: ChangeRequest) -> int:
        return approvals_required(change)

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_editors(self, change: ChangeRequest) -> list[str]:
        return sorted(user.get_username() for user in change.editors.all())

    @extend_schema_field(OpenApiTypes.STR)
    def get_diff(self, change: ChangeRequest) -> str:
        return selectors.change_diff(change)

    @extend_schema_field(EventSerializer(many=True))
    def get_events(self, change: ChangeRequest) -> list[dict[str, Any]]:
        return EventSerializer(selectors.change_events(change), many=True).data

    @extend_schema_field(ExecutionSerializer(many=True))
    def get_executions(self, change: ChangeRequest) -> list[dict[str, Any]]:
        return ExecutionSerializer(selectors.change_executions(change), many=True).data


# ---------------------------------------------------------------------------
# Changes: input


class ChangeCreateSerializer(StrictInputSerializer):
    target = TargetRefField()
    title = StrictCharField(allow_blank=True, help_text="At most 200 characters.")
    reason = StrictCharField(allow_blank=True, help_text="Why the change is needed (required).")
    items = ItemsField(required=False, help_text="The change as items; or give `patch`.")
    patch = StrictCharField(required=False, allow_blank=True, trim_whitespace=False,
                            help_text="The change as zone-file lines: '= NAME TTL TYPE DATA', '+ ...', '- ...'.")
    health_checks = HealthChecksField(required=False)
    allow_apex = StrictBooleanField(required=False, default=False)

    def validate_target(self, value: int | str) -> Target:
        user: AbstractBaseUser = self.context["request"].user
        try:
            return selectors.access_target(user=user, ref=value)
        except Http404:
            raise serializers.ValidationError("no such target") from None


class ChangeUpdateSerializer(StrictInputSerializer):
    title = StrictCharField(required=False, allow_blank=True)
    reason = StrictCharField(required=False, allow_blank=True)
    items = ItemsField(required=False)
    patch = StrictCharField(required=False, allow_blank=True, trim_whitespace=False)
    health_checks = HealthChecksField(required=False)
    allow_apex = StrictBooleanField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # An empty edit would still bump the revision and void every approval.
        if not attrs:
            raise serializers.ValidationError(
                {api_settings.NON_FIELD_ERRORS_KEY: [f"give at least one of {', '.join(self.fields)}"]}
            )
        return attrs


class CommentSerializer(StrictInputSerializer):
    comment = StrictCharField(required=False, allow_blank=True, max_length=2000, default="")


class CancelSerializer(StrictInputSerializer):
    reason = StrictCharField(required=False, allow_blank=True, max_length=4000, help_text="Why (required).")
    comment = StrictCharField(required=False, allow_blank=True, max_length=4000,
                              help_text="Old name of `reason`, still accepted.")


class EmergencySerializer(StrictInputSerializer):
    """A required written reason: for break-glass, or for a manual rollback."""

    reason = StrictCharField(allow_blank=True, max_length=4000, help_text="Why (required).")


class EmergencyReviewSerializer(StrictInputSerializer):
    comment = StrictCharField(allow_blank=True, max_length=2000, help_text="What you checked (required).")


class ApproveSerializer(StrictInputSerializer):
    fingerprint = StrictCharField(allow_blank=True, help_text="The fingerprint of the plan you reviewed.")
    comment = StrictCharField(required=False, allow_blank=True, max_length=2000, default="")


class RejectSerializer(StrictInputSerializer):
    comment = StrictCharField(allow_blank=True, max_length=2000, help_text="Why the change is rejected (required).")


class QueryBooleanField(serializers.BooleanField):
    """A boolean query parameter as OpenAPI writes one: `true` or `false`. DRF's
    BooleanField would also take 0, "yes", "on"..., which the schema calls invalid."""

    default_error_messages = {"invalid": "Must be true or false."}
    default_empty_html = empty  # absent is "not given", not the unticked checkbox (False)

    def to_internal_value(self, data: Any) -> bool:
        if data not in ("true", "false"):
            self.fail("invalid")
        return data == "true"


class ChangeListQuerySerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=ChangeRequest.State.choices, required=False)
    target = serializers.CharField(required=False, help_text="Target id or name.")
    author = serializers.CharField(required=False, help_text="Username of the author.")
    reviewable = QueryBooleanField(
        required=False, help_text="true: only pending changes waiting for your review "
        "(you may approve them and have not approved the current plan yet).")


# ---------------------------------------------------------------------------
# Audit: export and evidence


class AuditExportQuerySerializer(serializers.Serializer):
    """Documents the export's query; `changes.audit_export.export_query` checks it."""

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
    state = serializers.ChoiceField(choices=ChangeRequest.State.choices)
    revision = serializers.IntegerField()
    allow_apex = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    submitted_at = serializers.DateTimeField(allow_null=True)
    updated_at = serializers.DateTimeField()


class EvidenceTargetSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.CharField()
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
    state = serializers.CharField()
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
    events = AuditRecordSerializer(many=True, help_text="The change's audit events, in seq order, with their hashes: "
                                   "the hashed records as stored (never the database columns).")
    tampered = serializers.BooleanField(help_text="An event's database row disagrees with its hashed record.")
    tampered_events = EvidenceTamperedSerializer(many=True)
