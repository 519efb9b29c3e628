"""A fixture generator for the reviewer's queue: `count` stored changes on one
target, `pending` of them waiting for approval, written with one prepared INSERT
run over batches of rows (executemany), so that a hundred thousand rows take
seconds (no DNS, no per-row service call, no model instance per row).

Every row is a change the services could have written: a real `Plan` (one step,
its fingerprint computed by `adapters.Plan`) and a state from the state machine;
the rest of the changes are spread over the terminal states, like a long-lived
installation (without their executions and events: no page measured reads them). Used by bench/queue_bench.py and
tests/changes/test_query_counts.py."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone

from adapters import Plan, RRKey, RRValue
from adapters.plan import Step
from changes.models import ChangeRequest, Target

State = ChangeRequest.State
# Where the changes that are not pending end: most applied, some rejected or withdrawn.
SETTLED = (State.APPLIED, State.APPLIED, State.APPLIED, State.REJECTED, State.CANCELLED, State.ROLLED_BACK)


def _plan(zone: str, index: int) -> Plan:
    owner = f"host-{index}.{zone.rstrip('.')}."
    address = f"198.51.{index // 250 % 250}.{index % 250 + 1}"
    return Plan(zone=zone, steps=(Step(key=RRKey(owner, "A"), before=None, after=RRValue(300, (address,))),))


def seed_changes(*, target: Target, authors: Sequence[AbstractBaseUser], count: int, pending: int,
                 editors: Sequence[AbstractBaseUser] = (), start: int = 0, batch: int = 10_000) -> list[int]:
    """Store `count` changes on `target` written by `authors` in turn, the first
    `pending` of them pending approval; one pending change in seven has an editor
    (from `editors`, else from `authors`; never its own author). Returns the ids of
    the pending ones. `start` numbers the records, so two calls never plan the same
    owner name.

    Every column is written as save() would write it: the values every row shares
    are prepared once by their fields (get_db_prep_save), the ones that differ per row
    by the same database operations the fields call (JSON, datetimes; text and ids as
    they are). bulk_create went through the query compiler for every field of every
    row: half a minute for 100,000 changes."""
    db = connections[DEFAULT_DB_ALIAS]  # not the proxy: one attribute lookup fewer per value
    zone = str(target.config.get("zone", target.name))
    now = timezone.now()
    fields = [field for field in ChangeRequest._meta.concrete_fields if not field.primary_key]
    shared = ChangeRequest(target=target, author=authors[0], reason="fixture generator", submitted_at=now)
    template = [field.get_db_prep_save(field.pre_save(shared, add=True), db) for field in fields]
    column = {field.name: n for n, field in enumerate(fields)}
    author, title, state, plan_at, fingerprint, planned_at, items = (
        column[name] for name in ("author", "title", "state", "plan", "fingerprint", "planned_at", "items"))
    json_value, datetime_value = db.ops.adapt_json_value, db.ops.adapt_datetimefield_value
    quote = db.ops.quote_name
    table = quote(ChangeRequest._meta.db_table)
    insert = (f"INSERT INTO {table} ({', '.join(quote(field.column) for field in fields)}) "
              f"VALUES ({', '.join(['%s'] * len(fields))})")
    author_ids = [user.pk for user in authors]
    with transaction.atomic(using=db.alias):
        with db.cursor() as cursor:
            cursor.execute(f"SELECT MAX({quote('id')}) FROM {table}")
            before = cursor.fetchone()[0] or 0
            for first in range(0, count, batch):
                rows = []
                for index in range(first, min(first + batch, count)):
                    plan = _plan(zone, start + index)
                    row = list(template)
                    row[author] = author_ids[index % len(author_ids)]
                    row[title] = f"seeded change {start + index}"
                    row[state] = State.PENDING_APPROVAL.value if index < pending else SETTLED[index % len(SETTLED)].value
                    row[plan_at] = json_value(plan.to_json(), None)
                    row[fingerprint] = plan.fingerprint
                    row[planned_at] = datetime_value(now - timedelta(seconds=count - index))
                    row[items] = json_value([{"op": "upsert", "name": f"host-{start + index}", "type": "A",
                                              "ttl": 300, "records": list(plan.steps[0].after.rdatas)}], None)
                    rows.append(row)
                cursor.executemany(insert, rows)
        # Ours are the rows after `before` (the seed is the only writer), pending ones first.
        pending_rows = list(ChangeRequest.objects.filter(target=target, pk__gt=before, state=State.PENDING_APPROVAL)
                            .order_by("pk").only("pk", "author")[:pending])
        _seed_editors(pending_rows, authors=authors, editors=editors)
    return [row.pk for row in pending_rows]


def _seed_editors(pending: list[ChangeRequest], *, authors: Sequence[AbstractBaseUser],
                  editors: Sequence[AbstractBaseUser]) -> None:
    """An editor is somebody else than the author (change_update never records the author)."""
    through = ChangeRequest.editors.through
    pool = list(editors) or list(authors)
    links = [through(changerequest_id=row.pk, user_id=pool[(n + 1) % len(pool)].pk)
             for n, row in enumerate(pending) if n % 7 == 3 and pool[(n + 1) % len(pool)].pk != row.author_id]
    through.objects.bulk_create(links, batch_size=2000)
