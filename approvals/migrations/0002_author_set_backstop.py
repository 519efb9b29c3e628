"""The database refuses a live approval from anyone in the change's author set
(author or editor), reading both from the change, not from the copied `author`
column the 0001 CHECK compares. The SQL and why it is shaped so: approvals.backstop.

On PostgreSQL this migration installs the triggers. On SQLite it installs nothing:
a trigger naming the change table would break any later rebuild of that table in
this same `migrate` run, so the post_migrate hook installs them once every
migration has run (and pre_migrate drops them before the next run).
"""

from django.db import migrations

from approvals import backstop


def install_triggers(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        backstop.install(schema_editor.connection, backstop.tables(apps))


def drop_triggers(apps, schema_editor):
    backstop.drop(schema_editor.connection, backstop.tables(apps))


class Migration(migrations.Migration):

    dependencies = [
        ("approvals", "0001_initial"),
        ("changes", "0006_auditevent_canonical_text"),
    ]

    operations = [
        migrations.RunPython(install_triggers, drop_triggers),
    ]
