"""The audit period report (issue 15): the admin page, its CSV and
`manage.py audit_report`, through the services and the in-process worker."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals.policy import change_emergency, emergency_review
from audit.report import period_report
from changes.errors import NotPermitted
from changes.models import ChangeRequest
from changes.services import change_create
from tests import factories
from tests.conftest import grant
from tests.factories import run

pytestmark = [pytest.mark.django_db, pytest.mark.named]
State = ChangeRequest.State
URL = "admin:changes_auditevent_report"


def period() -> tuple[str, str]:
    today = timezone.now().date()
    return (today - dt.timedelta(days=1)).isoformat(), (today + dt.timedelta(days=1)).isoformat()


@pytest.fixture
def story(author, reviewer, make_user, fast_target):
    """An applied change with a reference, and an emergency change reviewed after the fact;
    the grants of the fixtures and of the on-call engineer are the permission changes."""
    applied = factories.approved(author, reviewer, fast_target, reference="CHG0012345")
    assert run(applied) == State.APPLIED
    on_call = make_user("erin")
    grant(on_call, "emergency", fast_target)
    grant(on_call, "engineer", fast_target)
    forced = change_create(actor=on_call, target=fast_target, title="Mail down", reason="MX points nowhere",
                           items=factories.upsert("mail", "192.0.2.26", ttl=60))
    forced = change_emergency(actor=on_call, change=forced, reason="card payments failing since 10:02")
    assert run(forced) == State.APPLIED
    forced = emergency_review(actor=reviewer, change=ChangeRequest.objects.get(pk=forced.pk),
                              comment="checked the MX, fine")
    return applied, forced


def test_the_report_lists_the_changes_the_emergency_and_its_review_and_the_permission_changes(
        story, reviewer, auditor, fast_target):
    applied, forced = story
    since, until = period()
    report = period_report(user=auditor, since=dt.datetime.fromisoformat(since).replace(tzinfo=dt.UTC),
                           until=dt.datetime.fromisoformat(until).replace(tzinfo=dt.UTC))
    by_change = {row.change: row for row in report.changes}
    assert by_change[applied.pk].outcome == State.APPLIED and by_change[applied.pk].reference == "CHG0012345"
    assert by_change[applied.pk].approvers == reviewer.username
    (emergency,) = report.emergencies
    assert emergency.change == forced.pk and emergency.who == "erin"
    assert emergency.review.startswith(f"reviewed by {reviewer.username}") and "checked the MX" in emergency.review
    granted = [row for row in report.permissions if row.outcome == "permission_granted"]
    assert any("user=erin" in row.detail and "role=emergency" in row.detail for row in granted)
    assert all(row.target == fast_target.name for row in report.permissions)  # an auditor: the target's events only


def test_the_admin_page_is_printable_and_its_csv_has_every_section(story, auditor, reviewer, outsider, admin_client):
    applied, forced = story
    since, until = period()
    auditor.is_staff = True
    auditor.save()
    client = Client()
    client.force_login(auditor)
    # The audit log's list leads to the report.
    listing = admin_client.get(reverse("admin:changes_auditevent_changelist"))
    assert listing.status_code == 200 and reverse(URL).encode() in listing.content
    page = client.get(reverse(URL), {"since": since, "until": until})
    assert page.status_code == 200, page.content
    html = page.content.decode()
    assert "@media print" in html and "window.print()" in html and 'id="csv"' in html
    assert "card payments failing since 10:02" in html and "checked the MX, fine" in html and "CHG0012345" in html

    response = client.get(reverse(URL), {"since": since, "until": until, "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    sections = {row["section"] for row in rows}
    assert {"change", "emergency", "permission"} <= sections
    emergency = next(row for row in rows if row["section"] == "emergency")
    assert emergency["change"] == str(forced.pk) and reviewer.username in emergency["review"]

    assert client.get(reverse(URL), {"since": until, "until": since}).status_code == 400
    outsider.is_staff = True
    outsider.save()
    client.force_login(outsider)
    assert client.get(reverse(URL)).status_code == 403


def test_the_command_writes_the_csv(story, fast_target):
    applied, forced = story
    since, until = period()
    out = io.StringIO()
    call_command("audit_report", "--since", since, "--until", until, "--target", fast_target.name, stdout=out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert {(row["section"], row["change"]) for row in rows} >= {("change", str(applied.pk)),
                                                                  ("emergency", str(forced.pk))}
    with pytest.raises(CommandError, match="target"):
        call_command("audit_report", "--since", since, "--until", until, "--target", "nope", stdout=io.StringIO())


def test_nobody_without_the_export_right_gets_a_report(outsider):
    since, until = period()
    with pytest.raises(NotPermitted):
        period_report(user=outsider, since=dt.datetime.fromisoformat(since).replace(tzinfo=dt.UTC),
                      until=dt.datetime.fromisoformat(until).replace(tzinfo=dt.UTC))
