"""The error body: every non-2xx answer of the API has this shape. Separate
because every view documents it, whatever the resource.
"""

from __future__ import annotations

from rest_framework import serializers


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
