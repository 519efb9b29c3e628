"""The admin pages a person uses, in a real browser (issue 15): the proposal form with
an error, the bulk-approve confirmation page, the auditor's evidence page and a
rolled-back change. Each test saves screenshots under the artifacts folder
(tests/browser/conftest.py) and asserts what a person would check, plus the database.

Elements are found by field names, button labels, link text and headings: other
engineers rework these pages, and a test should break only when what a person sees
or can do breaks."""

from __future__ import annotations

import re

import dns.query
import dns.tsigkeyring
import dns.update
import pytest
from django.urls import reverse

from approvals.models import Approval
from changes.models import AuditEvent, ChangeRequest, CheckResult
from dns_adapters.local_named import free_port
from tests.changes.test_admin import ENGINEER_PERMS, staff_with
from tests.conftest import grant
from tests.factories import approved, run, submitted, upsert

pytestmark = [pytest.mark.browser, pytest.mark.named, pytest.mark.django_db(transaction=True)]
State = ChangeRequest.State

CHANGELIST = "admin:changes_changerequest_changelist"


def change_path(change: ChangeRequest) -> str:
    return reverse("admin:changes_changerequest_change", args=[change.pk])


def test_engineer_signs_in_and_a_bad_patch_line_is_shown_next_to_the_patch_and_stores_nothing(
        browser, author, dns_target):
    staff_with(author, *ENGINEER_PERMS)
    # Through the real login form: django-axes sits in front of the password check.
    browser.login(author.username)
    assert "/login/" not in browser.path and not browser.fields("password"), browser.text()[:500]

    browser.click_link("Change requests")
    browser.click_link("Add change request")
    assert browser.path == reverse("admin:changes_changerequest_add")
    browser.choose("target", dns_target.name)
    browser.field("title").send_keys("Move www")
    browser.field("reason").send_keys("new load balancer")
    patch_text = "# comment\n+ ok 60 A 192.0.2.1\n+ bad 60 A 999.0.0.1\n"
    browser.field("patch").send_keys(patch_text)
    browser.press(browser.submit_of(browser.field("patch")))
    browser.screenshot("error")

    # Still the form, with the error beside the patch box, naming the line.
    assert browser.path == reverse("admin:changes_changerequest_add")
    assert "Please correct the errors below." in browser.text()
    patch = browser.field("patch")
    error = browser.driver.find_element("xpath", "//li[starts-with(normalize-space(.), 'line 3:')]")
    assert "999.0.0.1" in error.text or "records[0]" in error.text, error.text
    # "Next to": the smallest block holding both the message and the patch box holds no other field.
    block = patch.find_element("xpath", "./ancestor::*[.//li[starts-with(normalize-space(.), 'line 3:')]][1]")
    controls = {c.get_attribute("name") for c in block.find_elements("xpath", ".//input | .//select | .//textarea")
                if c.get_attribute("type") != "hidden"}
    assert controls == {"patch"}
    assert patch.get_attribute("aria-invalid") == "true"
    # What was typed is still there to fix, and nothing was stored.
    assert patch.get_attribute("value") == patch_text
    assert browser.field("title").get_attribute("value") == "Move www"
    assert not ChangeRequest.objects.exists()
    assert not AuditEvent.objects.filter(action="change_created").exists()


def test_reviewer_approves_from_the_change_page_the_plan_it_shows(browser, author, reviewer, dns_target):
    change = submitted(author, dns_target, title="Move www")
    browser.force_login(staff_with(reviewer, "view_changerequest"))
    browser.open(reverse(CHANGELIST))
    browser.click_link("Move www")
    browser.screenshot("review")

    # What the reviewer reads before pressing: the diff and the fingerprint being approved,
    # the Approve button below the diff, and why one approval is needed.
    text = browser.text()
    assert change.fingerprint in text and "192.0.2.99" in text
    assert "1 needed: 1 for the target." in text
    assert not browser.buttons_labelled("Submit for approval") and not browser.buttons_labelled("Cancel change")
    approve = browser.button("Approve")
    diff = browser.heading("Plan: live zone")
    assert diff.location["y"] < approve.location["y"]  # below the diff
    form = approve.find_element("xpath", "./ancestor::form[1]")
    assert form.find_element("name", "fingerprint").get_attribute("value") == change.fingerprint
    form.find_element("name", "comment").send_keys("checked the new LB address")

    # The confirmation: a required box repeating the number of steps and the fingerprint.
    box = form.find_element("name", "reviewed")
    label = box.find_element("xpath", "./ancestor::label[1]").text
    assert f"I reviewed 1 step, fingerprint {change.fingerprint[:12]}" in label, label
    approve.click()  # the browser refuses to send the form without the box ticked
    assert browser.path == change_path(change) and not Approval.objects.exists()
    assert box.get_attribute("validationMessage")
    box.click()
    browser.press(approve)
    browser.screenshot("approved")

    assert browser.path == change_path(change)
    assert f"Change #{change.pk} approved." in browser.messages()
    assert browser.fact("State").startswith(State.APPROVED.label)
    assert not browser.buttons_labelled("Approve")  # nothing left to approve
    assert "checked the new LB address" in browser.table_after("Approvals").text
    approval = Approval.objects.get(change=change)
    assert (approval.approver, approval.fingerprint, approval.comment) == (
        reviewer, change.fingerprint, "checked the new LB address")
    assert ChangeRequest.objects.get(pk=change.pk).state == State.APPROVED


