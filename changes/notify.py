"""Alerts to people and systems: email through Django's backend and an optional
JSON webhook per target. Sent after the transaction commits, so nobody is told
about something that was rolled back; a failed delivery is logged, never raised
(the change itself already happened and is in the audit log)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import requests
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.mail import send_mail
from django.db import transaction
from guardian.shortcuts import get_users_with_perms

from .models import ChangeRequest, Target

logger = logging.getLogger(__name__)
WEBHOOK_TIMEOUT = 3.0


def reviewers_of(target: Target) -> list[AbstractBaseUser]:
    """Everyone with approve_change on the target, directly or through a group."""
    users = get_users_with_perms(target, only_with_perms_in=["approve_change"], with_group_users=True,
                                 with_superusers=False)
    return [user for user in users if user.is_active]


def alert(*, event: str, change: ChangeRequest, recipients: Iterable[AbstractBaseUser], detail: dict[str, Any]) -> None:
    """Queue an alert about `change` for after commit."""
    emails = sorted({user.email for user in recipients if user.email})
    payload = {
        "event": event,
        "change": change.pk,
        "title": change.title,
        "target": change.target.name,
        "state": change.state,
        "emergency": change.emergency,
        **detail,
    }
    webhook = change.target.webhook_url
    transaction.on_commit(lambda: _deliver(payload, emails, webhook))


def _deliver(payload: dict[str, Any], emails: list[str], webhook: str) -> None:
    subject = f"[changegate] {payload['event']}: change #{payload['change']} on {payload['target']}"
    body = "\n".join(f"{key}: {value}" for key, value in payload.items())
    if emails:
        try:
            send_mail(subject, body, getattr(settings, "DEFAULT_FROM_EMAIL", None), emails)
        except Exception:  # a mail server outage must not undo or hide the change
            logger.exception("alert email failed", extra={"change_id": payload["change"]})
    if webhook:
        try:
            requests.post(webhook, json=payload, timeout=WEBHOOK_TIMEOUT).raise_for_status()
        except requests.RequestException:
            logger.exception("alert webhook failed", extra={"change_id": payload["change"]})


def alert_target(*, event: str, target: Target, recipients: Iterable[AbstractBaseUser], detail: dict[str, Any]) -> None:
    """Queue an alert about `target` itself (no change request behind it, e.g. an
    out-of-band change) for after commit."""
    emails = sorted({user.email for user in recipients if user.email})
    payload = {"event": event, "target": target.name, **detail}
    webhook = target.webhook_url
    transaction.on_commit(lambda: _deliver_target(payload, emails, webhook))


def _deliver_target(payload: dict[str, Any], emails: list[str], webhook: str) -> None:
    subject = f"[changegate] {payload['event']} on {payload['target']}"
    body = "\n".join(f"{key}: {value}" for key, value in payload.items())
    if emails:
        try:
            send_mail(subject, body, getattr(settings, "DEFAULT_FROM_EMAIL", None), emails)
        except Exception:  # a mail server outage must not hide the event: it is in the audit log
            logger.exception("alert email failed", extra={"target": payload["target"]})
    if webhook:
        try:
            requests.post(webhook, json=payload, timeout=WEBHOOK_TIMEOUT).raise_for_status()
        except requests.RequestException:
            logger.exception("alert webhook failed", extra={"target": payload["target"]})
