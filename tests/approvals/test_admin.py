"""The reviewer's admin: approve/reject buttons and bulk actions call the policy,
the change page re-reads the live zone, and the "waiting for my review" filter
(real named)."""

from __future__ import annotations

import re
from functools import partial

import dns.query
import dns.tsigkeyring
import dns.update
import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from approvals.models import Approval
from approvals.policy import change_approve
from changes import adapters
from changes.models import AuditEvent, ChangeRequest, Origin
from changes.services import change_cancel, change_create, target_update_policy
from dns_adapters.base import TransientError
from tests.conftest import grant
from tests.factories import WWW, submitted

pytestmark = [pytest.mark.django_db, pytest.mark.named]
State = ChangeRequest.State
API = [{"op": "upsert", "name": "api", "type": "A", "ttl": 300, "records": ["192.0.2.98"]}]
MX = [{"op": "upsert", "name": "@", "type": "MX", "ttl": 300, "records": ["20 mail"]}]
CHANGELIST = "admin:changes_changerequest_changelist"


def staff_with(user, *codenames: str):
    user.is_staff = True
    user.save()
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="changes", codename__in=codenames))
    return user


def reviewer_login(client, user):
    client.force_login(staff_with(user, "view_changerequest"))


pending = partial(submitted, title="Move www", reason="new lb")


def page(client, change) -> str:
    response = client.get(reverse("admin:changes_changerequest_change", args=[change.pk]))
    assert response.status_code == 200
    return response.content.decode()


def shown_fingerprint(html: str) -> str:
    match = re.search(r'<input type="hidden" name="fingerprint" value="([0-9a-f]{64})">', html)
    assert match, "no Approve button"
    return match.group(1)


def approve_post(client, change, fingerprint: str, comment: str = ""):
    """The Approve button with its box ticked ("I reviewed N steps, fingerprint ...")."""
    return client.post(reverse("admin:changes_changerequest_approve", args=[change.pk]),
                       {"fingerprint": fingerprint, "reviewed": fingerprint, "comment": comment}, follow=True)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_buttons_are_shown_to_a_reviewer_and_not_to_the_author_or_an_engineer(
        client, author, reviewer, make_user, dns_target):
    change = pending(author, dns_target)
    reviewer_login(client, reviewer)
    html = page(client, change)
    assert shown_fingerprint(html) == change.fingerprint
    assert 'value="Approve"' in html and 'value="Reject"' in html

    eve = make_user("eve")
    grant(eve, "engineer", dns_target)
    for user in (author, eve):
        reviewer_login(client, user)
        html = page(client, change)
        assert 'value="Approve"' not in html and 'value="Reject"' not in html
        assert "Approvals: 0 of 1 needed" in html  # the page itself is there


def test_buttons_are_gone_once_the_change_is_no_longer_pending(client, author, reviewer, dns_target):
    change = change_create(actor=author, target=dns_target, title="Draft", reason="r", items=WWW)
    reviewer_login(client, reviewer)
    assert 'value="Approve"' not in page(client, change)


def test_approving_with_the_fingerprint_shown_approves_and_is_listed(client, author, reviewer, dns_target):
    change = pending(author, dns_target)
    reviewer_login(client, reviewer)
    fingerprint = shown_fingerprint(page(client, change))
    response = approve_post(client, change, fingerprint, comment="matches CHG-1")
    assert messages_of(response) == [f"Change #{change.pk} approved."]
    assert ChangeRequest.objects.get(pk=change.pk).state == State.APPROVED
    approval = Approval.objects.get(change=change)
    assert (approval.approver, approval.fingerprint, approval.comment) == (reviewer, fingerprint, "matches CHG-1")
    assert AuditEvent.objects.get(change=change, action="approval_given").origin == Origin.ADMIN
    html = response.content.decode()
    assert "Approvals: 1 of 1 needed" in html and "matches CHG-1" in html and fingerprint[:12] in html
    assert 'value="Approve"' not in html


