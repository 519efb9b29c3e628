"""The four-eyes policy, through the policy functions directly (real named)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals.models import Approval
from approvals.policy import PlanStale, StaleFingerprint, approvals_valid, change_approve, change_reject
from changes.errors import Conflict, InvalidTransition, NotPermitted, TargetUnavailable, ValidationFailed
from changes.models import AuditEvent, ChangeRequest
from changes.services import change_create, change_plan, change_update, target_update_policy
from tests.conftest import grant
from tests.factories import WWW
from tests.factories import submitted as pending

pytestmark = [pytest.mark.django_db, pytest.mark.named]
State = ChangeRequest.State
MX = [{"op": "upsert", "name": "@", "type": "MX", "ttl": 300, "records": ["20 mail"]}]


def approve(user, change, fingerprint=None):
    return change_approve(actor=user, change=change, fingerprint=fingerprint or change.fingerprint, comment="ok")


def test_one_reviewer_approves_and_the_change_becomes_approved(author, reviewer, dns_target):
    change = approve(reviewer, pending(author, dns_target))
    assert change.state == State.APPROVED
    actions = list(AuditEvent.objects.filter(change=change).values_list("action", flat=True))
    assert actions[-2:] == ["approval_given", "change_approved"]


@pytest.mark.parametrize("who", ["author", "superuser_author", "co_editor", "outsider"])
def test_author_set_and_users_without_permission_never_approve(who, author, make_user, outsider, dns_target):
    actor = {"author": author, "outsider": outsider}.get(who)
    if who == "superuser_author":
        actor = make_user("root", is_superuser=True, is_staff=True)
        grant(actor, "engineer", dns_target)
    change = pending(actor if who in ("author", "superuser_author") else author, dns_target)
    if who == "co_editor":
        actor = make_user("erin")
        grant(actor, "engineer", dns_target)
        grant(actor, "reviewer", dns_target)
        change = change_update(actor=actor, change=change, title="edited")
    with pytest.raises(NotPermitted):
        approve(actor, change)
    with pytest.raises(NotPermitted):
        change_reject(actor=actor, change=change, comment="no")
    assert ChangeRequest.objects.get(pk=change.pk).state == State.PENDING_APPROVAL
    assert not Approval.objects.exists()


def test_the_database_refuses_an_approval_by_the_author(author, dns_target):
    change = pending(author, dns_target)
    now = timezone.now()
    with pytest.raises(IntegrityError), transaction.atomic():
        Approval.objects.create(change=change, approver=author, author=author, fingerprint=change.fingerprint,
                                created_at=now, expires_at=now + timedelta(hours=1))


def test_stale_fingerprint_is_refused_with_the_current_one(author, reviewer, dns_target):
    change = pending(author, dns_target)
    with pytest.raises(StaleFingerprint) as info:
        approve(reviewer, change, fingerprint="0" * 64)
    assert info.value.current == change.fingerprint and info.value.status == 409


def test_edit_after_approval_kills_it(author, reviewer, second_reviewer, dns_target):
    target_update_policy(actor=_staff(dns_target), target=dns_target, required_approvals=2)
    change = approve(reviewer, pending(author, dns_target))
    assert change.state == State.PENDING_APPROVAL
    edited = change_update(actor=author, change=change, items=[{"op": "delete", "name": "api", "type": "A"}])
    assert approvals_valid(edited).count() == 0
    with pytest.raises(StaleFingerprint):
        approve(second_reviewer, edited, fingerprint=change.fingerprint)
    approve(second_reviewer, edited)
    assert approve(reviewer, edited).state == State.APPROVED


def _staff(target):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username="operator")


def test_replan_with_a_different_result_kills_approvals(author, reviewer, dns_target, named_server):
    import dns.query
    import dns.tsigkeyring
    import dns.update

    target_update_policy(actor=_staff(dns_target), target=dns_target, required_approvals=2)
    change = approve(reviewer, pending(author, dns_target))
    update = dns.update.UpdateMessage(dns_target.name, keyring=dns.tsigkeyring.from_file(named_server.key_file))
    update.replace("www", 300, "A", "198.51.100.9")
    dns.query.tcp(update, "127.0.0.1", port=named_server.port, timeout=3)
    replanned = change_plan(actor=author, change=change)
    assert approvals_valid(replanned).count() == 0


def test_expired_approvals_do_not_count(author, reviewer, second_reviewer, dns_target):
    target_update_policy(actor=_staff(dns_target), target=dns_target, required_approvals=2)
    change = approve(reviewer, pending(author, dns_target))
    Approval.objects.filter(change=change).update(expires_at=timezone.now() - timedelta(seconds=1))
    change = approve(second_reviewer, change)
    assert change.state == State.PENDING_APPROVAL  # one valid approval of two
    change = approve(reviewer, change)  # renewing the expired one
    assert change.state == State.APPROVED


def test_n_approvals_must_come_from_n_distinct_people(author, reviewer, second_reviewer, dns_target):
    target_update_policy(actor=_staff(dns_target), target=dns_target, required_approvals=2)
    change = approve(reviewer, pending(author, dns_target))
    with pytest.raises(Conflict):
        approve(reviewer, change)
    assert approve(second_reviewer, change).state == State.APPROVED


def test_a_risky_plan_needs_one_more_approver(author, reviewer, second_reviewer, dns_target):
    change = pending(author, dns_target, items=MX)
    assert "mail" in change.risk_flags
    change = approve(reviewer, change)
    assert change.state == State.PENDING_APPROVAL
    assert approve(second_reviewer, change).state == State.APPROVED


def test_permission_on_one_zone_does_not_approve_another(author, make_user, dns_target, named_server, fresh_zone):
    from changes.services import target_register

    other = target_register(actor=_staff(dns_target), name="other-" + fresh_zone, config={
        "zone": fresh_zone, "primary": named_server.primary, "tsig_key_file": str(named_server.key_file)})
    zoe = make_user("zoe")
    grant(zoe, "reviewer", other)
    with pytest.raises(NotPermitted):
        approve(zoe, pending(author, dns_target))


def test_reject_needs_a_comment_and_ends_the_change(author, reviewer, dns_target):
    change = pending(author, dns_target)
    with pytest.raises(ValidationFailed) as info:
        change_reject(actor=reviewer, change=change, comment="  ")
    assert info.value.errors[0]["field"] == "comment"
    change = change_reject(actor=reviewer, change=change, comment="wrong address")
    assert change.state == State.REJECTED
    with pytest.raises(InvalidTransition):
        approve(reviewer, change)


def test_a_draft_cannot_be_approved(author, reviewer, dns_target):
    change = change_create(actor=author, target=dns_target, title="t", reason="r", items=WWW)
    with pytest.raises(InvalidTransition):
        approve(reviewer, change)


def outside_update(named_server, target, name="www", address="198.51.100.9"):
    """Somebody changes the zone behind the gateway's back, straight on the server."""
    import dns.query
    import dns.tsigkeyring
    import dns.update

    update = dns.update.UpdateMessage(target.name, keyring=dns.tsigkeyring.from_file(named_server.key_file))
    update.replace(name, 300, "A", address)
    dns.query.tcp(update, "127.0.0.1", port=named_server.port, timeout=3)


