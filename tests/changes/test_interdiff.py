"""Issue 15, "what changed since I last looked": the change page numbers the plan
revisions read from the audit chain, shows what the current plan writes differently
from the previous one, and tells a reviewer who approved, rejected or commented on an
older plan that it changed since, with the interdiff from that plan (real named)."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from approvals.models import Approval
from approvals.policy import change_approve
from changes.models import AuditEvent, ChangeRequest
from changes.revisions import plan_revisions
from changes.services import change_plan, change_update, target_update_policy
from changes.services.comments import comment_add
from tests.changes.test_admin import staff_with
from tests.factories import WWW, submitted, upsert

pytestmark = [pytest.mark.django_db, pytest.mark.named]

MARKER = "Changed since your last review (you reviewed revision"


@pytest.fixture
def fresh_zone(module_zone: str) -> str:
    """These tests plan against the zone and never write to it."""
    return module_zone


@pytest.fixture
def two_needed(dns_target, staff):
    """One approval leaves the change pending, so it can still be edited after it."""
    target_update_policy(actor=staff, target=dns_target, required_approvals=2)
    return dns_target


def page(client, user, change: ChangeRequest) -> str:
    client.force_login(staff_with(user, "view_changerequest"))
    response = client.get(reverse("admin:changes_changerequest_change", args=[change.pk]))
    assert response.status_code == 200
    return response.content.decode()


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html))


def edited_after_approval(author, reviewer, target) -> tuple[ChangeRequest, str]:
    """www moves to .99 and bob approves; then alice moves it to .77 and adds api."""
    change = submitted(author, target, WWW)
    approved = change.fingerprint
    change_approve(actor=reviewer, change=change, fingerprint=approved)
    change = change_update(actor=author, change=change,
                           items=upsert("www", "192.0.2.77") + upsert("api", "192.0.2.98"))
    assert change.fingerprint != approved
    return change, approved


def test_an_edit_after_an_approval_is_marked_for_that_reviewer_with_the_interdiff(
        client, author, reviewer, second_reviewer, two_needed):
    change, approved = edited_after_approval(author, reviewer, two_needed)
    assert Approval.objects.get(change=change, approver=reviewer).invalidated_at is not None  # the approval died
    zone = two_needed.name

    html = page(client, reviewer, change)
    words = text(html)
    assert f"{MARKER} 1, fingerprint {approved[:12]}…)" in words
    assert "You approved it" in words and "it is revision 2 now" in words
    marker = html[html.index('class="module cg-since-review"'):]
    marker = marker[:marker.index("</table>")]
    # The key whose value changed: what revision 1 would have written, what 2 writes.
    assert f"www.{zone}. A" in marker and "value changed" in marker
    assert f'<tr class="cg-del"><td class="cg-sign">-</td><td class="cg-line"><code>www.{zone}. 300 IN A 192.0.2.99' \
        in marker
    assert f'<tr class="cg-add"><td class="cg-sign">+</td><td class="cg-line"><code>www.{zone}. 300 IN A 192.0.2.77' \
        in marker
    # The key revision 2 added.
    assert f"api.{zone}. A" in marker and "added to the plan" in marker
    assert f"api.{zone}. 300 IN A 192.0.2.98" in marker
    assert "Plan revision 2 of 2" in words

    other = text(page(client, second_reviewer, change))
    assert MARKER not in other and "Changed since your last review" not in other
    assert "Plan revision 2 of 2" in other and "value changed" in other and "added to the plan" in other


def test_a_change_never_edited_shows_no_interdiff_and_no_marker(client, author, reviewer, two_needed):
    change = submitted(author, two_needed, WWW)
    # A re-plan that reads the same live data stores the same plan: not a new revision.
    change = change_plan(actor=author, change=change)
    assert len(plan_revisions(AuditEvent.objects.filter(change=change).order_by("seq"))) == 1
    comment_add(actor=reviewer, change=change, body="looks fine")
    change_approve(actor=reviewer, change=change, fingerprint=change.fingerprint)
    words = text(page(client, reviewer, change))
    assert "Plan revision" not in words and "Changed since your last review" not in words
    assert "cg-interdiff" not in words


def test_reviewing_the_new_revision_clears_the_marker_and_the_interdiff_spans_from_the_reviewed_one(
        client, author, reviewer, second_reviewer, two_needed):
    change, approved = edited_after_approval(author, reviewer, two_needed)
    third = change_update(actor=author, change=change, items=upsert("www", "192.0.2.66") + upsert("api", "192.0.2.98"))
    assert [r.fingerprint for r in plan_revisions(AuditEvent.objects.filter(change=change).order_by("seq"))] == [
        approved, change.fingerprint, third.fingerprint]
    html = page(client, reviewer, third)
    marker = html[html.index('class="module cg-since-review"'):]
    marker = marker[:marker.index("</table>")]
    # From revision 1 (what bob approved) to 3, not from 2: .99 goes, .66 comes, api is new.
    assert "- revision 1" in marker and "+ revision 3" in marker
    assert "192.0.2.99" in marker and "192.0.2.66" in marker and "192.0.2.77" not in marker
    assert "added to the plan" in marker
    assert "Plan revision 3 of 3" in text(html)

    comment_add(actor=reviewer, change=third, body="seen the new address")
    words = text(page(client, reviewer, third))
    assert "Changed since your last review" not in words and "Plan revision 3 of 3" in words


def test_the_change_page_costs_the_same_statements_with_one_and_with_three_revisions(
        client, author, reviewer, two_needed):
    def statements(change) -> int:
        with CaptureQueriesContext(connection) as captured:
            page(client, reviewer, change)
        return len(captured.captured_queries)

    one = submitted(author, two_needed, WWW)
    change_approve(actor=reviewer, change=one, fingerprint=one.fingerprint)
    many, _ = edited_after_approval(author, reviewer, two_needed)
    many = change_update(actor=author, change=many, items=upsert("www", "192.0.2.66"))
    page(client, reviewer, one)  # warm-up: content types and permissions, once per process
    small, large = statements(one), statements(many)
    assert small == large, (small, large)
