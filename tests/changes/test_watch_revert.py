"""Issue 16: the watch window after `applied` and the one-person revert while the
change is young, in-process against a real named (pipeline.watch,
changes.services.reverts): the API, the admin page and the sweep. The real Celery
worker's part is in test_watch_worker.py."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from adapters import Plan
from changes.models import AuditEvent, ChangeRequest, CheckResult, Notification
from changes.services import (
    change_revert,
    may_revert,
    revert_refusal,
    target_update_policy,
)
from pipeline.watch import watch_round, watch_span, watch_sweep
from tests.audit.test_evidence_page import evidence_page
from tests.factories import api_client, approved, run, submitted, upsert, www

pytestmark = [pytest.mark.django_db, pytest.mark.named]
State = ChangeRequest.State
OLD = ("192.0.2.10", "192.0.2.11")  # www A in the test zones before any change
NEW = ("192.0.2.99",)  # what tests.factories.WWW makes it


@pytest.fixture
def watched(fast_target, operator):
    """No bake, then a 10-minute watch window with a round every second."""
    return target_update_policy(actor=operator, target=fast_target, watch_seconds=600, watch_interval_seconds=1)


def applied(author, reviewer, target, **kwargs) -> ChangeRequest:
    change = approved(author, reviewer, target, **kwargs)
    assert run(change) == State.APPLIED
    return ChangeRequest.objects.get(pk=change.pk)


def fresh(change) -> ChangeRequest:
    return ChangeRequest.objects.select_related("target").get(pk=change.pk)


def sweep_due(change) -> list[int]:
    """One sweep at the moment the change's next round is due (time as data, never slept)."""
    return watch_sweep(now=fresh(change).watch_next_at)


