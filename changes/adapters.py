"""The one registry that maps a target kind to its adapter. Nothing else in
`changes` imports a concrete adapter module."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from django.conf import settings

from dns_adapters.base import DNSAdapter

from .models import Target

ADAPTERS: dict[str, str] = {
    Target.Kind.DNS: "dns_adapters.rfc2136.RFC2136Adapter",
}
# Unit tests may swap in a fake factory; the integration suite never does.
_factory_override: Callable[[Target], DNSAdapter] | None = None


def adapter_class(kind: str) -> type[DNSAdapter]:
    module, _, name = ADAPTERS[kind].rpartition(".")
    return getattr(import_module(module), name)


def adapter_for(target: Target) -> DNSAdapter:
    if _factory_override is not None:
        return _factory_override(target)
    return adapter_class(target.kind)(target.config, key_dir=settings.CHANGEGATE_KEY_DIR)


def validate_target_config(kind: str, config: Any) -> dict[str, Any]:
    # The key directory comes from the deployment, never from the config a user
    # sends: adapters do not import Django, so it is handed in here, on every
    # build, and a key moved out of the directory after registration stops working.
    return adapter_class(kind).validate_config(config, key_dir=settings.CHANGEGATE_KEY_DIR)
