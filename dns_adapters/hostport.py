"""Server addresses as the configs write them ("192.0.2.1:53", "[2001:db8::1]:5353"),
shared by the adapter (primary, nameservers, resolvers) and the resolver lookups."""

from __future__ import annotations

import ipaddress
from typing import Any


def parse_hostport(text: Any) -> tuple[str, int]:
    """"192.0.2.1:53", "[2001:db8::1]:5353" -> (address, port). Addresses only:
    resolving a name here would make the target depend on the resolver."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("expected host:port")
    raw = text.strip()
    if raw.startswith("["):
        host, sep, port = raw[1:].partition("]:")
    else:
        host, sep, port = raw.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        raise ValueError(f"{raw!r} is not host:port")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    port_number = int(port)
    if not 0 < port_number < 65536:
        raise ValueError(f"port {port_number} is out of range")
    return host, port_number
