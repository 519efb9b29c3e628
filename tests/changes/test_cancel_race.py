"""A change cancelled while the worker re-reads the zone ends cancelled; the worker does not crash (found by the soak)."""

import pytest

from approvals.policy import change_approve
from changes.models import ChangeRequest
from changes.services import change_cancel, change_create, change_submit, target_update_policy
from dns_adapters.base import RRValue
from pipeline import run as ex

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_a_change_cancelled_while_the_worker_replans_ends_cancelled(dns_target, author, reviewer, staff, monkeypatch):
    target = target_update_policy(actor=staff, target=dns_target, bake_seconds=0)
    items = [{"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": ["192.0.2.77"]}]
    change = change_submit(actor=author, change=change_create(actor=author, target=target, title="t", reason="r",
                                                              items=items))
    change = change_approve(actor=reviewer, change=change, fingerprint=change.fingerprint)
    real = ex.adapter_for

    def adapter_for(t):
        adapter = real(t)

        def racing_read(keys):
            # The author cancels (API) while the worker re-reads the zone, which drifted.
            change_cancel(actor=author, change=change, reason="no longer needed")
            return {k: RRValue(300, ("198.51.100.1",)) for k in keys}
        adapter.read = racing_read
        return adapter

    monkeypatch.setattr(ex, "adapter_for", adapter_for)
    ex.execution_run(execution_id=change.execution.pk, worker="w1")  # raises InvalidTransition today
    assert ChangeRequest.objects.get(pk=change.pk).state == "cancelled"
    execution = change.execution
    assert (execution.state, execution.outcome) == ("done", "cancelled")


def test_a_change_cancelled_while_the_worker_rereads_an_unchanged_zone_is_not_applied(
        dns_target, author, reviewer, staff, monkeypatch):
    target = target_update_policy(actor=staff, target=dns_target, bake_seconds=0)
    items = [{"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": ["192.0.2.78"]}]
    change = change_submit(actor=author, change=change_create(actor=author, target=target, title="t", reason="r",
                                                              items=items))
    change = change_approve(actor=reviewer, change=change, fingerprint=change.fingerprint)
    real = ex.adapter_for
    sent = []

    def adapter_for(t):
        adapter = real(t)
        real_read, real_apply = adapter.read, adapter.apply

        def racing_read(keys):
            live = real_read(keys)  # the zone still holds `before`: no drift
            change_cancel(actor=author, change=change, reason="no longer needed")
            return live

        def recording_apply(plan):
            sent.append(plan)
            return real_apply(plan)
        adapter.read, adapter.apply = racing_read, recording_apply
        return adapter

    monkeypatch.setattr(ex, "adapter_for", adapter_for)
    ex.execution_run(execution_id=change.execution.pk, worker="w1")
    assert ChangeRequest.objects.get(pk=change.pk).state == "cancelled"
    assert sent == []  # the cancel won: nothing was sent to the zone
    execution = ChangeRequest.objects.get(pk=change.pk).execution
    assert (execution.state, execution.outcome) == ("done", "cancelled")  # not left to a lease expiry
