"""0012: the target's cached count gets a kind-free name and keeps its value."""

from __future__ import annotations

import pytest

from changes.models import ChangeRequest
from tests.factories import migrate_to


# Real commits: migrating backwards and forwards runs the schema editor outside a transaction.
@pytest.mark.django_db(transaction=True)
def test_the_cached_count_keeps_its_value_under_its_generic_name(dns_target, author):
    from django.db import connection

    from changes.services import change_create

    items = [{"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": ["192.0.2.99"]}]
    change = change_create(actor=author, target=dns_target, title="t", reason="r", items=items)
    migrate_to(("changes", "0011_execution_state_machine"))
    with connection.cursor() as cursor:
        cursor.execute("UPDATE changes_target SET rrset_count = 41")
    migrate_to()
    assert ChangeRequest.objects.get(pk=change.pk).target_id == dns_target.pk
    dns_target.refresh_from_db()
    assert dns_target.item_count == 41


# Real commits, as above.
@pytest.mark.django_db(transaction=True)
def test_allow_apex_becomes_a_kind_option_and_the_baseline_keeps_its_values(dns_target, author):
    """0013: a change's allow_apex moves into `options`; ZoneBaseline's serial and
    rrset_count keep their values as Baseline's version and item_count."""
    from django.db import connection

    from changes.models import Baseline
    from changes.services import change_create

    items = [{"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": ["192.0.2.98"]}]
    apex = change_create(actor=author, target=dns_target, title="t", reason="r", items=items)
    plain = change_create(actor=author, target=dns_target, title="t", reason="r", items=items)
    migrate_to(("changes", "0012_generic_kind_fields"))
    _old_columns(connection, apex.pk, dns_target.pk)
    migrate_to()
    assert ChangeRequest.objects.get(pk=apex.pk).options == {"allow_apex": True}
    assert ChangeRequest.objects.get(pk=plain.pk).options == {}
    baseline = Baseline.objects.get(target=dns_target)
    assert (baseline.version, baseline.item_count) == (7, 3)


def _old_columns(connection, apex_change: int, target: int) -> None:
    """Rows written through 0012's columns, as a deployment before 0013 held them."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE changes_changerequest SET allow_apex = (id = %s)", [apex_change])
        cursor.execute("INSERT INTO changes_zonebaseline (target_id, taken_at, serial, rrset_count, digest, "
                       "wire_digest, revision, records) VALUES (%s, CURRENT_TIMESTAMP, 7, 3, '', '', 1, '{}')",
                       [target])
