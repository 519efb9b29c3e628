"""A target that answers yes but drops part of the update (issue 12): the worker ends
the change in a state that says what happened, never `applied` and never an
`apply_failed` that claims the target is untouched when it is not.

The restored case runs against a real Knot DNS, which answers NOERROR to a TTL-only
change of the apex NS RRset and changes nothing (tests/dns_servers.py). The
unrestorable case cannot be produced on purpose by a real server; it uses a fake
adapter (changes.adapters' unit-test override), as unit tests may."""

from __future__ import annotations

from typing import Any

import pytest

from adapters import ApplyResult, Plan, RRKey, RRValue
from adapters.errors import PartialApplyError
from approvals.policy import change_approve
from changes.models import AuditEvent, ChangeRequest
from changes.services import change_create, change_submit, target_register
from tests.conftest import grant
from tests.dns_servers import server_for
from tests.factories import approved, run

State = ChangeRequest.State


def _approved_by_all(author, reviewers, target, items, **kwargs: Any) -> ChangeRequest:
    change = change_submit(actor=author, change=change_create(actor=author, target=target, title="t", reason="r",
                                                             items=items, **kwargs))
    for reviewer in reviewers:
        if change.state == State.PENDING_APPROVAL:
            change = change_approve(actor=reviewer, change=change, fingerprint=change.fingerprint)
    return change


@pytest.mark.named
def test_a_dropped_update_the_adapter_restored_ends_apply_failed_saying_what_was_dropped(
    request, operator, author, reviewer, second_reviewer,
):
    knot = server_for("knot", request.config)
    zone = knot.fresh_zone()
    target = target_register(actor=operator, name=zone, bake_seconds=0, bake_max_seconds=0, config={
        "zone": zone, "primary": knot.primary, "tsig_key_file": str(knot.key_file), "timeout": 3})
    grant(author, "engineer", target)
    grant(reviewer, "reviewer", target)
    grant(second_reviewer, "reviewer", target)
    items = [{"op": "upsert", "name": "@", "type": "NS", "ttl": 7200, "records": [f"ns1.{zone}."]}]
    change = _approved_by_all(author, [reviewer, second_reviewer], target, items, options={"allow_apex": True})
    assert change.state == State.APPROVED

    assert run(change) == State.APPLY_FAILED
    event = AuditEvent.objects.get(change=change, action="apply_failed")
    assert event.payload["error_kind"] == "PartialApplyError"
    assert event.payload["restored"] is True and event.payload["keys"] == [f"{zone}. NS"]
    assert event.payload["elapsed_ms"] > 0
    assert not AuditEvent.objects.filter(change=change, action="change_applied").exists()


class _DroppingAdapter:
    """Answers every apply with a partial apply it could not restore."""

    zone = "fake.test."

    def __init__(self, real: Any) -> None:
        self.real = real

    def read(self, keys: Any) -> Any:
        return self.real.read(keys)

    def apply(self, plan: Plan) -> ApplyResult:
        key = plan.steps[0].key
        raise PartialApplyError(f"{key} did not land; restoring it failed", keys=[key],
                                live={key: RRValue(60, ("198.51.100.1",))}, restored=False, elapsed_ms=12.5)

    def close(self) -> None:
        self.real.close()


@pytest.mark.named
def test_a_dropped_update_the_adapter_could_not_restore_ends_rollback_failed(
    fast_target, author, reviewer, monkeypatch,
):
    from changes import adapters as adapters_module

    change = approved(author, reviewer, fast_target)
    monkeypatch.setattr(adapters_module, "_factory_override", lambda target: _DroppingAdapter(_real(target)))

    assert run(change) == State.ROLLBACK_FAILED
    event = AuditEvent.objects.get(change=change, action="rollback_failed")
    assert event.payload["restored"] is False
    assert event.payload["live"] == {str(RRKey(f"www.{fast_target.name}.", "A")): RRValue(
        60, ("198.51.100.1",)).to_json()}


def _real(target: Any) -> Any:
    from django.conf import settings

    from changes.kinds import kind_of

    return kind_of(target).adapter(target.config, key_dir=settings.CHANGEGATE_KEY_DIR)
