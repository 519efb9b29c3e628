"""The database's own four-eyes backstop: it refuses a live approval row whose
approver is in the change's author set (the author or an editor).

0001's CHECK compared the approver with `author`, a column copied onto the approval
row: whoever writes the row also writes the copy, so a forged copy passed, and an
editor (in the author set too) was never compared at all. These triggers read the
author from the change row and the editors from the editors m2m table at the moment
a live approval is inserted or updated, trusting nothing on the row but the approver
and the change. Only live rows (invalidated_at IS NULL) are checked: invalidating an
approval must always succeed, including the one a reviewer gave before they edited
the change and so joined its editors.

Installed by approvals migration 0002 on PostgreSQL. On SQLite a trigger that
names another table breaks Django's table rebuilds: `ALTER TABLE new__x RENAME TO x`
re-parses every trigger while `x` is dropped ("error in trigger ...: no such table"),
so any later migration that rebuilds the change or editors table (adding a field
with a default does) would fail. There the triggers are dropped before every
`migrate` and put back after it (`ApprovalsConfig.ready` connects the signals), once
migration 0002 is applied.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

PG_FUNCTION = "changegate_approval_not_author_set"
TRIGGER = "approvals_approval_author_set"
SQLITE_TRIGGERS = (f"{TRIGGER}_insert", f"{TRIGGER}_update")
MIGRATION = ("approvals", "0002_author_set_backstop")
# No quotes in it: it is spliced into the SQL as a literal.
MESSAGE = "approval refused: the approver wrote or edited the change"


def tables(apps: Any) -> tuple[str, str, str]:
    """(approval, change, editors) table names from an app registry (historical in a migration)."""
    change = apps.get_model("changes", "ChangeRequest")
    approval = apps.get_model("approvals", "Approval")
    editors = change._meta.get_field("editors").remote_field.through
    return approval._meta.db_table, change._meta.db_table, editors._meta.db_table


def _condition(connection: BaseDatabaseWrapper, change_table: str, editors_table: str) -> str:
    q = connection.ops.quote_name
    # NEW.* is the row being written; the author set is read from the change itself.
    return (
        "NEW.invalidated_at IS NULL AND ("
        f"NEW.approver_id = (SELECT author_id FROM {q(change_table)} WHERE id = NEW.change_id) "
        f"OR EXISTS (SELECT 1 FROM {q(editors_table)} "
        "WHERE changerequest_id = NEW.change_id AND user_id = NEW.approver_id))"
    )


def install(connection: BaseDatabaseWrapper, names: tuple[str, str, str]) -> None:
    approval_table, change_table, editors_table = names
    q = connection.ops.quote_name
    condition = _condition(connection, change_table, editors_table)
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            for name, op in zip(SQLITE_TRIGGERS, ("INSERT", "UPDATE"), strict=True):
                # RAISE(ABORT) is SQLITE_CONSTRAINT_TRIGGER: Django raises IntegrityError.
                cursor.execute(
                    f"CREATE TRIGGER IF NOT EXISTS {q(name)} BEFORE {op} ON {q(approval_table)} "
                    f"WHEN {condition} BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END;"
                )
        elif connection.vendor == "postgresql":
            # check_violation (class 23) so Django raises IntegrityError, as on SQLite.
            cursor.execute(
                f"CREATE OR REPLACE FUNCTION {PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF {condition} THEN RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'check_violation'; "
                "END IF; RETURN NEW; END; $$"
            )
            cursor.execute(f"DROP TRIGGER IF EXISTS {q(TRIGGER)} ON {q(approval_table)}")
            cursor.execute(
                f"CREATE TRIGGER {q(TRIGGER)} BEFORE INSERT OR UPDATE ON {q(approval_table)} "
                f"FOR EACH ROW EXECUTE FUNCTION {PG_FUNCTION}()"
            )
        else:
            # Fail loudly: a four-eyes gate without its database backstop must not pass silently.
            raise RuntimeError(f"no author-set triggers for database vendor {connection.vendor!r}")


def drop(connection: BaseDatabaseWrapper, names: tuple[str, str, str]) -> None:
    approval_table = names[0]
    q = connection.ops.quote_name
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            for name in SQLITE_TRIGGERS:
                cursor.execute(f"DROP TRIGGER IF EXISTS {q(name)}")
        elif connection.vendor == "postgresql":
            cursor.execute(f"DROP TRIGGER IF EXISTS {q(TRIGGER)} ON {q(approval_table)}")
            cursor.execute(f"DROP FUNCTION IF EXISTS {PG_FUNCTION}()")


# ---------------------------------------------------------------------------
# SQLite: off during `migrate`, back on after it (see the module docstring).


def before_migrate(*, using: str, **_: Any) -> None:
    from django.apps import apps
    from django.db import connections

    connection = connections[using]
    if connection.vendor == "sqlite":
        drop(connection, tables(apps))


def after_migrate(*, using: str, **_: Any) -> None:
    from django.apps import apps
    from django.db import connections
    from django.db.migrations.recorder import MigrationRecorder

    connection = connections[using]
    if connection.vendor != "sqlite":
        return
    # Only while 0002 is applied: migrating back to 0001 removes the backstop.
    if MIGRATION in MigrationRecorder(connection).applied_migrations():
        install(connection, tables(apps))
