"""Alerts to people and systems: email through Django's backend and an optional
JSON webhook per target, as an outbox.

`alert`/`alert_target` write one `Notification` row per channel and recipient set
in the caller's transaction (nobody is told about something that was rolled back,
and nothing is lost between commit and delivery), then publish a Celery task after
commit. The task makes one attempt; a failed attempt is retried with exponential
backoff up to CHANGEGATE_NOTIFY_MAX_ATTEMPTS, then the row is dead-lettered (state
failed, an audit event `notification_failed`, counted in /metrics, retried by hand
from the admin). Redis is only the wake-up: `notification_sweep` re-publishes due
rows nobody picked up, so a broker restarted empty delays an alert, never drops it.

A row is `delivered` only after the mail backend accepted the message or the
webhook itself answered 2xx. Errors never carry the webhook URL (it may hold a
token): only its host.

Each message carries the attempt number it is for, and an attempt starts with a
conditional UPDATE on (state, attempts, claim): a duplicate message (the sweep and
a late countdown both publishing, Redis redelivering) finds the attempt taken and
does nothing. A worker that dies mid-attempt loses its claim after
CHANGEGATE_NOTIFY_CLAIM_SECONDS and the sweep publishes the next attempt. Delivery
is therefore at least once: a worker killed between the send and the UPDATE that
records it sends again.

Lock order: the notification row, then the audit chain head (dead letter, retry).
"""

from __future__ import annotations

import json
import logging
import smtplib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.mail import get_connection, send_mail
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone
from guardian.shortcuts import get_users_with_perms

from audit.chain import SYSTEM, RequestOrigin, audit_record
from changes.errors import InvalidTransition
from changes.lifecycle import lock_change
from changes.models import AuditEvent, ChangeRequest, Notification, Target
from changes.selectors import emergency_overdue
from pipeline.publish import DELIVER_NOTIFICATION, task_publish

logger = logging.getLogger(__name__)
Channel, NState = Notification.Channel, Notification.State


class DeliveryFailed(Exception):
    """One attempt did not deliver; the message is safe to store and show (no URL, no secret)."""


def reviewers_of(target: Target) -> list[AbstractBaseUser]:
    """Everyone with approve_change on the target, directly or through a group."""
    users = get_users_with_perms(target, only_with_perms_in=["approve_change"], with_group_users=True,
                                 with_superusers=False)
    return [user for user in users if user.is_active]


def operators() -> list[AbstractBaseUser]:
    """Every active operator (the model-wide changes.operate_targets, directly or
    through a group; superusers hold every permission), as `permissions.is_operator`."""
    users = get_user_model().objects.with_perm("changes.operate_targets", is_active=True, include_superusers=True,
                                               backend="django.contrib.auth.backends.ModelBackend")
    return list(users)


# ---------------------------------------------------------------------------
# Raising alerts (in the caller's transaction)


def change_link(change_id: int) -> str:
    """The change's page for people ("" when CHANGEGATE_PUBLIC_URL is not set: a
    link to the wrong host is worse than none)."""
    base = settings.CHANGEGATE_PUBLIC_URL
    return f"{base.rstrip('/')}/admin/changes/changerequest/{change_id}/change/" if base else ""


def _why(detail: dict[str, Any]) -> str:
    """What went wrong, in one clause, from what the pipeline put in the event (a
    rollback's end carries its cause under "because")."""
    if detail.get("because") and not detail.get("error"):
        return _why(detail["because"])
    failed = detail.get("failed_checks")
    if failed:
        first = failed[0]
        more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
        where = f" in round {detail['round']}" if detail.get("round") else ""
        return f"check {first.get('name', '?')} failed{where}: {first.get('detail', '')}{more}".rstrip(": ")
    if detail.get("reverted_by_target"):
        return f"the target reverted it: {detail['reverted_by_target']}"
    if detail.get("moved"):
        moved = detail["moved"]
        keys = ", ".join(str(k) for k in list(moved)[:3]) + (", ..." if len(moved) > 3 else "")
        return f"{len(moved)} key(s) changed outside changegate since approval: {keys}"
    if detail.get("error"):
        return str(detail["error"])
    if detail.get("runs_at") is not None and detail.get("reason"):
        return str(detail["reason"])  # waiting for the change window: the reason says when it runs
    return ""


def alert_summary(event: str, change: ChangeRequest, detail: dict[str, Any]) -> str:
    """One line a person can act on without opening anything."""
    what = event.replace("_", " ")
    line = f"Change #{change.pk} \"{change.title}\" on {change.target.name}: {what}"
    why = _why(detail)
    return f"{line} ({why})" if why else line


