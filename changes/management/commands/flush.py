"""`flush` erases every table, the audit log included, and is the one operation
allowed past the append-only triggers of migration 0004 (pytest-django's
transactional tests call it after each test). The triggers are lifted inside
flush's own transaction and restored before it commits, so no other statement
ever runs without them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.commands.flush import Command as FlushCommand
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from changes.models import AuditCheckpoint, AuditEvent


@contextmanager
def _append_only_lifted(connection: BaseDatabaseWrapper) -> Iterator[None]:
    existing = set(connection.introspection.table_names())
    tables = [m._meta.db_table for m in (AuditEvent, AuditCheckpoint) if m._meta.db_table in existing]
    q = connection.ops.quote_name
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            for table in tables:
                cursor.execute(f"ALTER TABLE {q(table)} DISABLE TRIGGER USER")
            yield
            for table in tables:
                cursor.execute(f"ALTER TABLE {q(table)} ENABLE TRIGGER USER")
        elif connection.vendor == "sqlite":
            # SQLite cannot disable a trigger: drop and recreate it from its own DDL
            # (DDL is transactional on SQLite, so a failure restores them).
            placeholders = ",".join("%s" for _ in tables)
            cursor.execute(
                f"SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name IN ({placeholders})", tables
            )
            triggers = cursor.fetchall()
            for name, _sql in triggers:
                cursor.execute(f"DROP TRIGGER {q(name)}")
            yield
            for _name, sql in triggers:
                cursor.execute(sql)
        else:
            yield


class Command(FlushCommand):
    help = FlushCommand.help + " The audit log's append-only triggers are lifted for the flush only."

    def handle(self, **options: Any) -> None:
        connection = connections[options["database"]]
        with transaction.atomic(using=connection.alias), _append_only_lifted(connection):
            super().handle(**options)
