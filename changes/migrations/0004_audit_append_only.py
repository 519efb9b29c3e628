"""Audit events gain `outcome` and `target_name`, the user id becomes a plain copy,
signed checkpoints get a table, and the database itself refuses UPDATE, DELETE and
TRUNCATE on both audit tables (triggers; SQLite and PostgreSQL).

The triggers are the point of this migration: the ORM refuses too, but raw SQL,
another client or a bug in a bulk path must not be able to rewrite history. Only
`manage.py flush` (which erases the whole database by design) lifts them, inside
its own transaction.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

AUDIT_MODELS = ("AuditEvent", "AuditCheckpoint")
PG_FUNCTION = "changegate_audit_append_only"


def _tables(apps):
    return [apps.get_model("changes", name)._meta.db_table for name in AUDIT_MODELS]


def install_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    q = schema_editor.quote_name
    if vendor == "sqlite":
        for table in _tables(apps):
            for op in ("UPDATE", "DELETE"):
                schema_editor.execute(
                    f"CREATE TRIGGER {q(f'{table}_no_{op.lower()}')} BEFORE {op} ON {q(table)} "
                    f"BEGIN SELECT RAISE(ABORT, 'audit log is append-only: {op} refused'); END;"
                )
    elif vendor == "postgresql":
        # restrict_violation (class 23) so Django raises IntegrityError, as RAISE(ABORT)
        # does on SQLite.
        schema_editor.execute(
            f"CREATE OR REPLACE FUNCTION {PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME "
            "USING ERRCODE = 'restrict_violation'; END; $$",
            params=None,  # no parameters: the % above are plpgsql's, not placeholders
        )
        for table in _tables(apps):
            schema_editor.execute(
                f"CREATE TRIGGER {q(f'{table}_append_only')} BEFORE UPDATE OR DELETE ON {q(table)} "
                f"FOR EACH ROW EXECUTE FUNCTION {PG_FUNCTION}()"
            )
            schema_editor.execute(
                f"CREATE TRIGGER {q(f'{table}_no_truncate')} BEFORE TRUNCATE ON {q(table)} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {PG_FUNCTION}()"
            )
    else:
        # Fail loudly: an audit log without its database guard must not pass silently.
        raise RuntimeError(f"no append-only triggers for database vendor {vendor!r}")


def drop_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    q = schema_editor.quote_name
    if vendor == "sqlite":
        for table in _tables(apps):
            for op in ("update", "delete"):
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {q(f'{table}_no_{op}')}")
    elif vendor == "postgresql":
        for table in _tables(apps):
            for name in (f"{table}_append_only", f"{table}_no_truncate"):
                schema_editor.execute(f"DROP TRIGGER IF EXISTS {q(name)} ON {q(table)}")
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {PG_FUNCTION}()")


class Migration(migrations.Migration):

    dependencies = [
        ('changes', '0003_execution'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='AuditCheckpoint',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('seq', models.PositiveBigIntegerField(db_index=True)),
                ('head_hash', models.CharField(max_length=64)),
                ('created_at', models.DateTimeField()),
                ('key_id', models.CharField(max_length=16)),
                ('signature', models.TextField()),
                ('public_key', models.TextField()),
            ],
            options={
                'ordering': ['seq', 'id'],
            },
        ),
        migrations.AddField(
            model_name='auditevent',
            name='outcome',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='target_name',
            field=models.CharField(blank=True, max_length=253),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='actor',
            field=models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, to=settings.AUTH_USER_MODEL),
        ),
        # Last, after any table rebuild SQLite needed above (a rebuild drops triggers).
        migrations.RunPython(install_triggers, drop_triggers),
    ]
