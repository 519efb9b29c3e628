"""Targets: how one is shown (secret locations only to operators), how one is
registered, and the live RRset read. Separate from changes because a target's
shape follows its kind and the operator role, not a change's lifecycle.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from changes import selectors
from changes.api.serializers.fields import (
    StrictBooleanField,
    StrictCharField,
    StrictInputSerializer,
    StrictIntegerField,
)
from changes.api.serializers.shapes import HealthChecksField, TargetConfigField
from changes.kinds import REGISTRY, kind_of
from changes.models import Target

# The flat fields a DNS target has always been shown with (API v1 clients read them).
# A kind whose config has none of them is shown with its whole `config` instead.
FLAT_CONFIG_FIELDS = ("zone", "primary", "nameservers", "tsig_key_file", "resolvers")


WINDOWS_HELP = (
    'When changes may be applied (empty: always): {"timezone": "Europe/Berlin", "weekly": [{"days": ["mon", "tue"], '
    '"start": "09:00", "end": "17:00"}], "freezes": [{"start": ISO 8601, "end": ISO 8601, "reason": "..."}]}. '
    "Approved changes outside a window wait for it; break-glass changes do not.")

# Every registered target kind: a closed set, an enum in the schema (KindEnum).
KIND_CHOICES = [(kind.name, kind.label) for kind in REGISTRY.all()]


class TargetSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=KIND_CHOICES)
    zone = serializers.CharField(source="config.zone", required=False)
    primary = serializers.CharField(source="config.primary", required=False)
    nameservers = serializers.ListField(child=serializers.CharField(), source="config.nameservers", required=False)
    resolvers = serializers.ListField(
        child=serializers.CharField(), source="config.resolvers", required=False,
        help_text="DNS: caching resolvers the bake also asks for the changed names (empty: none).")
    tsig_key_file = serializers.CharField(
        source="config.tsig_key_file", required=False,
        help_text="Operators only: where the key lives on the gateway (never the secret).",
    )
    required_approvals = serializers.IntegerField()
    approval_lifetime_seconds = serializers.IntegerField()
    bake_seconds = serializers.IntegerField()
    bake_max_seconds = serializers.IntegerField(
        help_text="The cap on a bake derived from cached old state (DNS: the old TTLs); bake_seconds still applies.")
    watch_seconds = serializers.IntegerField(
        allow_null=True, help_text="Seconds of the watch window after the bake; null: as long as the change's bake.")
    watch_interval_seconds = serializers.IntegerField(help_text="Seconds between check rounds in the watch window.")
    watch_auto_revert = serializers.BooleanField(
        help_text="Whether a check failing in the watch window reverts the change automatically.")
    change_windows = serializers.JSONField(help_text=WINDOWS_HELP)
    health_checks = HealthChecksField()
    frozen = serializers.BooleanField()
    rrset_count = serializers.IntegerField(allow_null=True, source="item_count")
    config = TargetConfigField(
        required=False,
        help_text="Kinds other than DNS: the whole config (secret fields only to operators, as paths).",
    )

    def to_representation(self, instance: Target) -> dict[str, Any]:
        data = super().to_representation(instance)
        request = self.context.get("request")
        shown = selectors.target_config_for(instance, user=getattr(request, "user", None))
        if any(field in instance.config for field in FLAT_CONFIG_FIELDS):
            data.pop("config", None)  # DNS: the flat fields of API v1
        else:
            data["config"] = shown
        for field in kind_of(instance).secret_fields - shown.keys():
            data.pop(field, None)
        return data


class TargetRegisterSerializer(StrictInputSerializer):
    name = StrictCharField(max_length=253)
    kind = serializers.ChoiceField(choices=KIND_CHOICES, default="dns")
    config = TargetConfigField()
    required_approvals = StrictIntegerField(required=False, default=1)
    approval_lifetime_seconds = StrictIntegerField(required=False, default=24 * 3600)
    bake_seconds = StrictIntegerField(required=False, default=60)
    bake_max_seconds = StrictIntegerField(
        required=False, default=3600,
        help_text="0..86400: the cap on a bake derived from cached old state (DNS: the old TTLs).")
    watch_seconds = StrictIntegerField(
        required=False, allow_null=True, default=None,
        help_text="0..604800 seconds of checks after the bake; null: as long as the change's bake; 0: no window.")
    watch_interval_seconds = StrictIntegerField(required=False, default=30,
                                                help_text="1..3600 seconds between check rounds in the watch window.")
    watch_auto_revert = StrictBooleanField(
        required=False, default=True, help_text="A check failing in the watch window reverts the change.")
    change_windows = serializers.JSONField(required=False, default=dict, help_text=WINDOWS_HELP)
    health_checks = HealthChecksField(required=False, default=list)
    frozen = StrictBooleanField(required=False, default=False)
    prepare = StrictBooleanField(
        required=False, default=False,
        help_text="Create the owned tables empty where missing (nftables) instead of refusing the registration.",
    )


class LiveQuerySerializer(serializers.Serializer):
    name = serializers.CharField(help_text='DNS: owner name, relative to the zone unless it ends in "."; "@" is the '
                                           'apex. nftables: a chain or set, "input" or "inet changegate input".')
    type = serializers.CharField(help_text='DNS: record type, e.g. "A". nftables: "chain" or "set".')


class RRValueSerializer(serializers.Serializer):
    ttl = serializers.IntegerField()
    rdatas = serializers.ListField(child=serializers.CharField())


class LiveRRsetSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="Absolute owner name.")
    type = serializers.CharField()
    value = RRValueSerializer(allow_null=True, help_text="null when the RRset does not exist.")
