"""Shared fixtures: a real BIND 9 named per test session, personas come later.

With CI=true a missing `named` is a failure, not a skip: CI must never pass by
testing nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from dns_adapters.local_named import LocalNamed, LocalResolver, default_zone_text, find_named

ZONE = "demo.test"
# named loads a few hundred tiny zones in well under a second; one per test keeps tests independent.
SPARE_ZONES = 400
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
    zones.update({f"z{i}.test": default_zone_text(f"z{i}.test", DEMO_RECORDS) for i in range(SPARE_ZONES)})
    server = LocalNamed(zones, extra_keys=["intruder-key"])
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def caching_resolver(named_server: LocalNamed) -> Iterator[LocalResolver]:
    """A caching resolver (a second named, recursion on) forwarding to the session's
    named: what clients see, old answers cached for their TTL. `address` is its
    "127.0.0.1:PORT". Tests use fresh zones, so its cache never carries one test's
    answers into another."""
    resolver = LocalResolver(named_server.primary, zones=[ZONE])
    resolver.start()
    yield resolver
    resolver.stop()


_zone_counter = iter(range(SPARE_ZONES))


def spare_zone() -> str:
    """The name of a zone of the session's named that nobody has used yet."""
    try:
        return f"z{next(_zone_counter)}.test"
    except StopIteration:  # pragma: no cover - raise the zone count above
        pytest.fail("out of spare zones: raise the count in tests/conftest.py")


@pytest.fixture
def fresh_zone(named_server: LocalNamed) -> str:
    """A zone no other test has touched, with the demo records in it."""
    return spare_zone()


@pytest.fixture(scope="module")
def module_zone(named_server: LocalNamed) -> str:
    """One spare zone for a whole module, for modules whose tests plan against the
    zone but never write to it (the database, with the target row, is reset per
    test). Such a module overrides `fresh_zone` to return it."""
    return spare_zone()


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Django's cache holds the failed-token counts per client address
    (accounts.authentication): every test starts from none, whatever ran before."""
    from django.core.cache import cache

    cache.clear()
    yield


# ---------------------------------------------------------------------------
# Personas and targets (Django). Data is set up through services.


@pytest.fixture
def make_user(db):
    from django.contrib.auth import get_user_model

    def make(username: str, **extra):
        return get_user_model().objects.create_user(username=username, password="pw", **extra)

    return make


@pytest.fixture
def operator(make_user):
    """The operator persona: may open the admin (is_staff) and holds the operator role,
    the model-wide `changes.operate_targets` permission. Bootstrap, documented: the
    role is added directly to the user's permissions, which `audit.identity`
    records as an audit event (actor: the OS user running the tests)."""
    from django.contrib.auth.models import Permission

    user = make_user("operator", is_staff=True)
    user.user_permissions.add(Permission.objects.get(content_type__app_label="changes", codename="operate_targets"))
    return type(user).objects.get(pk=user.pk)  # a fresh instance: Django caches permissions


@pytest.fixture
def staff(operator):
    """Old name of `operator`, kept for the tests that register targets with it.
    Being staff alone grants nothing: see `plain_staff`."""
    return operator


@pytest.fixture
def plain_staff(make_user):
    """May open the admin and holds no role at all."""
    return make_user("stu", is_staff=True)


@pytest.fixture
def author(make_user):
    return make_user("alice")


@pytest.fixture
def reviewer(make_user):
    return make_user("bob")


@pytest.fixture
def second_reviewer(make_user):
    return make_user("carol")


@pytest.fixture
def outsider(make_user):
    return make_user("mallory")


@pytest.fixture
def auditor(make_user):
    return make_user("dave")


def grant(user, role: str, target) -> None:
    """Give `user` (or a group) `role` on `target` through the grant service, as a
    command would (actor None). Reviewer and emergency take the recorded bootstrap
    path: test setup has no second operator to approve a grant request."""
    from django.contrib.auth.models import Group

    from changes.permissions import FOUR_EYES_ROLES, target_role_grant

    principal = {"group": user} if isinstance(user, Group) else {"user": user}
    target_role_grant(actor=None, target=target, role=role, bootstrap=role in FOUR_EYES_ROLES,
                      reason="test setup", **principal)


@pytest.fixture
def dns_target(db, named_server, fresh_zone, operator, author, reviewer, second_reviewer, auditor):
    """A registered target for a zone no other test touched, with roles granted."""
    from changes.services import target_register

    target = target_register(
        actor=operator,
        name=fresh_zone,
        config={"zone": fresh_zone, "primary": named_server.primary, "tsig_key_file": str(named_server.key_file),
                "timeout": 3},
        # The test zones' records have TTL 300: no TTL-derived bake unless a test asks for one.
        bake_max_seconds=0,
    )
    grant(author, "engineer", target)
    grant(reviewer, "reviewer", target)
    grant(second_reviewer, "reviewer", target)
    grant(auditor, "auditor", target)
    return target


@pytest.fixture
def olivia(make_user):
    """An engineer on `other_target` only: she holds no role on `dns_target`."""
    return make_user("olivia")


@pytest.fixture
def other_zone(named_server) -> str:
    return spare_zone()


@pytest.fixture
def other_target(operator, named_server, other_zone, olivia):
    """A second target on its own zone where only olivia holds a role (engineer) and
    nobody audits. Registered without reading the zone, which nothing here changes."""
    from changes.services import target_register

    target = target_register(actor=operator, name=other_zone, check_reachable=False, config={
        "zone": other_zone, "primary": named_server.primary, "tsig_key_file": str(named_server.key_file),
        "timeout": 3})
    grant(olivia, "engineer", target)
    return target


@pytest.fixture
def fast_target(dns_target, operator):
    """`dns_target` without a bake: an applied change is verified at once."""
    from changes.services import target_update_policy

    return target_update_policy(actor=operator, target=dns_target, bake_seconds=0)


@pytest.fixture
def own_named() -> Iterator[LocalNamed]:
    """A named of the test's own serving `down.test`, to stop (and start again on the
    same port) without disturbing the session's server."""
    server = LocalNamed({"down.test": default_zone_text("down.test", DEMO_RECORDS)})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def keyed_target(named_server, fresh_zone, operator, author, reviewer, tmp_path):
    """A target with a key file of its own, to be swapped or deleted after approval."""
    import shutil

    from changes.services import target_register

    key_file = tmp_path / "own.key"
    shutil.copy(named_server.key_file, key_file)
    target = target_register(actor=operator, name=fresh_zone, bake_seconds=0, bake_max_seconds=0, config={
        "zone": fresh_zone, "primary": named_server.primary, "tsig_key_file": str(key_file), "timeout": 3})
    grant(author, "engineer", target)
    grant(reviewer, "reviewer", target)
    return target, key_file