def alert(*, event: str, change: ChangeRequest, recipients: Iterable[AbstractBaseUser],
          detail: dict[str, Any]) -> list[Notification]:
    """Queue an alert about `change`: outbox rows now, delivery after commit."""
    payload = {
        "event": event,
        "summary": alert_summary(event, change, detail),
        "change": change.pk,
        "link": change_link(change.pk),
        "title": change.title,
        "target": change.target.name,
        "state": change.state,
        "emergency": change.emergency,
        **detail,
    }
    subject = f"[changegate] {event}: change #{change.pk} on {change.target.name}"
    return _enqueue(event=event, change=change, target=change.target, recipients=recipients, subject=subject,
                    payload=payload)


def alert_target(*, event: str, target: Target, recipients: Iterable[AbstractBaseUser],
                 detail: dict[str, Any]) -> list[Notification]:
    """Queue an alert about `target` itself (no change request behind it, e.g. an
    out-of-band change): outbox rows now, delivery after commit."""
    payload = {"event": event, "target": target.name, **detail}
    return _enqueue(event=event, change=None, target=target, recipients=recipients,
                    subject=f"[changegate] {event} on {target.name}", payload=payload)


def _enqueue(*, event: str, change: ChangeRequest | None, target: Target, recipients: Iterable[AbstractBaseUser],
             subject: str, payload: dict[str, Any]) -> list[Notification]:
    emails = sorted({user.email for user in recipients if user.email})
    now = timezone.now()
    common = {"event": event[:64], "change": change, "target": target, "subject": subject[:300], "payload": payload,
              "next_attempt_at": now}
    rows = []
    if emails:
        rows.append(Notification(channel=Channel.EMAIL, recipients=emails, destination=f"{len(emails)} recipient(s)",
                                 **common))
    if target.webhook_url:
        rows.append(Notification(channel=Channel.WEBHOOK, webhook_url=target.webhook_url,
                                 destination=webhook_host(target.webhook_url), **common))
    for row in rows:
        row.save()
        transaction.on_commit(lambda pk=row.pk: publish(pk, attempt=1))
    return rows


def webhook_host(url: str) -> str:
    """What may be shown of a webhook URL: its host (the path or query may carry a token)."""
    try:
        return urlsplit(url).hostname or "the webhook"
    except ValueError:
        return "the webhook"


# ---------------------------------------------------------------------------
# Delivery (the Celery task's body)


def publish(notification_id: int, *, attempt: int, countdown: float = 0) -> None:
    """Wake a worker for `attempt` of the notification. A broker outage is logged,
    not raised: the row is the truth and the sweep publishes it again."""
    if settings.CHANGEGATE_NOTIFY_EAGER:
        # Celery's eager mode for this task only (the test settings): run it here, now.
        task_publish(DELIVER_NOTIFICATION, notification_id, attempt, eager=True)
        return
    try:
        task_publish(DELIVER_NOTIFICATION, notification_id, attempt, countdown=countdown)
    except Exception:  # kombu/redis errors of every kind; the row is the truth
        logger.warning("could not publish notification %s; the sweep will", notification_id, exc_info=True)


def backoff_seconds(attempt: int) -> int:
    """Delay before the attempt after failed attempt number `attempt` (1-based)."""
    base = int(settings.CHANGEGATE_NOTIFY_BACKOFF_SECONDS)
    return min(base * 2 ** (attempt - 1), int(settings.CHANGEGATE_NOTIFY_BACKOFF_MAX_SECONDS))


def notification_deliver(*, notification_id: int, attempt: int) -> str:
    """Make attempt number `attempt` at delivering the notification. Returns what
    happened: delivered, retry, failed, or skipped (the attempt is not due, or
    someone else took it or finished the row). Never raises for a failed delivery."""
    now = timezone.now()
    # The claim: attempt n starts only on a pending row that has had n-1 attempts and
    # no attempt in flight. One UPDATE, so two messages for the same attempt (sweep
    # plus a late countdown, a redelivery) cannot both send.
    claimed = (Notification.objects
               .filter(pk=notification_id, state=NState.PENDING, attempts=attempt - 1)
               .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
               .update(attempts=attempt, claimed_until=now + timedelta(seconds=settings.CHANGEGATE_NOTIFY_CLAIM_SECONDS)))
    if not claimed:
        return "skipped"
    notification = Notification.objects.get(pk=notification_id)
    try:
        _send(notification)
    except DeliveryFailed as exc:
        return _attempt_failed(notification, attempt=attempt, error=str(exc))
    except Exception as exc:  # a bug or an unforeseen library error must not leave the row claimed forever
        # The class only: a message or traceback may quote the webhook URL and its token.
        logger.error("notification %s: unexpected %s", notification_id, type(exc).__name__)
        return _attempt_failed(notification, attempt=attempt, error=f"{notification.channel}: {type(exc).__name__}")
    # Delivered wins over a lapsed claim: the message did go out.
    Notification.objects.filter(pk=notification_id, state=NState.PENDING).update(
        state=NState.DELIVERED, delivered_at=timezone.now(), claimed_until=None, last_error="")
    return "delivered"


