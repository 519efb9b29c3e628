"""The one registry that maps a target kind to its adapter. Nothing else in
`changes` imports a concrete adapter module."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

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
    return adapter_class(target.kind)(target.config)


def validate_target_config(kind: str, config: Any) -> dict[str, Any]:
    return adapter_class(kind).validate_config(config)
