"""The lock order. Every transaction that locks rows takes them in this order,
skipping what it does not need, and never goes back to an earlier kind:

    change -> target -> execution -> grant request -> audit chain head (always last)

- Rows locked explicitly (`lock_change`, `lock_target`, `lock_execution`) are
  locked FOR NO KEY UPDATE, never FOR UPDATE. Inserting a row that references
  another (an audit event, an execution, a check result, an approval) makes
  PostgreSQL take a KEY SHARE lock on the referenced row, and Django declares its
  foreign keys DEFERRABLE INITIALLY DEFERRED, so that lock is taken at COMMIT,
  after everything else, the audit head included. KEY SHARE conflicts only with
  FOR UPDATE: with FOR NO KEY UPDATE everywhere these hidden locks never wait.
  (FOR UPDATE is still taken by an UPDATE that changes a unique column, a target's
  rename or a username change, and by DELETE; such a transaction locks that row
  first and holds nothing before it.) Issue 10: `lock_change` held the target FOR
  UPDATE and waited for the head, while the check-round writer held the head and
  waited, at commit, for KEY SHARE on that target.
- The audit chain head is the last lock of every transaction: `audit_record` is
  the last write, and it takes the KEY SHARE locks its event will need (`key_share`
  on the actor, change and target rows) before it locks the head.
- Rows a change owns (approvals, editors) are written only under the change's lock;
  rows an execution owns (check results, its log) only under its lease (the fence
  or `lease_renew`'s update of the execution row), or, once the change is applied and
  no lease is left, under the change's lock (the watch window's rounds).

Who takes what, in that order:
- change services (`changes.services`, `approvals.policy`): `lock_change` (change,
  then its target), the change's approvals, a new execution, the audit head.
- the worker's moves (`pipeline.execution.fenced`): the change and its target, then
  the execution (fencing token), then the audit head; a claim: target, execution;
  the check-round writer: its execution (lease renewal), its check results, the
  audit head (no change or target lock: only the KEY SHARE before the head).
- the watch window's rounds (`pipeline.watch`): the change and its target
  (`lock_change`), then the check results of its latest execution (written outside
  any lease: the change lock and the round's claim on `watch_next_at` fence them),
  then the audit head; a revert it starts follows the change services' order.
- target policy, rename and the out-of-band detector (`drift.sweep`): the target,
  its baseline header, then its baseline entries (written only under the target's lock),
  the audit head.
- grant requests (`changes.permissions`): the request, the guardian rows, the head.

PostgreSQL can still end a transaction with a deadlock (40P01, e.g. against a
username change) or a serialization failure (40001). Both roll the whole
transaction back and nothing of it happened, so running it again is the right
answer: `retry_on_contention` does, a bounded number of times, for service entry
points that own their transaction; after the last attempt it raises `Contention`
(503 with Retry-After), never a 500.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import OperationalError, connection, models, transaction

from changes.errors import Contention
from changes.models import ChangeRequest, Execution, Target

logger = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

RETRY_ATTEMPTS = 3
# PostgreSQL's serialization_failure and deadlock_detected.
CONTENTION_SQLSTATES = frozenset({"40001", "40P01"})


def lock_change(change_id: int) -> ChangeRequest:
    """The change row, then its target row (one statement: the join locks both)."""
    return (ChangeRequest.objects.select_for_update(no_key=True, of=("self", "target")).select_related("target")
            .get(pk=change_id))


def lock_target(target_id: int) -> Target:
    return Target.objects.select_for_update(no_key=True).get(pk=target_id)


def lock_execution(execution_id: int) -> Execution:
    return Execution.objects.select_for_update(no_key=True).get(pk=execution_id)


def key_share(*rows: models.Model | None) -> None:
    """Take now the KEY SHARE locks PostgreSQL would take at commit for rows that a
    new row references, so they are not waited for after the audit head. One
    statement; rows already locked by this transaction are not waited for."""
    present = [row for row in rows if row is not None and row.pk is not None]
    if connection.vendor != "postgresql" or not present:
        return
    quote = connection.ops.quote_name
    tables, where, params = [], [], []
    for i, row in enumerate(present):
        meta = row._meta
        tables.append(f"{quote(meta.db_table)} AS r{i}")
        where.append(f"r{i}.{quote(meta.pk.column)} = %s")
        params.append(row.pk)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {', '.join(tables)} WHERE {' AND '.join(where)} FOR KEY SHARE", params)


def is_contention(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the database rolled the transaction back."""
    cause = exc.__cause__
    return isinstance(exc, OperationalError) and getattr(cause, "sqlstate", None) in CONTENTION_SQLSTATES


def retry_on_contention(func: Callable[P, R]) -> Callable[P, R]:
    """Run `func`, which owns its transaction, again when the database aborted it
    for a deadlock or a serialization failure: up to RETRY_ATTEMPTS runs in all,
    then `Contention`. Any other error is raised at once. Called inside an outer
    transaction it runs once and lets the error through: the whole outer
    transaction is lost, and only its owner can run it again."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if transaction.get_connection().in_atomic_block:
            return func(*args, **kwargs)
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                return func(*args, **kwargs)
            except OperationalError as exc:
                if not is_contention(exc):
                    raise
                logger.warning("%s: %s (attempt %d of %d)", func.__qualname__, exc.__cause__.sqlstate,  # type: ignore[union-attr]
                               attempt, RETRY_ATTEMPTS)
                if attempt == RETRY_ATTEMPTS:
                    raise Contention("the database is busy with concurrent changes; try again") from exc
                # Jitter, so the two victims of one deadlock do not collide again in step.
                time.sleep(random.uniform(0.01, 0.05) * attempt)  # noqa: S311 - not security
        raise AssertionError("unreachable")  # pragma: no cover

    return wrapper
