"""Targets: how one is shown (secret locations only to operators), how one is
registered, and the live RRset read. Separate from changes because a target's
shape follows its kind and the operator role, not a change's lifecycle.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from changes.api.serializers.fields import (
    StrictBooleanField,
    StrictCharField,
    StrictInputSerializer,
    StrictIntegerField,
)
from changes.api.serializers.shapes import HealthChecksField, TargetConfigField
from changes.kinds import kind_of
from changes.models import Target
from changes.permissions import is_operator


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