def test_a_plan_the_live_zone_no_longer_matches_is_not_approved(author, reviewer, dns_target, named_server):
    change = pending(author, dns_target)
    outside_update(named_server, dns_target)
    with pytest.raises(PlanStale) as info:
        approve(reviewer, change)
    assert info.value.status == 409 and info.value.code == "plan_stale"
    assert info.value.moved == [f"www.{dns_target.name}. A"]
    assert "must be re-planned" in info.value.message
    assert not Approval.objects.exists()
    assert ChangeRequest.objects.get(pk=change.pk).state == State.PENDING_APPROVAL
    # Re-planned against the live zone, the new plan is approvable.
    replanned = change_plan(actor=author, change=change)
    assert approve(reviewer, replanned).state == State.APPROVED


class Unreachable:
    def __init__(self, target) -> None:
        pass

    def read(self, keys):
        from dns_adapters.base import TransientError

        raise TransientError("timed out talking to 127.0.0.1:9")

    def close(self) -> None:
        pass


def test_a_zone_that_cannot_be_read_refuses_the_approval_rather_than_approving_blind(
        author, reviewer, dns_target, monkeypatch):
    from changes import adapters

    change = pending(author, dns_target)
    monkeypatch.setattr(adapters, "_factory_override", Unreachable)
    with pytest.raises(TargetUnavailable) as info:
        approve(reviewer, change)
    assert info.value.status == 503 and "cannot be approved now" in info.value.message
    assert not Approval.objects.exists()


def test_who_may_not_approve_is_refused_without_a_live_read(author, outsider, dns_target, monkeypatch):
    from changes import adapters

    change = pending(author, dns_target)
    monkeypatch.setattr(adapters, "_factory_override", Unreachable)  # a read would raise TargetUnavailable
    with pytest.raises(NotPermitted):
        approve(author, change)
    with pytest.raises(StaleFingerprint):
        approve(_reviewer_of(dns_target), change, fingerprint="0" * 64)


def _reviewer_of(target):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username="bob")
