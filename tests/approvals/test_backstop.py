"""The database's own four-eyes backstop (approvals migration 0002): a live approval
row whose approver is in the change's author set is refused, whatever the row's
copied `author` column says. Raw ORM writes, as a bug or a shell would make them
(real named for the plan; run on SQLite and on PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals.models import Approval
from approvals.policy import approvals_valid, change_approve
from changes.models import ChangeRequest
from changes.services import change_update
from tests.conftest import grant
from tests.factories import submitted as pending

pytestmark = [pytest.mark.django_db, pytest.mark.named]


def raw_approval(change: ChangeRequest, *, approver, author, **fields) -> Approval:
    now = timezone.now()
    with transaction.atomic():
        return Approval.objects.create(change=change, approver=approver, author=author,
                                       fingerprint=change.fingerprint, created_at=now,
                                       expires_at=now + timedelta(hours=1), **fields)


@pytest.fixture
def edited(author, make_user, dns_target):
    """A pending change that erin (engineer and reviewer) edited: she is in its author set."""
    erin = make_user("erin")
    grant(erin, "engineer", dns_target)
    grant(erin, "reviewer", dns_target)
    return change_update(actor=erin, change=pending(author, dns_target), title="edited"), erin


def test_the_database_refuses_an_approval_by_an_editor(edited):
    change, erin = edited
    # The copied author column is honest (alice) and differs from erin: the old CHECK passed this row.
    with pytest.raises(IntegrityError):
        raw_approval(change, approver=erin, author=change.author)
    assert not Approval.objects.exists()


def test_the_database_refuses_an_approval_with_a_forged_author_column(author, reviewer, dns_target):
    change = pending(author, dns_target)
    with pytest.raises(IntegrityError):
        raw_approval(change, approver=author, author=reviewer)
    assert not Approval.objects.exists()


def test_the_database_refuses_turning_a_live_approval_into_the_authors(author, reviewer, dns_target):
    change = pending(author, dns_target)
    approval = raw_approval(change, approver=reviewer, author=author)
    with pytest.raises(IntegrityError), transaction.atomic():
        Approval.objects.filter(pk=approval.pk).update(approver=author, author=reviewer)
    assert Approval.objects.get(pk=approval.pk).approver == reviewer


def test_an_approval_by_someone_outside_the_author_set_is_accepted(edited, reviewer):
    change, _ = edited
    assert raw_approval(change, approver=reviewer, author=change.author).pk


def test_an_approvers_own_edit_still_invalidates_their_approval(author, reviewer, second_reviewer, staff,
                                                                 dns_target):
    """Invalidating is always allowed: the approver who then edits joins the author
    set in the same transaction that kills their approval."""
    from changes.services import target_update_policy

    target_update_policy(actor=staff, target=dns_target, required_approvals=2)
    grant(reviewer, "engineer", dns_target)
    change = pending(author, dns_target)
    change = change_approve(actor=reviewer, change=change, fingerprint=change.fingerprint)
    edited = change_update(actor=reviewer, change=change, title="bob edits")
    assert approvals_valid(edited).count() == 0
    approval = Approval.objects.get(change=change)
    assert approval.invalidated_at is not None and approval.approver == reviewer


# Real commits: SQLite's schema editor refuses to run inside the test's transaction.
@pytest.mark.django_db(transaction=True)
def test_the_backstop_survives_a_migration_that_rebuilds_the_change_table(edited):
    """SQLite rebuilds a table to alter a column; a trigger naming that table would
    make the rebuild fail ("no such table"), so `migrate` lifts the triggers before and
    puts them back after (approvals.backstop). Done here the way `migrate` does it."""
    from django.core.management.sql import emit_post_migrate_signal, emit_pre_migrate_signal
    from django.db import connection, models

    change, erin = edited
    old = ChangeRequest._meta.get_field("title")
    wider = models.CharField(max_length=250)
    wider.set_attributes_from_name("title")
    wider.model = ChangeRequest
    emit_pre_migrate_signal(0, False, connection.alias)
    try:
        with connection.schema_editor() as editor:
            editor.alter_field(ChangeRequest, old, wider)
        with connection.schema_editor() as editor:
            editor.alter_field(ChangeRequest, wider, old)
    finally:
        emit_post_migrate_signal(0, False, connection.alias)
    with pytest.raises(IntegrityError):
        raw_approval(change, approver=erin, author=change.author)
