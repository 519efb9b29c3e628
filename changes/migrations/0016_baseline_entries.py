"""The drift baseline becomes a header and one row per key (issue 14, finding 1):
`Baseline.records` (one JSON value per zone) moves into `BaselineEntry` rows, and
the header's digest becomes the sum modulo 2**256 of the entries' digests, so an
apply rewrites only the keys it touches. Backwards, the records are put together
again with the old digest (SHA-256 over the sorted lines of the whole zone).

The digests are computed here, not imported from drift.sweep: a migration keeps
the definition of its time.
"""

import hashlib

from django.db import migrations, models

MODULUS = 1 << 256


def _lines(key, value, *, ordered):
    name, _, rdtype = key.rpartition(" ")
    rdatas = value["rdatas"] if ordered else sorted(value["rdatas"])
    return (f"{name} {value['ttl']} {rdtype} {rdata}\n".encode() for rdata in rdatas)


def _entry_digest(key, value):
    digest = hashlib.sha256()
    for line in _lines(key, value, ordered=True):
        digest.update(line)
    return digest.hexdigest()


def records_to_entries(apps, schema_editor):
    Baseline = apps.get_model("changes", "Baseline")
    BaselineEntry = apps.get_model("changes", "BaselineEntry")
    for baseline in Baseline.objects.all().iterator(1):
        records = baseline.records or {}
        entries = [BaselineEntry(baseline_id=baseline.pk, key=key, value=value, digest=_entry_digest(key, value))
                   for key, value in records.items()]
        BaselineEntry.objects.bulk_create(entries, batch_size=500)
        total = sum(int(entry.digest, 16) for entry in entries) % MODULUS
        # Revision bumped: a check that read before the migration gives up. The item
        # count is the header's own and keeps its value.
        Baseline.objects.filter(pk=baseline.pk).update(digest=format(total, "064x"), revision=baseline.revision + 1)


def entries_to_records(apps, schema_editor):
    Baseline = apps.get_model("changes", "Baseline")
    BaselineEntry = apps.get_model("changes", "BaselineEntry")
    for baseline in Baseline.objects.all().iterator(1):
        records = dict(BaselineEntry.objects.filter(baseline_id=baseline.pk).values_list("key", "value"))
        digest = hashlib.sha256()
        for key in sorted(records):
            for line in _lines(key, records[key], ordered=False):
                digest.update(line)
        Baseline.objects.filter(pk=baseline.pk).update(
            records=records, digest=digest.hexdigest(), revision=baseline.revision + 1)


class Migration(migrations.Migration):
    dependencies = [("changes", "0015_target_kind_from_registry")]

    operations = [
        migrations.CreateModel(
            name="BaselineEntry",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("key", models.TextField()),
                ("value", models.JSONField()),
                ("digest", models.CharField(max_length=64)),
                ("wire", models.CharField(blank=True, default="", max_length=64)),
                ("baseline", models.ForeignKey(on_delete=models.deletion.CASCADE, related_name="entries",
                                               to="changes.baseline")),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("baseline", "key"), name="baseline_entry_unique_key")],
            },
        ),
        migrations.RunPython(records_to_entries, entries_to_records),
        migrations.RemoveField(model_name="baseline", name="records"),
    ]