def _send(notification: Notification) -> None:
    if notification.channel == Channel.EMAIL:
        _send_email(notification)
    else:
        _send_webhook(notification)


def _send_email(notification: Notification) -> None:
    body = email_body(notification.payload)
    timeout = getattr(settings, "EMAIL_TIMEOUT", None) or settings.CHANGEGATE_NOTIFY_TIMEOUT_SECONDS
    try:
        sent = send_mail(notification.subject, body, getattr(settings, "DEFAULT_FROM_EMAIL", None),
                         list(notification.recipients), connection=get_connection(timeout=timeout))
    except smtplib.SMTPResponseException as exc:
        raise DeliveryFailed(f"email: SMTP {exc.smtp_code}") from None
    except smtplib.SMTPRecipientsRefused:
        raise DeliveryFailed("email: every recipient refused") from None
    except OSError as exc:  # socket errors, smtplib's SMTPException included
        raise DeliveryFailed(f"email: {type(exc).__name__}" + (f" ({exc.strerror})" if exc.strerror else "")) from None
    except Exception as exc:  # whatever a mail backend raises
        raise DeliveryFailed(f"email: {type(exc).__name__}") from None
    if sent < 1:
        raise DeliveryFailed("email: the mail backend sent nothing")


def email_body(payload: dict[str, Any]) -> str:
    """The summary and the link first, then every field; nested values as indented
    JSON (not Python's repr), so the mail reads without the admin."""
    head = [payload[k] for k in ("summary", "link") if payload.get(k)]
    rest = []
    for key, value in payload.items():
        if key in {"summary", "link"}:
            continue
        text = json.dumps(value, indent=2, sort_keys=True, default=str) if isinstance(value, dict | list) else value
        rest.append(f"{key}: {text}")
    return "\n".join([*head, "", *rest] if head else rest)


