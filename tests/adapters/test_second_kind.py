"""A second kind through the generic code, unchanged: the in-memory kind is
registered for the test only, and the same services, policy and apply pipeline
(in-process) that run DNS changes register its target, plan, approve, apply,
verify, detect drift and propose a rollback."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters import RRKey, RRValue
from approvals.policy import change_approve
from changes.errors import ValidationFailed
from changes.kinds import REGISTRY
from changes.models import AuditEvent, ChangeRequest, CheckResult
from changes.selectors import change_diff
from changes.services import change_create, change_propose_rollback, change_submit, target_register
from pipeline.run import execution_run
from tests.conftest import grant

from . import memory_kind

pytestmark = pytest.mark.django_db
State = ChangeRequest.State
ITEMS = [{"op": "upsert", "name": "web", "type": "A", "ttl": 0, "records": ["10"]}]


@pytest.fixture
def memory_target(operator, author, reviewer, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[object]:
    store = f"mem-{request.node.name}"
    token = base64.b64encode(store.encode()).decode()
    (tmp_path / "token").write_text(token)
    memory_kind.store_create(store, token, {RRKey("old", "A"): RRValue(0, ("1",))})
    with REGISTRY.registered(memory_kind.MEMORY):
        target = target_register(actor=operator, name=store, kind="memory", bake_seconds=0,
                                 config={"store": store, "token_file": str(tmp_path / "token")})
        grant(author, "engineer", target)
        grant(reviewer, "reviewer", target)
        yield target


def approved(author, reviewer, target, items=ITEMS) -> ChangeRequest:
    change = change_create(actor=author, target=target, title="t", reason="r", items=items)
    change = change_submit(actor=author, change=change)
    return change_approve(actor=reviewer, change=change, fingerprint=change.fingerprint)


def run(change: ChangeRequest) -> str:
    return execution_run(execution_id=change.execution.pk, worker="test-worker")


def test_a_second_kind_is_registered_planned_approved_and_applied(memory_target, author, reviewer):
    assert memory_target.item_count == 1  # the whole-target read at registration
    change = approved(author, reviewer, memory_target)
    assert change.state == State.APPROVED
    assert "+web A = 10" in change_diff(change)
    assert run(change) == State.APPLIED
    assert memory_kind.STORES[memory_target.name][1][RRKey("web", "A")] == RRValue(0, ("10",))
    assert AuditEvent.objects.filter(change=change, action="change_applied").count() == 1
    assert CheckResult.objects.filter(execution=change.execution, kind="verify", ok=True).exists()

    rollback = change_propose_rollback(actor=author, change=ChangeRequest.objects.get(pk=change.pk), reason="undo")
    assert rollback.items == [{"op": "delete", "name": "web", "type": "A"}]
    assert [(s["name"], s["after"]) for s in rollback.plan["steps"]] == [("web", None)]


def test_a_second_kind_refuses_drift_through_the_pipeline(memory_target, author, reviewer):
    change = approved(author, reviewer, memory_target)
    memory_kind.store_set(memory_target.name, RRKey("web", "A"), RRValue(0, ("99",)))
    assert run(change) == State.DRIFTED
    assert memory_kind.STORES[memory_target.name][1][RRKey("web", "A")] == RRValue(0, ("99",))


def test_a_second_kind_rejects_its_own_bad_items_by_field(memory_target, author):
    with pytest.raises(ValidationFailed) as caught:
        change_create(actor=author, target=memory_target, title="t", reason="r",
                      items=[{"op": "upsert", "name": "web", "type": "A"}])
    assert [e["field"] for e in caught.value.errors] == ["items[0].records"]


def test_an_unregistered_kind_is_a_field_error(operator):
    with pytest.raises(ValidationFailed) as caught:
        target_register(actor=operator, name="x", kind="memory", config={})
    assert [e["field"] for e in caught.value.errors] == ["kind"]
