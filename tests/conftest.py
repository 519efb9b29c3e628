"""Shared fixtures: a real BIND 9 named per test session, personas come later.

With CI=true a missing `named` is a failure, not a skip: CI must never pass by
testing nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from dns_adapters.local_named import LocalNamed, default_zone_text, find_named

ZONE = "demo.test"
DEMO_RECORDS = (
    "www 300 IN A 192.0.2.10\n"
    "www 300 IN A 192.0.2.11\n"
    "api 300 IN A 192.0.2.20\n"
    "mail 300 IN A 192.0.2.25\n"
    "@ 300 IN MX 10 mail\n"
    "alias 300 IN CNAME www\n"
    "txt 300 IN TXT \"v=spf1 -all\"\n"
)


def require_named() -> None:
    if find_named() is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("BIND 9 named is required under CI=true (apt-get install bind9)")
        pytest.skip("BIND 9 named not installed (apt-get install bind9)")


@pytest.fixture(scope="session")
def named_server() -> Iterator[LocalNamed]:
    """One throwaway named for the session, serving demo.test plus a spare zone per test."""
    require_named()
    zones = {ZONE: default_zone_text(ZONE, DEMO_RECORDS)}
    zones.update({f"z{i}.test": default_zone_text(f"z{i}.test", DEMO_RECORDS) for i in range(60)})
    server = LocalNamed(zones, extra_keys=["intruder-key"])
    server.start()
    yield server
    server.stop()


_zone_counter = iter(range(60))


@pytest.fixture
def fresh_zone(named_server: LocalNamed) -> str:
    """A zone no other test has touched, with the demo records in it."""
    try:
        return f"z{next(_zone_counter)}.test"
    except StopIteration:  # pragma: no cover - raise the zone count above
        pytest.fail("out of spare zones: raise the count in tests/conftest.py")
