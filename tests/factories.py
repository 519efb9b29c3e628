"""Test data built through the services, as a user would build it (STYLE.md): one
place for the change items, changes in each state and API clients that the test
modules used to copy. Fixtures (personas, targets, zones) are in tests/conftest.py."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient

# The change most tests propose: www A becomes one address.
WWW: list[dict[str, Any]] = [{"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": ["192.0.2.99"]}]


def upsert(name: str, *records: str, rdtype: str = "A", ttl: int = 300) -> list[dict[str, Any]]:
    """The items of a change that makes `name` hold exactly `records`."""
    return [{"op": "upsert", "name": name, "type": rdtype, "ttl": ttl, "records": list(records)}]


def submitted(author, target, items: list[dict[str, Any]] = WWW, *, title: str = "t", reason: str = "r",
              **kwargs: Any):
    """A change `author` wrote and submitted: pending approval."""
    from changes.services import change_create, change_submit

    change = change_create(actor=author, target=target, title=title, reason=reason, items=items, **kwargs)
    return change_submit(actor=author, change=change)


def approved(author, reviewer, target, items: list[dict[str, Any]] = WWW, *, comment: str = "", **kwargs: Any):
    """A change `author` submitted and `reviewer` approved on the fingerprint they saw."""
    from approvals.policy import change_approve

    change = submitted(author, target, items, **kwargs)
    return change_approve(actor=reviewer, change=change, fingerprint=change.fingerprint, comment=comment)


def run(change) -> str:
    """Run the change's current attempt in this process, as a worker's task would."""
    from pipeline.run import execution_run

    return execution_run(execution_id=change.execution.pk, worker="test-worker")


def api_client(user=None) -> APIClient:
    """A DRF test client, authenticated as `user` when one is given."""
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def wrong_secret(key_file, named_server) -> None:
    """Rewrite `key_file` with the same key name and a secret the server does not know
    (still a valid key file: the server, not the parser, must refuse it)."""
    import base64

    from dns_adapters.local_named import write_key_file

    write_key_file(key_file, named_server.key_name, base64.b64encode(b"w" * 32).decode())


def migrate_to(*targets: tuple[str, str]) -> None:
    """Migrate the test database to `targets` (or, with none, to the latest) the way
    `manage.py migrate` does, around the executor: on SQLite the approvals
    author-set triggers name the change table, whose rebuilds they would break, so
    they are dropped first and put back after (approvals.backstop)."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    from approvals import backstop

    executor = MigrationExecutor(connection)
    backstop.before_migrate(using="default")
    try:
        executor.migrate(list(targets) or executor.loader.graph.leaf_nodes())
    finally:
        backstop.after_migrate(using="default")



def www(target) -> tuple[str, ...] | None:
    """What the target's zone holds at www A now (its rdatas), read from the primary; None if absent."""
    from changes.adapters import adapter_for
    from dns_adapters.base import RRKey

    adapter = adapter_for(target)
    try:
        (value,) = adapter.read([RRKey(f"www.{target.name}.", "A")]).values()
        return value.rdatas if value else None
    finally:
        adapter.close()
