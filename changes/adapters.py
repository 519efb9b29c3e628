"""Opening the live adapter of a target, by its kind (changes/kinds.py). Nothing
here names a concrete kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings

from adapters import Adapter
from changes.kinds import kind_named, kind_of, target_unavailable_on_adapter_error
from changes.models import Target

# Unit tests may swap in a fake factory; the integration suite never does.
_factory_override: Callable[[Target], Adapter] | None = None


def adapter_class(kind: str) -> type[Adapter]:
    return kind_named(kind).adapter_class


def adapter_for(target: Target) -> Adapter:
    if _factory_override is not None:
        return _factory_override(target)
    return kind_of(target).adapter(target.config, key_dir=settings.CHANGEGATE_KEY_DIR)


def adapter_open(target: Target) -> Adapter:
    """adapter_for, with a config that broke after registration (the key file was
    removed or rotated badly) reported as an unavailable target, not an AdapterError
    escaping to the caller as a crash."""
    with target_unavailable_on_adapter_error(target):
        return adapter_for(target)


def validate_target_config(kind: str, config: Any) -> dict[str, Any]:
    # The key directory comes from the deployment, never from the config a user
    # sends: adapters do not import Django, so it is handed in here, on every
    # build, and a key moved out of the directory after registration stops working.
    return kind_named(kind).validate_config(config, key_dir=settings.CHANGEGATE_KEY_DIR)