def test_one_of_two_approvals_is_reported_as_recorded(client, author, reviewer, staff, dns_target):
    target_update_policy(actor=staff, target=dns_target, required_approvals=2)
    change = pending(author, dns_target)
    reviewer_login(client, reviewer)
    response = approve_post(client, change, shown_fingerprint(page(client, change)))
    assert messages_of(response) == [f"Your approval of change #{change.pk} is recorded (1 of 2 needed)."]
    html = response.content.decode()
    assert "Approvals: 1 of 2 needed" in html
    assert "You approved this plan (" in html and 'value="Approve"' not in html and 'value="Reject"' in html
    # Without the button, a second POST is still the policy's to refuse.
    again = approve_post(client, change, change.fingerprint)
    assert messages_of(again) == [f"you already approved change #{change.pk}"]
    assert Approval.objects.count() == 1


def test_a_stale_fingerprint_is_an_error_message_and_creates_nothing(client, author, reviewer, dns_target):
    change = pending(author, dns_target)
    reviewer_login(client, reviewer)
    response = approve_post(client, change, "0" * 64)
    assert response.status_code == 200
    (message,) = messages_of(response)
    assert "the plan changed since you reviewed it" in message and change.fingerprint in message
    assert not Approval.objects.exists()
    assert ChangeRequest.objects.get(pk=change.pk).state == State.PENDING_APPROVAL


def test_posts_by_the_author_or_an_engineer_are_refused_as_messages(client, author, make_user, dns_target):
    change = pending(author, dns_target)
    eve = make_user("eve")
    grant(eve, "engineer", dns_target)
    for user, refusal in ((author, "someone else must approve it"), (eve, "you lack the approve_change")):
        reviewer_login(client, user)
        response = approve_post(client, change, change.fingerprint)
        assert response.status_code == 200 and refusal in messages_of(response)[0].lower()
        reject = client.post(reverse("admin:changes_changerequest_reject", args=[change.pk]),
                             {"comment": "no"}, follow=True)
        assert reject.status_code == 200 and messages_of(reject)
    assert not Approval.objects.exists()
    assert ChangeRequest.objects.get(pk=change.pk).state == State.PENDING_APPROVAL
    assert client.get(reverse("admin:changes_changerequest_approve", args=[change.pk])).status_code == 405


def test_reject_needs_a_comment_and_ends_the_change(client, author, reviewer, dns_target):
    change = pending(author, dns_target)
    reviewer_login(client, reviewer)
    url = reverse("admin:changes_changerequest_reject", args=[change.pk])
    html = page(client, change)
    assert '<textarea id="cg-reject-comment" name="comment" rows="2" required>' in html
    response = client.post(url, {"comment": "  "}, follow=True)
    assert "comment: say why the change is rejected" in messages_of(response)[0].lower()
    assert ChangeRequest.objects.get(pk=change.pk).state == State.PENDING_APPROVAL
    response = client.post(url, {"comment": "wrong address"}, follow=True)
    assert messages_of(response) == [f"Change #{change.pk} rejected."]
    assert ChangeRequest.objects.get(pk=change.pk).state == State.REJECTED


def bulk(client, action: str, changes, **extra):
    return client.post(reverse(CHANGELIST), {"action": action, "_selected_action": [c.pk for c in changes],
                                             **extra}, follow=True)


def test_bulk_approve_calls_the_policy_per_change_and_reports_each_refusal(
        client, author, reviewer, dns_target):
    grant(reviewer, "engineer", dns_target)
    approvable = pending(author, dns_target)
    draft = change_create(actor=author, target=dns_target, title="Draft", reason="r", items=API)
    own = pending(reviewer, dns_target, items=API, title="Bob's own")
    reviewer_login(client, reviewer)
    confirm = bulk(client, "approve_selected", [approvable, draft, own], index="0")
    assert confirm.status_code == 200 and not Approval.objects.exists()  # first the plans are shown
    shown = {f"fingerprint_{c.pk}": c.fingerprint for c in (approvable, draft, own)}
    response = bulk(client, "approve_selected", [approvable, draft, own], index="0", post="yes", **shown)
    assert response.status_code == 200
    assert messages_of(response) == [
        f"Change #{approvable.pk} approved.",
        f"Change #{draft.pk} not approved: change #{draft.pk} is draft; only pending changes can be approved",
        f"Change #{own.pk} not approved: you wrote or edited change #{own.pk}; someone else must approve it",
    ]
    assert [a.change_id for a in Approval.objects.all()] == [approvable.pk]
    assert ChangeRequest.objects.get(pk=own.pk).state == State.PENDING_APPROVAL


