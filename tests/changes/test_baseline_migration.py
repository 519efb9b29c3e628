"""0016: a baseline's one JSON value per zone becomes one entry per key, and back."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.factories import migrate_to

RECORDS = {
    "demo.test. SOA": {"ttl": 3600, "rdatas": ["ns1.demo.test. hostmaster.demo.test. 7 7200 600 604800 300"]},
    "www.demo.test. A": {"ttl": 300, "rdatas": ["192.0.2.10", "192.0.2.11"]},
    "inet changegate input chain": {"ttl": 0, "rdatas": ["tcp dport 22 accept", "ct state established accept"]},
}


def sorted_lines_digest(records):
    """The digest 0015 kept: SHA-256 over the sorted lines of the whole zone."""
    digest = hashlib.sha256()
    for key in sorted(records):
        name, _, rdtype = key.rpartition(" ")
        for rdata in sorted(records[key]["rdatas"]):
            digest.update(f"{name} {records[key]['ttl']} {rdtype} {rdata}\n".encode())
    return digest.hexdigest()


# Real commits: migrating backwards and forwards runs the schema editor outside a transaction.
@pytest.mark.django_db(transaction=True)
def test_a_baselines_records_become_entries_and_come_back(dns_target):
    from django.db import connection

    from changes.models import Baseline, BaselineEntry
    from drift.sweep import records_digest

    migrate_to(("changes", "0015_target_kind_from_registry"))
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO changes_baseline (target_id, taken_at, version, item_count, digest, "
                       "wire_digest, revision, records) VALUES (%s, CURRENT_TIMESTAMP, 7, 3, %s, 'w', 4, %s)",
                       [dns_target.pk, sorted_lines_digest(RECORDS), json.dumps(RECORDS)])
    migrate_to()
    baseline = Baseline.objects.get(target=dns_target)
    assert baseline.records == RECORDS  # a chain's rules keep their order
    assert (baseline.version, baseline.item_count, baseline.wire_digest) == (7, 3, "w")
    assert baseline.digest == records_digest(RECORDS) != sorted_lines_digest(RECORDS)
    assert baseline.revision == 5  # a check that read before the migration gives up
    assert list(BaselineEntry.objects.filter(baseline=baseline).values_list("wire", flat=True)) == [""] * 3

    migrate_to(("changes", "0015_target_kind_from_registry"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT records, digest, item_count FROM changes_baseline WHERE target_id = %s",
                       [dns_target.pk])
        records, digest, item_count = cursor.fetchone()
    assert (json.loads(records) if isinstance(records, str) else records) == RECORDS
    assert (digest, item_count) == (sorted_lines_digest(RECORDS), 3)
    migrate_to()
    assert Baseline.objects.get(target=dns_target).records == RECORDS
