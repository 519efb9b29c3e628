"""Documented shapes of raw JSON inputs (validated by the services): change
items, health checks and a target's adapter config. They pass through the API
as raw JSON (see the package docstring); these serializers only tell the schema
what they look like, so they are kept apart from the serializers that validate.
"""

from __future__ import annotations

from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from changes.kinds import REGISTRY
from pipeline.check_specs import CHECK_FIELDS

# Every registered kind's item operations (DNS: upsert, delete, add, remove; nftables:
# append, insert, ...). The schema below documents each kind's item shape.
ITEM_OPS = tuple(dict.fromkeys(op for kind in REGISTRY.all() for op in kind.item_ops))


@extend_schema_serializer(component_name="DNSChangeItem")
class ChangeItemSerializer(serializers.Serializer):
    """A DNS zone's item."""

    op = serializers.ChoiceField(
        choices=["upsert", "delete", "add", "remove"],
        help_text="upsert replaces the RRset, delete removes it, add/remove touch single records.",
    )
    name = serializers.CharField(help_text='Owner name, relative to the zone unless it ends in "."; "@" is the apex.')
    type = serializers.CharField(help_text='Record type, e.g. "A".')
    ttl = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=2147483647)
    records = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Record data in zone-file syntax."
    )


@extend_schema_serializer(component_name="FirewallChangeItem")
class FirewallItemSerializer(serializers.Serializer):
    """An nftables target's item: a rule in a managed chain, a chain's policy or
    whole rule list, or elements of a managed named set."""

    op = serializers.ChoiceField(choices=["append", "insert", "delete", "set_chain", "delete_chain", "policy",
                                          "add_element", "delete_element"])
    table = serializers.CharField(help_text='An owned table, e.g. "inet changegate".')
    chain = serializers.CharField(required=False, help_text="The chain (rule, set_chain, policy ops).")
    set = serializers.CharField(required=False, help_text="The named set (element ops).")
    rule = serializers.CharField(required=False, help_text="One rule as nft prints it; no hostnames.")
    position = serializers.IntegerField(required=False, min_value=0, help_text="insert: index in the chain.")
    rules = serializers.ListField(child=serializers.CharField(), required=False)
    policy = serializers.ChoiceField(choices=["accept", "drop"], required=False)
    elements = serializers.ListField(child=serializers.CharField(), required=False)


ChangeItemSchema = PolymorphicProxySerializer(
    component_name="ChangeItem", serializers=[ChangeItemSerializer, FirewallItemSerializer],
    resource_type_field_name=None, many=True,
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


class TCPClosedCheckSerializer(serializers.Serializer):
    """Firewall targets: passes while the port is refused or filtered (after a block rule)."""

    type = serializers.ChoiceField(choices=["tcp_closed"])
    host = serializers.CharField()
    port = serializers.IntegerField(min_value=1, max_value=65535)
    timeout = serializers.FloatField(required=False)


assert set(CHECK_FIELDS) == {"tcp", "http", "dns_resolve", "tcp_closed"}, "document the new check type here"

HealthCheckSchema = PolymorphicProxySerializer(
    component_name="HealthCheck",
    serializers={"tcp": TCPCheckSerializer, "http": HTTPCheckSerializer, "dns_resolve": DNSResolveCheckSerializer,
                 "tcp_closed": TCPClosedCheckSerializer},
    resource_type_field_name="type",
    many=True,
)


@extend_schema_serializer(component_name="DNSTargetConfig")
class TargetConfigSerializer(serializers.Serializer):
    """A DNS zone's config (kind "dns")."""

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


@extend_schema_serializer(component_name="FirewallTargetConfig")
class FirewallConfigSerializer(serializers.Serializer):
    """An nftables host's config (kind "nft"). The SSH key is a file reference inside
    the gateway's key directory, never the key."""

    transport = serializers.ChoiceField(choices=["netns", "ssh"])
    netns = serializers.CharField(required=False, help_text="netns: the network namespace's name.")
    ssh_host = serializers.CharField(required=False)
    ssh_port = serializers.IntegerField(required=False, min_value=1, max_value=65535)
    ssh_user = serializers.CharField(required=False)
    ssh_key_file = serializers.CharField(required=False, help_text="Path inside CHANGEGATE_KEY_DIR.")
    known_hosts_file = serializers.CharField(required=False)
    helper = serializers.CharField(required=False, help_text="The host-side helper's command (ssh).")
    tables = serializers.ListField(child=serializers.CharField(), help_text='Owned tables, e.g. ["inet changegate"].')
    state_dir = serializers.CharField(required=False, help_text="Host directory for locks, reverts, the boot file.")
    revert_seconds = serializers.IntegerField(required=False, min_value=0, max_value=3600,
                                              help_text="Commit-confirmed revert deadline; 0 = none.")
    management_port = serializers.IntegerField(required=False, min_value=1, max_value=65535)
    timeout = serializers.FloatField(required=False)


TargetConfigSchema = PolymorphicProxySerializer(
    component_name="TargetConfig", serializers=[TargetConfigSerializer, FirewallConfigSerializer],
    resource_type_field_name=None,
)


@extend_schema_field(ChangeItemSchema)
class ItemsField(serializers.JSONField):
    """Raw items, validated by the service."""


@extend_schema_field(HealthCheckSchema)
class HealthChecksField(serializers.JSONField):
    """Raw declared checks, validated by the service."""


@extend_schema_field(TargetConfigSchema)
class TargetConfigField(serializers.JSONField):
    """Raw adapter config, validated by the adapter."""