def test_bulk_reject_asks_for_a_comment_then_rejects_each(client, author, reviewer, dns_target):
    first, second = pending(author, dns_target), pending(author, dns_target, items=API, title="Move api")
    reviewer_login(client, reviewer)
    confirm = bulk(client, "reject_selected", [first, second], index="0")
    html = confirm.content.decode()
    assert "Reject 2 changes" in html and "Move api" in html and 'name="comment"' in html
    assert ChangeRequest.objects.filter(state=State.REJECTED).count() == 0

    again = bulk(client, "reject_selected", [first, second], post="yes", comment=" ")
    assert "say why the change is rejected" in again.content.decode()
    assert ChangeRequest.objects.filter(state=State.REJECTED).count() == 0

    done = bulk(client, "reject_selected", [first, second], post="yes", comment="not in the window")
    assert messages_of(done) == [f"Change #{first.pk} rejected.", f"Change #{second.pk} rejected."]
    assert set(ChangeRequest.objects.values_list("state", flat=True)) == {State.REJECTED}
    assert {e.payload["comment"] for e in AuditEvent.objects.filter(action="change_rejected")} == {"not in the window"}


def listed(client, **params) -> set[int]:
    response = client.get(reverse(CHANGELIST), params)
    assert response.status_code == 200
    return {change.pk for change in response.context["cl"].result_list}


def test_waiting_for_my_review_lists_what_i_may_approve_and_have_not(
        client, author, reviewer, second_reviewer, staff, make_user, dns_target, named_server, fresh_zone):
    target_update_policy(actor=staff, target=dns_target, required_approvals=2)
    waiting = pending(author, dns_target)
    mine_approved = pending(author, dns_target, items=API, title="approved by bob")
    change_approve(actor=reviewer, change=mine_approved, fingerprint=mine_approved.fingerprint)
    draft = change_create(actor=author, target=dns_target, title="Draft", reason="r", items=WWW)
    grant(reviewer, "engineer", dns_target)
    own = pending(reviewer, dns_target, title="Bob's own")
    # bob may see the change on this target but not approve there.
    from changes.services import target_register

    engineer_only = target_register(actor=staff, name="eng-only-" + fresh_zone, config=dict(dns_target.config))
    grant(author, "engineer", engineer_only)
    grant(reviewer, "engineer", engineer_only)
    elsewhere = pending(author, engineer_only)

    reviewer_login(client, reviewer)
    assert listed(client) == {waiting.pk, mine_approved.pk, draft.pk, own.pk, elsewhere.pk}
    assert listed(client, review="waiting") == {waiting.pk}
    html = client.get(reverse(CHANGELIST)).content.decode()
    assert "1 change waiting for your review" in html
    # Counts next to the filter choices only on request ("Show counts"): each is a
    # count over every visible change, too dear for every page view (issue 14).
    assert "waiting for me (" not in html and "Pending Approval (" not in html
    assert "Show counts" in html
    html = client.get(reverse(CHANGELIST), {"_facets": "True"}).content.decode()
    assert "1 change waiting for your review" in html
    assert "waiting for me (1)" in html  # facet count
    assert "Pending Approval (4)" in html  # per-state counts
    filtered = client.get(reverse(CHANGELIST), {"review": "waiting"})
    assert filtered.context["waiting_count"] == 1  # the filter's own count, reused
    assert "1 change waiting for your review" in filtered.content.decode()
    # With another filter on top, the page's count is not the waiting count.
    elsewhere_only = client.get(reverse(CHANGELIST), {"review": "waiting", "target__id__exact": engineer_only.pk})
    assert elsewhere_only.context["cl"].result_count == 0 and elsewhere_only.context["waiting_count"] == 1

    reviewer_login(client, second_reviewer)
    assert listed(client, review="waiting") == {waiting.pk, mine_approved.pk, own.pk}