def _send_webhook(notification: Notification) -> None:
    where = notification.destination or "the webhook"
    try:
        # No redirects: delivered means this URL answered 2xx (a redirected POST
        # turns into a GET somewhere else).
        response = requests.post(notification.webhook_url, json=notification.payload,
                                 timeout=settings.CHANGEGATE_NOTIFY_TIMEOUT_SECONDS, allow_redirects=False)
    except requests.Timeout:
        raise DeliveryFailed(f"webhook at {where}: timed out") from None
    except requests.ConnectionError:
        raise DeliveryFailed(f"webhook at {where}: connection failed") from None
    except requests.RequestException as exc:  # the message may quote the URL: only the class
        raise DeliveryFailed(f"webhook at {where}: {type(exc).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise DeliveryFailed(f"webhook at {where}: HTTP {response.status_code}")


def _attempt_failed(notification: Notification, *, attempt: int, error: str) -> str:
    now = timezone.now()
    logger.warning("notification %s (%s to %s) attempt %s failed: %s", notification.pk, notification.channel,
                   notification.destination, attempt, error)
    if attempt < settings.CHANGEGATE_NOTIFY_MAX_ATTEMPTS:
        delay = backoff_seconds(attempt)
        # Conditional on our attempt: if the claim lapsed and another attempt began, it owns the row.
        moved = Notification.objects.filter(pk=notification.pk, state=NState.PENDING, attempts=attempt).update(
            claimed_until=None, last_error=error, next_attempt_at=now + timedelta(seconds=delay))
        if moved:
            publish(notification.pk, attempt=attempt + 1, countdown=delay)
        return "retry"
    _dead_letter(notification.pk, attempts=attempt, error=error)
    return "failed"


def _dead_letter(notification_id: int, *, attempts: int, error: str) -> bool:
    """Move the row to failed and audit it, once (the conditional UPDATE decides who)."""
    with transaction.atomic():
        moved = Notification.objects.filter(pk=notification_id, state=NState.PENDING, attempts=attempts).update(
            state=NState.FAILED, failed_at=timezone.now(), claimed_until=None, last_error=error,
            dead_letters=F("dead_letters") + 1)
        if not moved:
            return False
        notification = Notification.objects.select_related("change", "target").get(pk=notification_id)
        audit_record(actor=None, origin=SYSTEM, action="notification_failed", target=notification.target,
                     change=notification.change, outcome=NState.FAILED,
                     payload={"notification": notification.pk, "event": notification.event,
                              "channel": notification.channel, "destination": notification.destination,
                              "attempts": attempts, "error": error})
    return True


# ---------------------------------------------------------------------------
# The sweep (Celery beat) and the admin's retry


def notification_sweep(*, now: datetime | None = None) -> list[int]:
    """Publish again every pending notification whose attempt is due and nobody
    picked up (the wake-up was lost, e.g. Redis restarted empty) or whose worker
    died mid-attempt; dead-letter those that died on their last attempt. Returns
    the ids published."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.CHANGEGATE_NOTIFY_UNCLAIMED_AFTER_SECONDS)
    rows = (Notification.objects.filter(state=NState.PENDING, next_attempt_at__lte=stale)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
            .order_by("next_attempt_at").values_list("pk", "attempts", "claimed_until")[:1000])
    published = []
    for pk, attempts, claimed_until in rows:
        if attempts >= settings.CHANGEGATE_NOTIFY_MAX_ATTEMPTS:
            # Its last attempt never reported back: nobody knows it was delivered.
            _dead_letter(pk, attempts=attempts, error="the worker was lost during the last attempt")
            continue
        publish(pk, attempt=attempts + 1)
        published.append(pk)
    return published


def notification_retry(*, actor: AbstractBaseUser, notification: Notification, origin: RequestOrigin) -> Notification:
    """Give a dead-lettered notification a fresh budget of attempts, audited, and
    publish it after commit. Raises InvalidTransition unless it is failed.
    Operators only (the admin page is theirs; the caller checks)."""
    with transaction.atomic():
        moved = Notification.objects.filter(pk=notification.pk, state=NState.FAILED).update(
            state=NState.PENDING, attempts=0, claimed_until=None, next_attempt_at=timezone.now(), failed_at=None)
        if not moved:
            raise InvalidTransition(f"notification #{notification.pk} is not failed; only a dead letter is retried")
        row = Notification.objects.select_related("change", "target").get(pk=notification.pk)
        audit_record(actor=actor, origin=origin, action="notification_retried", target=row.target, change=row.change,
                     payload={"notification": row.pk, "event": row.event, "channel": row.channel,
                              "destination": row.destination, "last_error": row.last_error})
        transaction.on_commit(lambda: publish(row.pk, attempt=1))
    return row


# ---------------------------------------------------------------------------
# Alerts raised by time passing


def emergency_reviews_overdue_alert(*, now: datetime | None = None) -> list[int]:
    """Alert the reviewers and operators of the target, once per change, about
    every break-glass change whose after-the-fact review is overdue (an audit event
    `emergency_review_overdue` marks it raised). Returns the change ids alerted."""

    raised = AuditEvent.objects.filter(change=OuterRef("pk"), action="emergency_review_overdue")
    candidates = (ChangeRequest.objects.filter(emergency=True, emergency_reviewed_at__isnull=True,
                                               emergency_at__isnull=False)
                  .exclude(Exists(raised)).select_related("target").order_by("emergency_at"))
    alerted = []
    for change in candidates:
        if not emergency_overdue(change, now=now):
            continue
        with transaction.atomic():
            # Under the change's row lock, so two sweeps at once raise it once.
            locked = lock_change(change)
            if not emergency_overdue(locked, now=now) or AuditEvent.objects.filter(
                    change=locked, action="emergency_review_overdue").exists():
                continue
            hours = locked.target.emergency_review_hours
            detail = {"emergency_at": locked.emergency_at.isoformat(), "review_hours": hours,
                      "emergency_by": locked.emergency_by.get_username() if locked.emergency_by else ""}
            audit_record(actor=None, origin=SYSTEM, action="emergency_review_overdue", change=locked,
                         outcome="overdue", payload=detail)
            alert(event="emergency_review_overdue", change=locked,
                  recipients=[*reviewers_of(locked.target), *operators()], detail=detail)
        alerted.append(change.pk)
    return alerted
