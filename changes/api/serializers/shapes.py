"""Documented shapes of raw JSON inputs (validated by the services): change
items, health checks and a target's adapter config. They pass through the API
as raw JSON (see the package docstring); these serializers only tell the schema
what they look like, so they are kept apart from the serializers that validate.
"""

from __future__ import annotations

from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from changes.kinds import REGISTRY
from pipeline.check_specs import CHECK_FIELDS

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
