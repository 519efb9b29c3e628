"""Changes: what the API shows of a change (summary, detail with its plan,
approvals, attempts and events) and what it takes to create, edit and move one.
Separate from the evidence bundle (evidence.py), which is a record for auditors
with its own stable shape, not the working view.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.settings import api_settings

from approvals.models import Approval
from approvals.policy import approvals_of, approvals_required, approvals_valid
from changes import selectors
from changes.api.serializers.fields import (
    KindOptionField,
    NonBlankCharField,
    QueryBooleanField,
    StrictBooleanField,
    StrictCharField,
    StrictInputSerializer,
    StrictIntegerField,
    TargetRefField,
    options_from,
)
from changes.api.serializers.shapes import HealthChecksField, ItemsField
from changes.api.serializers.targets import RRValueSerializer
from changes.kinds import risk_description
from changes.models import AuditEvent, ChangeRequest, Execution, Target
from changes.services.change_requests import REFERENCE_MAX, TITLE_MAX
from changes.services.reverts import revert_refusal, standing_revert
from pipeline.bake_time import OVERRIDE_MAX_SECONDS, bake_for
from pipeline.phase import change_phase
from pipeline.windows import change_window_wait

# ---------------------------------------------------------------------------
# Output


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


class BakeSerializer(serializers.Serializer):
    seconds = serializers.IntegerField(help_text="The bake's length in seconds.")
    why = serializers.CharField(help_text="E.g. 'watching for 20 min: www.example.com. A had TTL 1200'.")
    override_reason = serializers.CharField(
        allow_null=True, help_text="Why the change sets its own bake (bake_override_seconds), or null.")


class PhaseSerializer(serializers.Serializer):
    name = serializers.ChoiceField(choices=[
        "draft", "pending_approval", "drifted", "waiting", "queued", "applying", "baking", "rolling_back",
        "watching", "done"], help_text="waiting: approved but held (a change window, a frozen target, a backoff); "
        "watching: applied, inside its watch window (a one-person revert is allowed).")
    text = serializers.CharField(help_text="E.g. 'baking: watching for 20 min: www A had TTL 1200 (14 min left)'.")
    until = serializers.DateTimeField(allow_null=True, help_text="When this phase ends (or is expected to).")
    seconds_left = serializers.IntegerField(allow_null=True)


class WindowWaitSerializer(serializers.Serializer):
    runs_at = serializers.DateTimeField(allow_null=True, help_text="When the window opens (null: not within 400 days).")
    reason = serializers.CharField(help_text="E.g. 'outside the change window (Mon-Fri 09:00-17:00 Europe/Berlin); "
                                   "runs at 2026-12-02 09:00 CET'.")


class RevertOfferSerializer(serializers.Serializer):
    allowed = serializers.BooleanField(help_text="The one-person revert is open to you now.")
    why_not = serializers.CharField(allow_null=True, help_text="Why it is not (the same words a POST would get).")
    until = serializers.DateTimeField(allow_null=True, help_text="The end of the watch window it is allowed in.")


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
    reference = serializers.CharField(help_text="The change ticket it belongs to (free text), or empty.")
    items = ItemsField()
    health_checks = HealthChecksField()
    allow_apex = KindOptionField("allow_apex")
    plan = PlanSerializer(allow_null=True)
    # Beside the plan, not in it: warnings are outside the fingerprint an approval binds to.
    warnings = serializers.ListField(
        child=serializers.CharField(), source="plan_warnings", read_only=True,
        help_text="Things to check before approving that are legal but probably not meant (an MX whose "
        "in-zone target has no address, a target that became relative). Advice: they block nothing.")
    planned_at = serializers.DateTimeField(allow_null=True)
    bake = serializers.SerializerMethodField(
        help_text="How long the health checks will watch the change once applied, and why (for DNS: at least "
        "the largest TTL the plan replaces, capped by the target), so reviewers see it before approving.")
    phase = serializers.SerializerMethodField(
        help_text="Where the change is now and until when: baking until, watching until, waiting for a window.")
    watch_until = serializers.DateTimeField(
        allow_null=True, help_text="The end of the watch window after the bake (null: none yet, or none).")
    waiting_for_window = serializers.SerializerMethodField(
        help_text="While an approved change waits for its target's change window: {runs_at, reason}; else null.")
    reverts = serializers.IntegerField(source="reverts_id", allow_null=True,
                                       help_text="The change this one reverts (a one-person revert), or null.")
    reverted_by = serializers.SerializerMethodField(help_text="The changes that revert this one.")
    revert = serializers.SerializerMethodField(
        help_text="Whether the person asking may revert this change alone now (POST .../revert/), and why not.")
    diff = serializers.SerializerMethodField(help_text="The plan as a unified diff of zone-file lines.")
    events = serializers.SerializerMethodField()
    executions = serializers.SerializerMethodField(help_text="Every attempt at applying it, oldest first.")
    approvals = serializers.SerializerMethodField()
    approvals_required = serializers.SerializerMethodField(
        help_text="Distinct approvals needed: the target's count, plus one for a plan with risk flags.")

    def _created(self, change: ChangeRequest) -> bool:
        """The draft this request just created (ChangeListView.post): it has no
        approvals, executions or editors yet, so nothing is asked about them, and
        its one event came back from the service."""
        return self.context.get("created") is change

    @extend_schema_field(ApprovalSerializer(many=True))
    def get_approvals(self, change: ChangeRequest) -> list[dict[str, Any]]:
        if self._created(change):
            return []
        valid_ids = set(approvals_valid(change).values_list("pk", flat=True))
        return ApprovalSerializer(approvals_of(change), many=True, context={"valid_ids": valid_ids}).data

    @extend_schema_field(BakeSerializer)
    def get_bake(self, change: ChangeRequest) -> dict[str, Any]:
        seconds, why = bake_for(change, change.target)
        overridden = change.bake_override_seconds is not None
        return {"seconds": seconds, "why": why, "override_reason": change.bake_override_reason if overridden else None}

    @extend_schema_field(OpenApiTypes.INT)
    def get_approvals_required(self, change: ChangeRequest) -> int:
        return approvals_required(change)

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_editors(self, change: ChangeRequest) -> list[str]:
        if self._created(change):
            return []
        return sorted(user.get_username() for user in change.editors.all())

    @extend_schema_field(OpenApiTypes.STR)
    def get_diff(self, change: ChangeRequest) -> str:
        return selectors.change_diff(change)

    @extend_schema_field(EventSerializer(many=True))
    def get_events(self, change: ChangeRequest) -> list[dict[str, Any]]:
        created_event = getattr(change, "creation_event", None) if self._created(change) else None
        if created_event is not None:  # the draft just made has this one event (services.change_create)
            return EventSerializer([created_event], many=True).data
        return EventSerializer(selectors.change_events(change), many=True).data

    def _executions(self, change: ChangeRequest) -> list[Execution]:
        """Read once for both `executions` and `phase`."""
        cached = getattr(self, "_executions_of", None)
        if cached is None or cached[0] != change.pk:
            cached = (change.pk, [] if self._created(change) else list(selectors.change_executions(change)))
            self._executions_of = cached
        return cached[1]

    @extend_schema_field(ExecutionSerializer(many=True))
    def get_executions(self, change: ChangeRequest) -> list[dict[str, Any]]:
        return ExecutionSerializer(self._executions(change), many=True).data

    @extend_schema_field(PhaseSerializer)
    def get_phase(self, change: ChangeRequest) -> dict[str, Any]:
        executions = self._executions(change)
        reverted = change.state == ChangeRequest.State.APPLIED and standing_revert(change) is not None
        return change_phase(change, executions[-1] if executions else None, reverted=reverted).to_json()

    @extend_schema_field(RevertOfferSerializer)
    def get_revert(self, change: ChangeRequest) -> dict[str, Any]:
        if change.state != ChangeRequest.State.APPLIED:
            return {"allowed": False, "why_not": f"change #{change.pk} is {change.state}; only an applied change "
                                                 "can be reverted", "until": None}
        request = self.context.get("request")
        refusal = revert_refusal(getattr(request, "user", None), change)
        return {"allowed": refusal is None, "why_not": refusal, "until": change.watch_until}

    @extend_schema_field(WindowWaitSerializer(allow_null=True))
    def get_waiting_for_window(self, change: ChangeRequest) -> dict[str, Any] | None:
        return change_window_wait(change)

    @extend_schema_field(serializers.ListField(child=serializers.IntegerField()))
    def get_reverted_by(self, change: ChangeRequest) -> list[int]:
        if self._created(change) or change.state != ChangeRequest.State.APPLIED:
            return []  # only an applied change can be reverted
        return list(change.reverted_by.order_by("pk").values_list("pk", flat=True))


# ---------------------------------------------------------------------------
# Input


class BakeOverrideFields(serializers.Serializer):
    """The change's own bake (pipeline.bake_time), the same on create and edit."""

    bake_override_seconds = StrictIntegerField(
        required=False, allow_null=True, min_value=0, max_value=OVERRIDE_MAX_SECONDS,
        help_text="Bake this change for exactly this long instead of the target's rule (null: the rule); "
        "needs bake_override_reason.")
    bake_override_reason = StrictCharField(required=False, allow_blank=True, max_length=4000,
                                           help_text="Why the change sets its own bake (shown to reviewers).")


