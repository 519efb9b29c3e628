"""A fixture generator for the reviewer's queue: `count` stored changes on one
target, `pending` of them waiting for approval, written with bulk_create so that
a hundred thousand rows take seconds (no DNS, no per-row service call).

Every row is a change the services could have written: a real `Plan` (one step,
its fingerprint computed by `adapters.Plan`) and a state from the state machine;
the rest of the changes are spread over the terminal states, like a long-lived
installation (without their executions and events: no page measured reads them). Used by bench/queue_bench.py and
tests/changes/test_query_counts.py."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
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
                 editors: Sequence[AbstractBaseUser] = (), start: int = 0, batch: int = 2000) -> list[int]:
    """Store `count` changes on `target` written by `authors` in turn, the first
    `pending` of them pending approval; one pending change in seven has an editor
    (from `editors`, else from `authors`; never its own author). Returns the ids of
    the pending ones. `start` numbers the records, so two calls never plan the same
    owner name."""
    zone = str(target.config.get("zone", target.name))
    now = timezone.now()
    pending_rows: list[ChangeRequest] = []
    with transaction.atomic():
        for first in range(0, count, batch):
            rows = []
            for index in range(first, min(first + batch, count)):
                plan = _plan(zone, start + index)
                state = State.PENDING_APPROVAL if index < pending else SETTLED[index % len(SETTLED)]
                rows.append(ChangeRequest(
                    target=target, author=authors[index % len(authors)], title=f"seeded change {start + index}",
                    reason="fixture generator", state=state, plan=plan.to_json(), fingerprint=plan.fingerprint,
                    planned_at=now - timedelta(seconds=count - index), items=[{"op": "upsert", "name": f"host-{start + index}", "type": "A",
                                                "ttl": 300, "records": list(plan.steps[0].after.rdatas)}],
                    submitted_at=now,
                ))
            created_rows = ChangeRequest.objects.bulk_create(rows)
            pending_rows += [row for i, row in enumerate(created_rows, start=first) if i < pending]
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
