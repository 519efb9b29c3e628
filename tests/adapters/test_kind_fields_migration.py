"""0012: the target's cached count gets a kind-free name and keeps its value."""

from __future__ import annotations

import pytest

from changes.models import ChangeRequest


# Real commits: migrating backwards and forwards runs the schema editor outside a transaction.
@pytest.mark.django_db(transaction=True)
def test_the_cached_count_keeps_its_value_under_its_generic_name(dns_target, author):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    from changes.services import change_create

    items = [{"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": ["192.0.2.99"]}]
    change = change_create(actor=author, target=dns_target, title="t", reason="r", items=items)
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate([("changes", "0011_execution_state_machine")])
    with connection.cursor() as cursor:
        cursor.execute("UPDATE changes_target SET rrset_count = 41")
    executor = MigrationExecutor(connection)
    executor.migrate(latest)
    assert ChangeRequest.objects.get(pk=change.pk).target_id == dns_target.pk
    dns_target.refresh_from_db()
    assert dns_target.item_count == 41
