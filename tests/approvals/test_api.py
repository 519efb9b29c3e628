"""Approve and reject through the REST API (real named)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from approvals.models import Approval
from changes.models import ChangeRequest
from tests.conftest import grant
from tests.factories import submitted

pytestmark = [pytest.mark.django_db, pytest.mark.named]


@pytest.fixture
def pending(author, dns_target):
    return submitted(author, dns_target)


def client(user):
    c = APIClient()
    c.force_authenticate(user)
    return c


def approve(user, change, **body):
    body.setdefault("fingerprint", change.fingerprint)
    return client(user).post(f"/api/v1/changes/{change.pk}/approve/", body, format="json")


def test_reviewer_approves_with_the_fingerprint_and_sees_the_approval(reviewer, pending):
    response = approve(reviewer, pending, comment="looks right")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["state"] == "approved"
    (approval,) = body["approvals"]
    assert (approval["approver"], approval["fingerprint"], approval["valid"]) == ("bob", pending.fingerprint, True)
    assert body["approvals_required"] == 1


def test_author_gets_403_and_nothing_is_stored(author, pending):
    response = approve(author, pending)
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    assert not Approval.objects.exists()


def test_engineer_without_approve_permission_gets_403(make_user, dns_target, pending):
    eve = make_user("eve")
    grant(eve, "engineer", dns_target)
    assert approve(eve, pending).status_code == 403


def test_outsider_cannot_even_see_it(outsider, pending):
    assert approve(outsider, pending).status_code == 404


def test_stale_fingerprint_is_409_with_the_current_one(reviewer, pending):
    response = approve(reviewer, pending, fingerprint="f" * 64)
    assert response.status_code == 409
    assert response.json()["current_fingerprint"] == pending.fingerprint
    assert response.json()["code"] == "stale_fingerprint"


def test_missing_fingerprint_is_400_naming_it(reviewer, pending):
    response = client(reviewer).post(f"/api/v1/changes/{pending.pk}/approve/", {}, format="json")
    assert response.status_code == 400
    assert "fingerprint" in {e["field"] for e in response.json()["errors"]}


def test_approving_twice_or_after_the_end_is_409(reviewer, second_reviewer, pending):
    assert approve(reviewer, pending).status_code == 200
    assert approve(second_reviewer, pending).status_code == 409  # already approved: not pending


def test_reject_needs_a_comment_and_ends_the_change(reviewer, pending):
    url = f"/api/v1/changes/{pending.pk}/reject/"
    bad = client(reviewer).post(url, {"comment": ""}, format="json")
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "comment"
    ok = client(reviewer).post(url, {"comment": "wrong address"}, format="json")
    assert ok.status_code == 200 and ok.json()["state"] == "rejected"
    assert ChangeRequest.objects.get(pk=pending.pk).state == "rejected"