def test_filters_by_risk_author_and_emergency(client, author, reviewer, make_user, dns_target):
    plain = pending(author, dns_target)
    risky = pending(author, dns_target, items=MX, title="mail")
    assert risky.risk_flags
    erin = make_user("erin")
    grant(erin, "engineer", dns_target)
    by_erin = pending(erin, dns_target, items=API, title="by erin")
    reviewer_login(client, reviewer)
    assert listed(client, risk="yes") == {risky.pk}
    assert listed(client, risk="no") == {plain.pk, by_erin.pk}
    assert listed(client, author__id__exact=erin.pk) == {by_erin.pk}
    assert listed(client, emergency__exact=0) == {plain.pk, risky.pk, by_erin.pk}

    # The sidebar names the visible targets and the authors of open changes, not every
    # target and user (nor every author of the history: a distinct over all changes).
    make_user("hidden-author")  # a user without changes

    def choices() -> dict[str, set]:
        specs = client.get(reverse(CHANGELIST)).context["cl"].filter_specs
        return {spec.field_path: {pk for pk, _ in spec.lookup_choices}
                for spec in specs if getattr(spec, "field_path", None) in ("target", "author")}

    # (One visible target: Django shows no filter with a single choice.)
    assert choices() == {"author": {author.pk, erin.pk}}
    change_cancel(actor=erin, change=by_erin, reason="not needed")
    assert "author" not in choices()  # alice alone has open changes: one choice, no filter shown
    assert listed(client, author__id__exact=erin.pk) == {by_erin.pk}  # still found by the URL


def test_the_change_page_shows_what_changed_in_the_live_zone_since_the_plan(
        client, author, reviewer, dns_target, named_server):
    change = pending(author, dns_target, items=WWW + API)
    reviewer_login(client, reviewer)
    html = page(client, change)
    assert "Every RRset still holds what the plan was read with." in html
    assert "changed</strong>" not in html

    # Somebody changes www behind the gateway's back, straight on the server.
    update = dns.update.UpdateMessage(dns_target.name, keyring=dns.tsigkeyring.from_file(named_server.key_file))
    update.replace("www", 300, "A", "198.51.100.9")
    dns.query.tcp(update, "127.0.0.1", port=named_server.port, timeout=3)

    html = page(client, change)
    www, api = f"www.{dns_target.name}.", f"api.{dns_target.name}."
    assert "1 RRset changed since the plan was read" in html
    moved = re.search(r'<tr class="cg-moved">(.*?)</tr>', html, re.DOTALL).group(1)
    assert f"<code>{www} A</code>" in moved
    assert f"{www} 300 IN A 192.0.2.10" in moved and f"{www} 300 IN A 198.51.100.9" in moved
    same = re.search(r'<tr class="cg-same">(.*?)</tr>', html, re.DOTALL).group(1)
    assert f"<code>{api} A</code>" in same and "unchanged" in same


class Unreachable:
    def __init__(self, target) -> None:
        pass

    def read(self, keys):
        raise TransientError("timed out talking to 127.0.0.1:9 (secret-free message)")

    def close(self) -> None:
        pass


def test_an_unreadable_zone_is_a_message_on_the_page_not_a_500(client, author, reviewer, dns_target, monkeypatch):
    change = pending(author, dns_target)
    monkeypatch.setattr(adapters, "_factory_override", Unreachable)
    reviewer_login(client, reviewer)
    html = page(client, change)
    assert "The live zone could not be read: target " in html and "timed out talking to 127.0.0.1:9" in html
    # Nothing is approved blind (the policy refuses too); rejecting is still possible.
    assert 'value="Approve"' not in html and 'value="Reject"' in html
    assert "Cannot be approved now: the live zone could not be read" in html


def test_approvals_are_read_only_in_the_admin(client, author, reviewer, make_user, dns_target):
    change = pending(author, dns_target)
    change_approve(actor=reviewer, change=change, fingerprint=change.fingerprint)
    approval = Approval.objects.get()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    listing = client.get(reverse("admin:approvals_approval_changelist"))
    assert listing.status_code == 200 and approval.fingerprint[:12] in listing.content.decode()
    assert client.get(reverse("admin:approvals_approval_add")).status_code == 403
    detail = client.get(reverse("admin:approvals_approval_change", args=[approval.pk]))
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
    delete = client.post(reverse("admin:approvals_approval_delete", args=[approval.pk]), {"post": "yes"})
    assert delete.status_code == 403
    assert Approval.objects.count() == 1