@pytest.fixture
def listening():
    """A TCP port something listens on, until the test closes it (the service going down)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


def tcp_check(sock) -> dict:
    return {"type": "tcp", "host": "127.0.0.1", "port": sock.getsockname()[1], "timeout": 0.5}


# ---------------------------------------------------------------------------
# The window


def test_the_bake_passing_opens_the_watch_window(author, reviewer, watched):
    before = timezone.now()
    change = applied(author, reviewer, watched)
    assert before + timedelta(seconds=600) <= change.watch_until <= timezone.now() + timedelta(seconds=600)
    assert change.watch_next_at - change.watch_until == timedelta(seconds=1 - 600)
    verified = AuditEvent.objects.get(change=change, action="change_verified")
    assert verified.payload["watch_until"] == change.watch_until.isoformat()


def test_the_window_lasts_as_long_as_the_bake_unless_the_target_says_otherwise(author, reviewer, fast_target,
                                                                                operator):
    change = submitted(author, fast_target, bake_override_seconds=120, bake_override_reason="slow caches")
    assert watch_span(change, fast_target) == 120
    target = target_update_policy(actor=operator, target=fast_target, watch_seconds=30)
    assert watch_span(change, target) == 30
    # Without a bake and without a watch of its own, the target watches nothing after applied.
    target = target_update_policy(actor=operator, target=target, watch_seconds=None)
    other = applied(author, reviewer, target, items=upsert("api", "192.0.2.21"))
    assert (watch_span(other, target), other.watch_until, other.watch_next_at) == (0, None, None)


# ---------------------------------------------------------------------------
# The one-person revert


def test_the_author_reverts_alone_in_the_window_and_the_old_records_come_back(author, reviewer, watched):
    change = applied(author, reviewer, watched)
    assert www(watched) == NEW and may_revert(author, change)
    revert = change_revert(actor=author, change=change, reason="pay.example answers 502")
    assert (revert.state, revert.reverts_id, revert.author_id) == (State.APPROVED, change.pk, author.pk)
    # Exactly the inverse of the applied plan: applied only while `after` is still live.
    assert revert.plan == Plan.from_json(change.plan).inverse().to_json()
    assert revert.fingerprint == Plan.from_json(change.plan).inverse().fingerprint
    assert (revert.health_checks, revert.bake_override_seconds) == ([], 0)
    assert revert.bake_override_reason == f"a revert restores what was live before #{change.pk}"
    approved_event = AuditEvent.objects.get(change=revert, action="change_revert_approved")
    assert approved_event.actor_id == author.pk
    assert {k: approved_event.payload[k] for k in ("reverts", "reason", "approved_by", "within_watch_until",
                                                   "one_person")} == {"reverts": change.pk, "reason": "pay.example answers 502", "approved_by": ["bob"],
          "within_watch_until": change.watch_until.isoformat(), "one_person": True}
    assert AuditEvent.objects.get(change=change, action="change_reverted").payload["revert"] == revert.pk
    assert fresh(change).watch_next_at is None  # nothing left to watch
    assert run(revert) == State.APPLIED  # no approval of its own: the original's count
    assert www(watched) == OLD
    # A revert has no window of its own and cannot itself be reverted alone.
    assert fresh(revert).watch_until is None
    assert "itself a revert" in revert_refusal(author, fresh(revert))


def test_an_approver_reverts_alone_through_the_api(author, reviewer, watched):
    change = applied(author, reviewer, watched)
    response = api_client(reviewer).post(f"/api/v1/changes/{change.pk}/revert/", {"reason": "502s"}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["state"], body["author"], body["reverts"]) == ("approved", "bob", change.pk)
    assert AuditEvent.objects.get(change_id=body["id"], action="change_revert_approved").origin == "api"
    assert api_client(author).get(f"/api/v1/changes/{change.pk}/").json()["reverted_by"] == [body["id"]]
    assert run(ChangeRequest.objects.get(pk=body["id"])) == State.APPLIED
    assert www(watched) == OLD


def test_a_reviewer_who_did_not_approve_it_is_refused(author, reviewer, second_reviewer, watched):
    change = applied(author, reviewer, watched)
    # The change's detail tells each person beforehand, in the words the POST would use.
    offered = api_client(reviewer).get(f"/api/v1/changes/{change.pk}/").json()
    assert offered["revert"] == {"allowed": True, "why_not": None,
                                 "until": fresh(change).watch_until.isoformat().replace("+00:00", "Z")}
    assert offered["phase"]["name"] == "watching"
    refused = api_client(second_reviewer).get(f"/api/v1/changes/{change.pk}/").json()["revert"]
    assert refused["allowed"] is False and "changegate rollback" in refused["why_not"]
    response = api_client(second_reviewer).post(f"/api/v1/changes/{change.pk}/revert/", {"reason": "502s"},
                                                format="json")
    assert response.status_code == 403, response.json()
    assert "changegate rollback" in response.json()["detail"]
    assert not ChangeRequest.objects.filter(reverts=change).exists()
    assert www(watched) == NEW


def test_an_approver_who_lost_the_role_is_refused(author, reviewer, watched, operator):
    from changes.permissions import target_role_revoke

    change = applied(author, reviewer, watched)
    target_role_revoke(actor=operator, target=watched, role="reviewer", user=reviewer)
    assert revert_refusal(type(reviewer).objects.get(pk=reviewer.pk), change) == (
        f"you no longer hold approve_change on target {watched.name}")


def test_after_the_window_the_revert_is_refused_and_a_rollback_is_four_eyes(author, reviewer, watched):
    change = applied(author, reviewer, watched)
    ended = timezone.now() - timedelta(seconds=1)
    ChangeRequest.objects.filter(pk=change.pk).update(watch_until=ended)  # the window ran out
    response = api_client(author).post(f"/api/v1/changes/{change.pk}/revert/", {"reason": "502s"}, format="json")
    assert response.status_code == 409, response.json()
    assert response.json()["detail"] == (
        f"the watch window of change #{change.pk} ended at {ended.isoformat()}; a rollback now is an ordinary "
        f"four-eyes change (changegate rollback {change.pk})")
    assert not ChangeRequest.objects.filter(reverts=change).exists()


@pytest.mark.parametrize("body", [{}, {"reason": "   "}])
def test_the_reason_is_required(body, author, reviewer, watched):
    change = applied(author, reviewer, watched)
    response = api_client(author).post(f"/api/v1/changes/{change.pk}/revert/", body, format="json")
    assert response.status_code == 400, response.json()
    assert [error["field"] for error in response.json()["errors"]] == ["reason"]
    assert not ChangeRequest.objects.filter(reverts=change).exists()


def test_a_change_already_reverted_is_not_reverted_twice(author, reviewer, watched):
    change = applied(author, reviewer, watched)
    first = change_revert(actor=author, change=change, reason="502s")
    response = api_client(reviewer).post(f"/api/v1/changes/{change.pk}/revert/", {"reason": "me too"},
                                         format="json")
    assert response.status_code == 409, response.json()
    assert response.json()["detail"] == f"change #{change.pk} is already reverted by change #{first.pk} (approved)"
    assert ChangeRequest.objects.filter(reverts=change).count() == 1


def test_a_revert_finding_after_no_longer_live_drifts_and_another_may_follow(author, reviewer, watched,
                                                                             named_server):
    import dns.query
    import dns.tsigkeyring
    import dns.update

    change = applied(author, reviewer, watched)
    first = change_revert(actor=author, change=change, reason="502s")
    # Somebody changes www behind changegate's back: `after` is no longer live.
    update = dns.update.UpdateMessage(watched.name, keyring=dns.tsigkeyring.from_file(named_server.key_file))
    update.replace("www", 300, "A", "203.0.113.50")
    dns.query.tcp(update, "127.0.0.1", port=named_server.port, timeout=3)
    assert run(first) == State.DRIFTED
    assert www(watched) == ("203.0.113.50",)  # the revert wrote nothing over it
    # A drifted revert did not stand: a person may try again (once the zone is sorted out).
    assert may_revert(author, fresh(change))


# ---------------------------------------------------------------------------
# The sweep


def test_a_check_failing_in_the_window_alerts_and_reverts_after_two_rounds(author, reviewer, watched, listening):
    author.email, reviewer.email = "alice@example.test", "bob@example.test"
    author.save(), reviewer.save()
    check = tcp_check(listening)
    change = applied(author, reviewer, watched, health_checks=[check])
    assert sweep_due(change) == [change.pk]  # the service is up: a passing round
    listening.close()  # ... and goes down
    assert sweep_due(change) == [change.pk]
    assert fresh(change).watch_failures == 1 and not ChangeRequest.objects.filter(reverts=change).exists()
    assert sweep_due(change) == [change.pk]  # the second failed round in a row decides
    rounds = CheckResult.objects.filter(execution__change=change, phase="watch", kind="tcp")
    assert list(rounds.order_by("round").values_list("round", "ok")) == [(1, True), (2, False), (3, False)]
    assert AuditEvent.objects.filter(change=change, action="checks_round", payload__phase="watch").count() == 3
    (alert,) = Notification.objects.filter(change=change, event="watch_check_failed")
    assert sorted(alert.recipients) == ["alice@example.test", "bob@example.test"]
    assert alert.payload["failed_checks"][0]["name"] == f"tcp 127.0.0.1:{check['port']}"
    assert "192.0.2.99" in alert.payload["diff"] and alert.payload["steps"] == change.plan["steps"]
    revert = ChangeRequest.objects.get(reverts=change)
    assert alert.payload["revert"] == revert.pk
    assert revert.author_id == author.pk  # written in the author's name, by the system:
    event = AuditEvent.objects.get(change=revert, action="change_revert_approved")
    assert (event.actor_id, event.payload["automatic"], event.payload["one_person"]) == (None, True, False)
    assert "tcp 127.0.0.1" in event.payload["reason"]
    assert fresh(change).watch_next_at is None
    assert run(revert) == State.APPLIED
    assert www(watched) == OLD
    assert watch_sweep(now=timezone.now() + timedelta(seconds=60)) == []  # nothing watched any more


def test_without_auto_revert_the_watch_only_alerts(author, reviewer, watched, operator, listening):
    author.email = "alice@example.test"
    author.save()
    target = target_update_policy(actor=operator, target=watched, watch_auto_revert=False)
    change = applied(author, reviewer, target, health_checks=[tcp_check(listening)])
    listening.close()
    sweep_due(change)
    sweep_due(change)
    assert Notification.objects.filter(change=change, event="watch_check_failed").count() == 1
    failed = AuditEvent.objects.get(change=change, action="watch_failed").payload
    assert (failed["auto_revert"], "revert" in failed) == (False, False)
    assert not ChangeRequest.objects.filter(reverts=change).exists()
    assert fresh(change).watch_next_at is None and www(target) == NEW
    # The people may still revert it alone while the window runs.
    assert may_revert(author, fresh(change))


def test_two_sweeps_never_run_the_same_round(author, reviewer, watched):
    change = applied(author, reviewer, watched)
    due = change.watch_next_at
    assert watch_round(change_id=change.pk, due_at=due, now=due) == "passed"
    assert watch_round(change_id=change.pk, due_at=due, now=due) == "not-claimed"
    assert CheckResult.objects.filter(execution__change=change, phase="watch").values("round").distinct().count() == 1


def test_the_watch_ends_when_a_later_change_is_applied_on_the_target(author, reviewer, watched):
    change = applied(author, reviewer, watched)
    applied(author, reviewer, watched, items=upsert("www", "192.0.2.77"))
    assert sweep_due(change) == []
    ended = AuditEvent.objects.get(change=change, action="watch_ended").payload
    assert ended["outcome"] == "superseded"
    assert fresh(change).watch_next_at is None
    assert not CheckResult.objects.filter(execution__change=change, phase="watch").exists()


def test_the_watch_ends_quietly_when_the_window_is_over(author, reviewer, watched, operator):
    target = target_update_policy(actor=operator, target=watched, watch_seconds=2)
    change = applied(author, reviewer, target)
    assert sweep_due(change) == [change.pk]  # at +1 s: the next would be at the window's end
    assert fresh(change).watch_next_at is None
    assert AuditEvent.objects.get(change=change, action="watch_ended").payload == {"outcome": "passed", "rounds": 1}


# ---------------------------------------------------------------------------
# The change page


def staff_with(user, *codenames: str):
    user.is_staff = True
    user.save()
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="changes", codename__in=codenames))
    return type(user).objects.get(pk=user.pk)


def page(client, user, change) -> str:
    client.force_login(staff_with(user, "view_changerequest"))
    response = client.get(reverse("admin:changes_changerequest_change", args=[change.pk]))
    assert response.status_code == 200
    return response.content.decode()


REVERT_BUTTON = 'name="_revert"'


def test_the_revert_button_shows_to_author_and_approver_in_the_window_only(client, author, reviewer,
                                                                          second_reviewer, watched):
    change = applied(author, reviewer, watched)
    shown = page(client, author, change)
    assert REVERT_BUTTON in shown and "watching until" in shown and "checks every 1 s" in shown
    assert REVERT_BUTTON in page(client, reviewer, change)
    assert REVERT_BUTTON not in page(client, second_reviewer, change)
    ChangeRequest.objects.filter(pk=change.pk).update(watch_until=timezone.now() - timedelta(seconds=1))
    later = page(client, author, change)
    assert REVERT_BUTTON not in later and "watch window ended" in later


def test_the_revert_button_posts_the_revert_and_both_pages_link_each_other(client, author, reviewer, watched):
    change = applied(author, reviewer, watched)
    client.force_login(staff_with(author, "view_changerequest"))
    url = reverse("admin:changes_changerequest_revert", args=[change.pk])
    unticked = client.post(url, {"reason": "502s"}, follow=True)
    assert "Nothing was reverted" in unticked.content.decode()
    assert not ChangeRequest.objects.filter(reverts=change).exists()
    response = client.post(url, {"reason": "502s", "confirm": str(change.pk)})
    revert = ChangeRequest.objects.get(reverts=change)
    assert response.status_code == 302 and response["Location"].endswith(f"/{revert.pk}/change/")
    assert AuditEvent.objects.get(change=revert, action="change_revert_approved").origin == "admin"
    assert f"#{change.pk}</a>" in page(client, author, revert)
    assert f"#{revert.pk}</a>" in page(client, author, change)


def test_a_revert_does_not_wait_for_the_change_window_and_says_so(author, reviewer, watched, operator):
    change = applied(author, reviewer, watched)
    # The window closes right after the change went in: its revert must not wait for tomorrow.
    closed = {"timezone": "UTC", "freezes": [{"start": "2000-01-01T00:00:00+00:00",
                                              "end": "2999-01-01T00:00:00+00:00", "reason": "year-end freeze"}]}
    target_update_policy(actor=operator, target=watched, change_windows=closed)
    revert = change_revert(actor=author, change=change, reason="checkout fails")
    assert run(revert) == State.APPLIED
    assert www(watched) == OLD
    ignored = AuditEvent.objects.get(change=revert, action="change_window_ignored").payload
    assert ignored["change_window"].startswith(f"ignored (a revert of #{change.pk}): ")
    assert "year-end freeze" in ignored["change_window"] and ignored["reverts"] == change.pk


def test_the_evidence_tells_the_bake_the_watch_and_the_one_person_revert(author, reviewer, auditor, watched):
    change = applied(author, reviewer, watched)
    revert = change_revert(actor=author, change=change, reason="checkout fails")
    assert run(revert) == State.APPLIED
    original = api_client(auditor).get(f"/api/v1/changes/{change.pk}/evidence/").json()["aftercare"]
    assert original["reverted_by"] == [revert.pk] and original["reverts"] is None
    assert original["watch_until"] == fresh(change).watch_until.isoformat()
    assert original["bake"]["why"].startswith("watching for ")
    undo = api_client(auditor).get(f"/api/v1/changes/{revert.pk}/evidence/").json()["aftercare"]
    assert undo["reverts"] == change.pk and undo["reverted_by"] == []
    assert undo["revert_approval"]["payload"]["approved_by"] == ["bob"]
    assert undo["revert_approval"]["payload"]["reason"] == "checkout fails"
    assert undo["revert_approval"]["by"]["username"] == author.username
    # The printable page says it in words, linking both ways.
    page = evidence_page(auditor, revert)
    assert f"This change reverts <a href=\"../../{change.pk}/evidence/\">#{change.pk}</a>" in page
    assert f"one-person revert by {author.username}: checkout fails" in page
