"""Alerts as an outbox (pipeline.outbox): a webhook that fails is retried with
backoff and delivered once; one that always fails, and an email backend that
raises, end as dead letters (admin, audit event, /metrics); an overdue break-glass
review raises one alert. The retry path also runs through a real Celery worker and
a real redis-server, restarted empty."""

from __future__ import annotations

import json
import smtplib
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from guardian.shortcuts import assign_perm

from approvals.policy import change_emergency, emergency_review
from changes.models import AuditEvent, ChangeRequest
from changes.services import change_create, target_update_policy
from config.celery_app import app
from tests.factories import upsert
from tests.polling import wait_until as wait_for
from tests.processes import CeleryWorker, app_broker, point_app_at

# Real commits: notifications are delivered by on_commit hooks (eagerly in the test
# process, or by the real worker below), and each test follows several deliveries.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.named]
WWW = upsert("www", "192.0.2.77")
TOKEN = "s3cr3t-hook-token"


class Hook:
    """A local webhook receiver: answers each POST with the next status of its
    script for that event (then `then`), and records what it got."""

    def __init__(self, script: list[int] | None = None, *, then: int = 204, event: str = "emergency_change") -> None:
        self.script, self.then, self.event = list(script or []), then, event
        self.received: list[tuple[dict, int]] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with hook.lock:
                    status = hook.script.pop(0) if body.get("event") == hook.event and hook.script else hook.then
                    hook.received.append((body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        # The token is in the path and the query: neither may show anywhere.
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/{TOKEN}?key={TOKEN}"

    def statuses(self, event: str = "emergency_change") -> list[int]:
        with self.lock:
            return [status for body, status in self.received if body.get("event") == event]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook_factory():
    made: list[Hook] = []

    def make(*args, **kwargs) -> Hook:
        made.append(Hook(*args, **kwargs))
        return made[-1]

    yield make
    for hook in made:
        hook.close()


class FailingEmailBackend(BaseEmailBackend):
    """A mail server that hangs up on every message."""

    calls = 0

    def send_messages(self, messages) -> int:
        FailingEmailBackend.calls += 1
        raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")


@pytest.fixture
def on_call(author, dns_target):
    assign_perm("changes.emergency_change", author, dns_target)
    return author


@pytest.fixture
def quick_target(dns_target, staff):
    """No bake: a worker that applies the change is free again at once."""
    return target_update_policy(actor=staff, target=dns_target, bake_seconds=0)


def break_glass(author, target) -> ChangeRequest:
    draft = change_create(actor=author, target=target, title="outage fix", reason="pay down", items=WWW)
    return change_emergency(actor=author, change=draft, reason="card payments failing")


def with_webhook(staff, target, url: str):
    return target_update_policy(actor=staff, target=target, webhook_url=url)


def notifications(**filters):
    from changes.models import Notification

    return list(Notification.objects.filter(**filters).order_by("pk"))


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


def scrape(client: Client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


# ---------------------------------------------------------------------------
# Retries and dead letters (delivered in the test process: CHANGEGATE_NOTIFY_EAGER)


def test_a_webhook_that_fails_twice_is_retried_and_delivered_once(on_call, quick_target, staff, hook_factory,
                                                                   settings):
    hook = hook_factory([500, 503])
    target = with_webhook(staff, quick_target, hook.url)
    change = break_glass(on_call, target)
    assert hook.statuses() == [500, 503, 204]  # delivered once, on the third attempt
    (row,) = notifications(event="emergency_change", channel="webhook")
    assert (row.state, row.attempts, row.change_id, row.destination) == ("delivered", 3, change.pk, "127.0.0.1")
    assert row.delivered_at is not None and row.last_error == ""
    assert events("notification_failed") == []


def test_a_webhook_that_always_fails_is_dead_lettered_audited_and_counted(on_call, quick_target, staff, hook_factory,
                                                                          settings, client, caplog):
    settings.CHANGEGATE_NOTIFY_MAX_ATTEMPTS = 3
    hook = hook_factory(then=500, event="-")
    target = with_webhook(staff, quick_target, hook.url)
    change = break_glass(on_call, target)
    assert ChangeRequest.objects.get(pk=change.pk).state == ChangeRequest.State.APPROVED  # the change stands
    assert hook.statuses() == [500, 500, 500]
    (event,) = events("notification_failed")
    assert event.change_id == change.pk and event.outcome == "failed"
    assert event.payload["channel"] == "webhook" and event.payload["attempts"] == 3
    assert event.payload["error"] == "webhook at 127.0.0.1: HTTP 500"
    (row,) = notifications(channel="webhook")
    assert (row.state, row.dead_letters, row.last_error) == ("failed", 1, "webhook at 127.0.0.1: HTTP 500")
    text = scrape(client)
    assert 'changegate_notifications_failed_total{channel="webhook"} 1' in text
    assert "changegate_notifications_dead_letters 1" in text
    # The URL's token is nowhere: not in the event, the row's shown fields, the logs or the metrics.
    assert TOKEN not in event.canonical_text and TOKEN not in caplog.text and TOKEN not in text


def test_an_email_backend_that_raises_ends_in_a_dead_letter(on_call, quick_target, reviewer, settings, client):
    settings.EMAIL_BACKEND = f"{__name__}.FailingEmailBackend"
    settings.CHANGEGATE_NOTIFY_MAX_ATTEMPTS = 4
    FailingEmailBackend.calls = 0
    reviewer.email = "bob@example.test"
    reviewer.save()
    change = break_glass(on_call, quick_target)
    assert FailingEmailBackend.calls == 4
    (row,) = notifications(channel="email")
    assert (row.state, row.attempts, row.recipients) == ("failed", 4, ["bob@example.test"])
    assert row.last_error == "email: SMTPServerDisconnected"
    (event,) = events("notification_failed")
    assert event.change_id == change.pk and event.payload["destination"] == "1 recipient(s)"
    assert "bob@example.test" not in event.canonical_text
    assert 'changegate_notifications_failed_total{channel="email"} 1' in scrape(client)


def test_delivered_means_the_mail_backend_took_it(on_call, quick_target, reviewer):
    reviewer.email = "bob@example.test"
    reviewer.save()
    break_glass(on_call, quick_target)
    (message,) = mail.outbox
    assert message.to == ["bob@example.test"]
    (row,) = notifications(channel="email")
    assert (row.state, row.attempts) == ("delivered", 1)


def test_a_second_message_for_the_same_attempt_sends_nothing(on_call, quick_target, reviewer, settings):
    from pipeline.outbox import notification_deliver

    settings.CHANGEGATE_NOTIFY_EAGER = False  # the wake-up goes to the (in-memory) broker; deliver by hand
    reviewer.email = "bob@example.test"
    reviewer.save()
    break_glass(on_call, quick_target)
    (row,) = notifications(channel="email")
    assert notification_deliver(notification_id=row.pk, attempt=1) == "delivered"
    assert notification_deliver(notification_id=row.pk, attempt=1) == "skipped"  # the sweep's or a redelivery
    assert len(mail.outbox) == 1


def test_a_failed_attempt_waits_for_its_backoff_and_the_sweep_publishes_it_when_due(on_call, quick_target, reviewer,
                                                                                    settings):
    from pipeline.outbox import notification_deliver, notification_sweep

    settings.CHANGEGATE_NOTIFY_EAGER = False
    settings.CHANGEGATE_NOTIFY_BACKOFF_SECONDS = 30
    settings.CHANGEGATE_NOTIFY_UNCLAIMED_AFTER_SECONDS = 10
    settings.EMAIL_BACKEND = f"{__name__}.FailingEmailBackend"
    reviewer.email = "bob@example.test"
    reviewer.save()
    break_glass(on_call, quick_target)
    (row,) = notifications(channel="email")
    now = timezone.now()
    assert notification_sweep(now=now + timedelta(seconds=11)) == [row.pk]  # its wake-up never arrived
    assert notification_deliver(notification_id=row.pk, attempt=1) == "retry"
    (row,) = notifications(channel="email")
    assert 29 <= (row.next_attempt_at - now).total_seconds() <= 31 + 5  # backoff * 2^0
    assert notification_sweep(now=now + timedelta(seconds=35)) == []  # due, but its countdown message may still come
    assert notification_sweep(now=now + timedelta(seconds=45)) == [row.pk]
    settings.CHANGEGATE_NOTIFY_BACKOFF_SECONDS = 7
    from pipeline.outbox import backoff_seconds

    assert [backoff_seconds(n) for n in (1, 2, 3)] == [7, 14, 28]


# ---------------------------------------------------------------------------
# The admin: dead letters, and retry


def browser(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get(reverse("admin:index"))
    return client


def test_operator_sees_dead_letters_and_retries_them_through_the_admin(on_call, quick_target, staff, hook_factory,
                                                                       settings, client):
    settings.CHANGEGATE_NOTIFY_MAX_ATTEMPTS = 2
    hook = hook_factory([500, 500])
    target = with_webhook(staff, quick_target, hook.url)
    break_glass(on_call, target)
    (row,) = notifications(channel="webhook")
    assert row.state == "failed"
    browser_ = browser(staff)
    listing = browser_.get(reverse("admin:changes_notification_changelist"), {"state__exact": "failed"})
    assert listing.status_code == 200
    page = listing.content.decode()
    assert "emergency_change" in page and "webhook at 127.0.0.1: HTTP 500" in page and TOKEN not in page
    detail = browser_.get(reverse("admin:changes_notification_change", args=[row.pk]))
    assert detail.status_code == 200 and TOKEN not in detail.content.decode()
    response = browser_.post(reverse("admin:changes_notification_changelist"), {
        "csrfmiddlewaretoken": browser_.cookies["csrftoken"].value, "action": "retry",
        "_selected_action": [row.pk]})
    assert response.status_code == 302
    (row,) = notifications(channel="webhook")
    assert (row.state, row.dead_letters) == ("delivered", 1)  # the hook accepts now
    assert hook.statuses() == [500, 500, 204]
    (retried,) = events("notification_retried")
    assert retried.actor_id == staff.pk and retried.origin == "admin"
    assert 'changegate_notifications_failed_total{channel="webhook"} 1' in scrape(client)  # a counter stays
    assert "changegate_notifications_dead_letters 0" in scrape(client)


def test_retrying_a_delivered_notification_is_refused_with_a_message(on_call, quick_target, reviewer, staff):
    reviewer.email = "bob@example.test"
    reviewer.save()
    break_glass(on_call, quick_target)
    (row,) = notifications(channel="email")
    browser_ = browser(staff)
    response = browser_.post(reverse("admin:changes_notification_changelist"), {
        "csrfmiddlewaretoken": browser_.cookies["csrftoken"].value, "action": "retry",
        "_selected_action": [row.pk]}, follow=True)
    assert response.status_code == 200
    assert "only a dead letter is retried" in response.content.decode()
    assert len(mail.outbox) == 1 and events("notification_retried") == []


def test_staff_without_the_operator_role_sees_no_notifications(plain_staff, db):
    browser_ = browser(plain_staff)
    assert browser_.get(reverse("admin:changes_notification_changelist")).status_code == 403


# ---------------------------------------------------------------------------
# Overdue break-glass reviews


def test_an_overdue_break_glass_review_alerts_reviewers_and_operators_once(on_call, quick_target, reviewer, staff,
                                                                           client, settings):
    from pipeline.tasks import sweep_notifications

    assert settings.CELERY_BEAT_SCHEDULE["sweep-notifications"]["task"] == sweep_notifications.name
    reviewer.email, staff.email = "bob@example.test", "ops@example.test"
    reviewer.save()
    staff.save()
    change = break_glass(on_call, quick_target)
    mail.outbox.clear()
    sweep_notifications()
    assert events("emergency_review_overdue") == [] and mail.outbox == []
    assert "changegate_emergency_reviews_overdue 0" in scrape(client)
    later = timezone.now() + timedelta(hours=quick_target.emergency_review_hours, minutes=1)
    with mock.patch("django.utils.timezone.now", return_value=later):
        sweep_notifications()
        sweep_notifications()  # the next beat: nothing new
        assert "changegate_emergency_reviews_overdue 1" in scrape(client)
    (event,) = events("emergency_review_overdue")
    assert event.change_id == change.pk and event.payload["review_hours"] == quick_target.emergency_review_hours
    (message,) = mail.outbox
    assert "emergency_review_overdue" in message.subject
    assert sorted(message.to) == ["bob@example.test", "ops@example.test"]
    emergency_review(actor=reviewer, change=change, comment="matches the incident")
    with mock.patch("django.utils.timezone.now", return_value=later):
        assert "changegate_emergency_reviews_overdue 0" in scrape(client)


# ---------------------------------------------------------------------------
# Through a real worker and a real redis-server


@pytest.fixture
def broker():
    with app_broker(app) as server:  # point_app_at also drops CELERY_BROKER_URL from the environment
        yield server


@pytest.fixture
def start_worker(broker):
    started: list[CeleryWorker] = []

    def start() -> CeleryWorker:
        env = {"CHANGEGATE_NOTIFY_EAGER": "false", "CHANGEGATE_NOTIFY_BACKOFF_SECONDS": "1"}
        started.append(CeleryWorker(broker.url, name=f"n{len(started) + 1}", env=env).start())
        started[-1].wait_ready(app)
        return started[-1]

    yield start
    for worker in started:
        worker.stop()


def test_the_worker_retries_a_failing_webhook_with_backoff_and_delivers_it_once(
        on_call, quick_target, staff, hook_factory, broker, start_worker, settings):
    settings.CHANGEGATE_NOTIFY_EAGER = False
    start_worker()
    hook = hook_factory([500, 502])
    target = with_webhook(staff, quick_target, hook.url)
    change = break_glass(on_call, target)
    wait_for(lambda: hook.statuses() == [500, 502, 204], "the third attempt")
    wait_for(lambda: notifications(event="emergency_change")[0].state == "delivered", "the row to say delivered")
    (row,) = notifications(event="emergency_change")
    assert (row.attempts, row.change_id) == (3, change.pk)
    # Backoff 1 s then 2 s: the attempts were spread over at least 3 s, not fired at once.
    assert (row.delivered_at - row.created_at).total_seconds() >= 3


def test_an_alert_survives_redis_restarted_empty(on_call, quick_target, staff, hook_factory, broker, start_worker,
                                                 settings):
    from pipeline.outbox import notification_sweep

    settings.CHANGEGATE_NOTIFY_EAGER = False
    settings.CHANGEGATE_NOTIFY_UNCLAIMED_AFTER_SECONDS = 0
    hook = hook_factory()
    target = with_webhook(staff, quick_target, hook.url)
    break_glass(on_call, target)  # published to Redis; no worker is running yet
    broker.restart_empty()
    point_app_at(app, broker.url)
    start_worker()
    assert notification_sweep() == [notifications(event="emergency_change")[0].pk]  # what beat does
    wait_for(lambda: hook.statuses() == [204], "the delivery")
    wait_for(lambda: notifications(event="emergency_change")[0].state == "delivered", "the row to say delivered")


# ---------------------------------------------------------------------------
# What an alert says (issue 15): a one-line summary and a link, readable without the admin


def test_an_alert_mail_leads_with_a_summary_and_a_link_to_the_change(on_call, quick_target, reviewer, settings):
    settings.CHANGEGATE_PUBLIC_URL = "https://changegate.example.test/"
    reviewer.email = "bob@example.test"
    reviewer.save()
    change = break_glass(on_call, quick_target)
    (message,) = mail.outbox
    first, link, blank, *rest = message.body.splitlines()
    assert first.startswith(f"Change #{change.pk} \"{change.title}\" on {quick_target.name}: emergency change")
    assert link == f"https://changegate.example.test/admin/changes/changerequest/{change.pk}/change/"
    assert blank == ""
    assert f"change: {change.pk}" in rest
    assert not any("{'" in line for line in rest), "nested values are JSON, not Python's repr"
    (row,) = notifications(channel="email")
    assert row.payload["link"] == link and row.payload["summary"] == first


def test_without_a_public_url_an_alert_has_no_link(on_call, quick_target, reviewer):
    reviewer.email = "bob@example.test"
    reviewer.save()
    break_glass(on_call, quick_target)
    (message,) = mail.outbox
    assert "http" not in message.body.splitlines()[1]
    (row,) = notifications(channel="email")
    assert row.payload["link"] == ""


@pytest.mark.parametrize(("detail", "why"), [
    ({"failed_checks": [{"name": "tcp 10.0.0.5:443", "detail": "connection refused"},
                        {"name": "http https://x/", "detail": "HTTP 500"}]},
     "(check tcp 10.0.0.5:443 failed: connection refused (+1 more))"),
    ({"moved": {"www A": {}, "mx MX": {}}}, "(2 key(s) changed outside changegate since approval: www A, mx MX)"),
    ({"reverted_by_target": "revert timer fired"}, "(the target reverted it: revert timer fired)"),
    ({"result": {}, "because": {"failed_checks": [{"name": "tcp 10.0.0.5:443", "detail": "timed out"}], "round": 3}},
     "(check tcp 10.0.0.5:443 failed in round 3: timed out)"),
    ({"error": "rollback did not verify", "because": {"reverted_by_target": "x"}}, "(rollback did not verify)"),
    ({"error": "NOTAUTH"}, "(NOTAUTH)"),
    ({}, None),
])
def test_the_summary_says_why(detail, why, on_call, quick_target):
    from pipeline.outbox import alert_summary

    change = break_glass(on_call, quick_target)
    line = alert_summary("rolled_back", change, detail)
    assert line.startswith(f"Change #{change.pk} \"{change.title}\" on {quick_target.name}: rolled back")
    assert line.endswith(why) if why else line.endswith("rolled back")