def test_approve_without_the_ticked_box_is_a_confirmation_page_that_approves_nothing(
        client, author, reviewer, dns_target):
    change = pending(author, dns_target)
    reviewer_login(client, reviewer)
    url = reverse("admin:changes_changerequest_approve", args=[change.pk])
    response = client.post(url, {"fingerprint": change.fingerprint, "comment": "looks right"})
    assert response.status_code == 200 and not Approval.objects.exists()
    html = response.content.decode()
    # It repeats what is being approved: the number of steps and the fingerprint, and keeps the comment.
    assert f"I reviewed 1 step, fingerprint <code>{change.fingerprint}</code>" in html
    assert f'name="reviewed" value="{change.fingerprint}" required' in html and "looks right</textarea>" in html
    assert "Tick the box" not in html

    # A box naming another fingerprint is no confirmation either.
    response = client.post(url, {"fingerprint": change.fingerprint, "reviewed": "0" * 64})
    assert "Tick the box to confirm" in response.content.decode() and not Approval.objects.exists()

    response = approve_post(client, change, change.fingerprint, comment="looks right")
    assert messages_of(response) == [f"Change #{change.pk} approved."]
    assert Approval.objects.get().comment == "looks right"


def test_the_approvals_panel_says_why_n_approvals_are_needed(client, author, reviewer, staff, dns_target):
    target_update_policy(actor=staff, target=dns_target, required_approvals=2)
    plain, flagged = pending(author, dns_target), pending(author, dns_target, items=MX, title="MX")
    assert flagged.risk_flags
    reviewer_login(client, reviewer)
    assert "2 needed: 2 for the target." in page(client, plain)
    flags = ", ".join(f"'{flag}'" for flag in flagged.risk_flags)
    noun = "flags" if len(flagged.risk_flags) > 1 else "flag"
    html = page(client, flagged)
    assert "Approvals: 0 of 3 needed" in html
    assert f"3 needed: 2 for the target + 1 for the risk {noun} {flags}.".replace("'", "&#x27;") in html


def buttons(html: str) -> set[str]:
    shown = set(re.findall(r'<input type="submit" name="_\w+" value="([^"]+)"', html))
    return shown & {"Submit for approval", "Re-plan against live", "Cancel change", "Approve", "Reject"}


def test_the_buttons_fit_the_state_and_the_person(client, author, reviewer, make_user, dns_target):
    draft = change_create(actor=author, target=dns_target, title="Draft", reason="r", items=WWW)
    change = pending(author, dns_target, items=API)
    auditor_only = make_user("audrey")
    grant(auditor_only, "auditor", dns_target)
    expected = {
        (author, draft): {"Submit for approval", "Re-plan against live", "Cancel change"},
        (author, change): {"Re-plan against live", "Cancel change"},  # pending: submitting again is no move
        (reviewer, draft): {"Re-plan against live"},  # someone else's draft: nothing to decide yet
        (reviewer, change): {"Re-plan against live", "Approve", "Reject"},
        (auditor_only, change): set(),
    }
    for (user, shown), wanted in expected.items():
        reviewer_login(client, user)
        assert buttons(page(client, shown)) == wanted, (user.username, shown.state)

    change_cancel(actor=author, change=change, reason="not needed")
    for user in (author, reviewer):
        reviewer_login(client, user)
        assert buttons(page(client, change)) == set()  # cancelled: nothing anyone may press


def test_a_drifted_change_says_which_keys_moved_from_what_to_what(
        client, author, reviewer, dns_target, named_server):
    from tests.factories import approved, run

    change = approved(author, reviewer, dns_target)
    update = dns.update.UpdateMessage(dns_target.name, keyring=dns.tsigkeyring.from_file(named_server.key_file))
    update.replace("www", 300, "A", "198.51.100.9")
    dns.query.tcp(update, "127.0.0.1", port=named_server.port, timeout=3)
    assert run(change) == State.DRIFTED
    reviewer_login(client, author)
    html = page(client, change)
    www = f"www.{dns_target.name}."
    assert "Why this change failed" in html and "Drifted: 1 key changed outside changegate" in html
    moved = re.search(r'<table class="cg-moved-keys">(.*?)</table>', html, re.DOTALL).group(1)
    assert f"<code>{www} A</code>" in moved
    assert f"{www} 300 IN A 192.0.2.10" in moved and f"{www} 300 IN A 198.51.100.9" in moved
    assert html.index("Why this change failed") < html.index("<h2>Change</h2>")
    # Drifted: the author may re-plan and submit again.
    assert {"Re-plan against live", "Submit for approval"} <= buttons(html)
