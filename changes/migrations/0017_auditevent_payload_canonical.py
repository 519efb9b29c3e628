"""AuditEvent.payload is written in the canonical text's spelling (sorted keys,
compact, ASCII; issue 14, finding 6), so the CSV/JSON Lines export checks the
column against `canonical_text` by comparing text. No schema change: rows written
before keep their spelling (the append-only triggers refuse rewriting them) and
the export decodes those as before.

State only: for an AlterField SQLite would rebuild the table (copy, drop, rename),
which drops the append-only triggers of migration 0004 with it."""

from django.db import migrations, models

import changes.models.audit


class Migration(migrations.Migration):

    dependencies = [("changes", "0016_baseline_entries")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="auditevent",
                    name="payload",
                    field=models.JSONField(default=dict, encoder=changes.models.audit.CanonicalPayloadEncoder),
                ),
            ],
            database_operations=[],
        ),
    ]