def test_reviewer_bulk_approves_two_changes_on_the_confirmation_page_and_their_own_change_is_refused(
        browser, author, reviewer, dns_target):
    grant(reviewer, "engineer", dns_target)  # so bob can author a change of his own
    first = submitted(author, dns_target, upsert("www", "192.0.2.99"), title="Move www")
    second = submitted(author, dns_target, upsert("api", "192.0.2.98"), title="Move api")
    own = submitted(reviewer, dns_target, upsert("mail", "192.0.2.97"), title="Move mail")
    chosen = (first, second, own)
    browser.force_login(staff_with(reviewer, "view_changerequest"))

    browser.open(reverse(CHANGELIST))
    for change in chosen:
        browser.driver.find_element(
            "xpath", f"//input[@name='_selected_action' and @value='{change.pk}']").click()
    browser.choose("action", value="approve_selected")
    browser.screenshot("selected")
    browser.press(browser.submit_of(browser.field("action")))
    browser.screenshot("confirmation")

    # The confirmation page: every selected change with the fingerprint being approved.
    for change in chosen:
        browser.heading(f"#{change.pk} {change.title}")
        assert browser.field(f"fingerprint_{change.pk}").get_attribute("value") == change.fingerprint
        assert change.fingerprint in browser.text()
    assert "You cannot approve this change now" in browser.text()
    assert {c.state for c in ChangeRequest.objects.all()} == {State.PENDING_APPROVAL}  # showing approves nothing

    browser.press(browser.submit_of(browser.field(f"fingerprint_{first.pk}")))
    browser.screenshot("approved")
    assert browser.path.startswith(reverse(CHANGELIST))
    messages = browser.messages()
    assert f"Change #{first.pk} approved." in messages and f"Change #{second.pk} approved." in messages
    (refusal,) = [m for m in messages if m.startswith(f"Change #{own.pk} not approved:")]
    assert "someone else must approve" in refusal, refusal  # the reason, not just "no"
    states = dict(ChangeRequest.objects.values_list("pk", "state"))
    assert states == {first.pk: State.APPROVED, second.pk: State.APPROVED, own.pk: State.PENDING_APPROVAL}


def test_auditor_reads_the_evidence_page_of_an_applied_change(browser, author, reviewer, auditor, fast_target):
    change = approved(author, reviewer, fast_target, comment="looks right", title="Move www to the new LB")
    assert run(change) == State.APPLIED
    browser.force_login(staff_with(auditor, "view_changerequest"))

    browser.open(reverse(CHANGELIST))
    browser.click_link(change.title)
    assert browser.path == change_path(change)
    assert not browser.buttons_labelled("Approve")  # an auditor reads, never decides
    browser.screenshot("change")
    browser.click_link("Evidence")
    browser.screenshot("evidence")

    browser.heading(f"Evidence: change #{change.pk}")
    assert browser.fact("State") == "applied"
    assert browser.fact("Fingerprint") == change.fingerprint
    assert browser.fact("Requested by").startswith(author.username)
    text = browser.text()
    assert f"{reviewer.username} (id {reviewer.pk})" in text and "looks right" in text  # who approved, and why
    assert "Not an emergency change." in text and "No automatic rollback." in text
    # Every audit event of the change, with its chain hash, as stored: folded below the record.
    browser.driver.find_element("css selector", "#raw-events > summary").click()
    text = browser.text()
    for event in AuditEvent.objects.filter(change=change):
        assert event.hash in text, event.action
    assert "change_applied" in text
    assert "FAILED" not in text


