"""Strict input fields: JSON types taken as they are, never coerced (DRF's
own fields turn 42 into "42" and "yes" into True), unknown body fields refused,
and the boolean query parameter as OpenAPI writes one. Separate because every
request serializer, of every resource, is built from these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty


class StrictCharField(serializers.CharField):
    """A JSON string and nothing else: DRF's CharField would turn 42 into "42"."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class NonBlankCharField(StrictCharField):
    """Text that must say something (a reason, a title, a comment, a fingerprint):
    blank or only whitespace is refused here, with a 400, before the service looks
    at the change's state (which would answer 409), so the request body is wrong
    whatever the change, as the schema says: `minLength: 1` (DRF's allow_blank=False)
    and a non-space character. The services keep their own check for other callers."""

    def __init__(self, **kwargs: Any) -> None:
        # The validator only writes the schema's pattern: whitespace is trimmed
        # before validators run, so a value that reaches it always matches.
        super().__init__(allow_blank=False, validators=[RegexValidator(r"\S")], **kwargs)


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


class StrictInputSerializerExtension(OpenApiSerializerExtension):
    """The schema's side of StrictInputSerializer's rule: every request body built
    from one says `additionalProperties: false`, as the server refuses unknown keys."""

    target_class = StrictInputSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        if direction == "request":
            schema["additionalProperties"] = False
        return schema


class QueryBooleanField(serializers.BooleanField):
    """A boolean query parameter as OpenAPI writes one: `true` or `false`. DRF's
    BooleanField would also take 0, "yes", "on"..., which the schema calls invalid."""

    default_error_messages = {"invalid": "Must be true or false."}
    default_empty_html = empty  # absent is "not given", not the unticked checkbox (False)

    def to_internal_value(self, data: Any) -> bool:
        if data not in ("true", "false"):
            self.fail("invalid")
        return data == "true"


class KindOptionField(serializers.BooleanField):
    """A boolean option of the change's target kind (DNS: allow_apex), read from
    ChangeRequest.options; absent means False. The API keeps the option as its own
    field so clients see the same shape as before options were generic."""

    def __init__(self, option: str, **kwargs: Any) -> None:
        self.option = option
        super().__init__(**kwargs)

    def get_attribute(self, instance: Any) -> bool:
        return bool((instance.options or {}).get(self.option, False))


def options_from(attrs: dict[str, Any], *names: str) -> dict[str, Any]:
    """Move the kind-option fields `names` given in `attrs` into attrs["options"],
    the one mapping the services take."""
    options = {name: attrs.pop(name) for name in names if name in attrs}
    if options:
        attrs["options"] = options
    return attrs