class ChangeCreateSerializer(BakeOverrideFields, StrictInputSerializer):
    target = TargetRefField()
    title = NonBlankCharField(max_length=TITLE_MAX, help_text=f"At most {TITLE_MAX} characters.")
    reason = NonBlankCharField(help_text="Why the change is needed (required).")
    reference = StrictCharField(required=False, allow_blank=True, max_length=REFERENCE_MAX,
                                help_text="Your change ticket, e.g. CHG0012345 (at most 100 printable characters).")
    items = ItemsField(required=False, help_text="The change as items; or give `patch`.")
    patch = StrictCharField(required=False, allow_blank=True, trim_whitespace=False,
                            help_text="The change as zone-file lines: '= NAME TTL TYPE DATA', '+ ...', '- ...'.")
    health_checks = HealthChecksField(required=False)
    allow_apex = StrictBooleanField(required=False, default=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return options_from(attrs, "allow_apex")

    def validate_target(self, value: int | str) -> Target:
        user: AbstractBaseUser = self.context["request"].user
        try:
            return selectors.access_target(user=user, ref=value)
        except Http404:
            raise serializers.ValidationError("no such target") from None


class ChangeUpdateSerializer(BakeOverrideFields, StrictInputSerializer):
    title = NonBlankCharField(required=False, max_length=TITLE_MAX)
    reason = NonBlankCharField(required=False)
    reference = StrictCharField(required=False, allow_blank=True, max_length=REFERENCE_MAX)
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
        return options_from(attrs, "allow_apex")


class CancelSerializer(StrictInputSerializer):
    reason = StrictCharField(required=False, allow_blank=True, max_length=4000, help_text="Why (required).")
    comment = StrictCharField(required=False, allow_blank=True, max_length=4000,
                              help_text="Old name of `reason`, still accepted.")


class EmergencySerializer(StrictInputSerializer):
    """Break glass: the required written reason why it cannot wait for a second person."""

    reason = NonBlankCharField(max_length=4000, help_text="Why (required).")


class RevertSerializer(StrictInputSerializer):
    """The one-person revert of a young change (its author or one of its approvers,
    inside its watch window): the required written reason."""

    reason = NonBlankCharField(max_length=4000, help_text="Why the change is reverted (required, audited).")


class RollbackSerializer(StrictInputSerializer):
    """A manual rollback: the required written reason. Its own class (and schema
    component, RollbackRequest), not EmergencySerializer's: the two mean different things."""

    reason = NonBlankCharField(max_length=4000, help_text="Why the change is rolled back (required).")


class EmergencyReviewSerializer(StrictInputSerializer):
    comment = NonBlankCharField(max_length=2000, help_text="What you checked (required).")


class ApproveSerializer(StrictInputSerializer):
    # No pattern: the server does not check the fingerprint's form, only that it is the current one (409 if not).
    fingerprint = NonBlankCharField(help_text="The fingerprint of the plan you reviewed.")
    comment = StrictCharField(required=False, allow_blank=True, max_length=2000, default="")


class RejectSerializer(StrictInputSerializer):
    comment = NonBlankCharField(max_length=2000, help_text="Why the change is rejected (required).")


class ChangeListQuerySerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=ChangeRequest.State.choices, required=False)
    target = serializers.CharField(required=False, help_text="Target id or name.")
    author = serializers.CharField(required=False, help_text="Username of the author.")
    reviewable = QueryBooleanField(
        required=False, help_text="true: only pending changes waiting for your review "
        "(you may approve them and have not approved the current plan yet).")