def test_a_rolled_back_change_shows_the_rollback_and_the_failed_check(browser, author, reviewer, fast_target):
    dead = {"type": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": 0.5}
    change = approved(author, reviewer, fast_target, health_checks=[dead])
    assert run(change) == State.ROLLED_BACK
    check_name = f"tcp 127.0.0.1:{dead['port']}"
    assert CheckResult.objects.filter(execution__change=change, name=check_name, ok=False).exists()
    browser.force_login(staff_with(author, "view_changerequest"))

    browser.open(change_path(change))
    browser.screenshot("change")
    assert browser.fact("State").startswith(ChangeRequest.State.ROLLED_BACK.label)
    text = browser.text()
    assert "change_rolled_back" in text  # the audit event row
    assert "rolled_back" in browser.table_after("Attempts to apply").text
    assert not browser.buttons_labelled("Submit for approval")  # terminal: nothing to press
    assert not browser.buttons_labelled("Cancel change") and not browser.buttons_labelled("Re-plan against live")
    # Why, at the top: the failed check by name, its round and its detail.
    why = browser.heading("Why this change failed")
    state_row = browser.driver.find_element("xpath", "//tr[th[normalize-space(.)='State']]")
    assert why.location["y"] < state_row.location["y"]
    assert re.search(rf"Rolled back: health check {re.escape(check_name)} failed in round \d+\.", text)
    failed = browser.table_after("Why this change failed").text
    assert check_name in failed and "FAILED" in failed
    # The declared check, readably (not a Python dict), and every round that ran.
    declared = browser.table_after("Health checks").text
    assert check_name in declared and f"port={dead['port']}" in declared and "{" not in declared
    rounds = browser.table_after("Rounds run").text
    assert check_name in rounds and "FAILED" in rounds
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", browser.fact("Created"))  # to the second

    # The evidence page says why: the failed check, by name, and the rollback.
    browser.click_link("Evidence")
    browser.screenshot("evidence")
    failed = browser.driver.find_elements(
        "xpath", f"//tr[td[normalize-space(.)={check_name!r}] and td[contains(., 'FAILED')]]")
    assert failed, browser.text()[-3000:]
    assert browser.fact("Outcome") == "rolled_back"  # the latest attempt's outcome
    assert check_name in browser.fact("Failed checks")


def test_a_reviewer_sees_only_review_buttons_and_a_stale_plan_needs_a_replan(
        browser, author, reviewer, dns_target, named_server):
    change = submitted(author, dns_target, title="Move www")
    browser.force_login(staff_with(reviewer, "view_changerequest"))
    browser.open(change_path(change))
    browser.screenshot("pending")
    # Someone else's pending change: nothing of the author's to press.
    assert not browser.buttons_labelled("Submit for approval") and not browser.buttons_labelled("Cancel change")
    assert browser.buttons_labelled("Approve") and browser.buttons_labelled("Reject")

    # The zone moves behind the gateway's back: the page's live re-read shows it.
    update = dns.update.UpdateMessage(dns_target.name, keyring=dns.tsigkeyring.from_file(named_server.key_file))
    update.replace("www", 300, "A", "198.51.100.9")
    dns.query.tcp(update, "127.0.0.1", port=named_server.port, timeout=3)
    browser.open(change_path(change))
    browser.screenshot("stale")
    assert "Re-plan needed" in browser.text()
    assert not browser.buttons_labelled("Approve") and browser.buttons_labelled("Reject")

    # A reviewer may re-plan: the plan is read again and can be reviewed.
    replan = browser.driver.find_element(
        "xpath", "//*[contains(@class, 'cg-replan-needed')]//input[@type='submit' and @value='Re-plan against live']")
    browser.press(replan)
    browser.screenshot("replanned")
    fresh = ChangeRequest.objects.get(pk=change.pk)
    assert fresh.fingerprint != change.fingerprint and fresh.state == State.PENDING_APPROVAL
    assert "Re-plan needed" not in browser.text()
    assert browser.button("Approve").find_element(
        "xpath", "./ancestor::form[1]").find_element("name", "fingerprint").get_attribute("value") == fresh.fingerprint


def test_the_author_reverts_a_young_change_alone_from_its_page(browser, author, reviewer, operator,
                                                                fast_target):
    """Issue 16: while the watch window runs, the page says until when and offers the
    author a Revert button (a reason and a ticked box required); the revert is a new
    change linked both ways, and once reverted there is nothing more to press."""
    from changes.services import target_update_policy

    target = target_update_policy(actor=operator, target=fast_target, watch_seconds=600)
    change = approved(author, reviewer, target)
    assert run(change) == State.APPLIED
    browser.force_login(staff_with(author, *ENGINEER_PERMS))
    browser.open(change_path(change))
    browser.screenshot("watched")
    assert browser.fact("Watch").startswith("watching until ")
    assert browser.fact("Now").startswith("applied, watching (checks every 30 s)")
    browser.field("reason").send_keys("checkout answers 502 since the move")
    # The box naming the change is required (the form's `required`), then it posts.
    assert browser.field("confirm").get_attribute("required") is not None
    browser.field("confirm").click()
    browser.press(browser.button("Revert"))
    revert = ChangeRequest.objects.get(reverts=change)
    assert browser.path == change_path(revert)
    browser.screenshot("revert")
    assert browser.fact("Reverts").startswith(f"#{change.pk}")
    assert revert.state == State.APPROVED
    assert AuditEvent.objects.get(change=revert, action="change_revert_approved").payload["reason"] == \
        "checkout answers 502 since the move"

    assert run(revert) == State.APPLIED
    browser.open(change_path(change))
    assert browser.fact("Reverted by").startswith(f"#{revert.pk}")
    assert not browser.buttons_labelled("Revert")
