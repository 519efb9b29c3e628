"""The discussion on a change (issue 15): comments from its author and reviewers,
each an audit event (`comment_added`) written in the comment's transaction, with
@mentions alerted by email through the outbox.

Who may comment is who may see the change: the same rule, the same function
(`selectors.access_change`) the API reads a change with, so a change you cannot see
answers 404 here too. A mention reaches only someone who may see the change by that
same rule; any other name (unknown, inactive, or without a role on the target) is
left out and returned as `mentions_ignored`, all alike, so a comment never tells its
author whether a username exists.

Append-only in this step: there is no edit or delete.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.http import Http404

from audit.chain import SYSTEM, RequestOrigin, audit_record
from changes.errors import ValidationFailed
from changes.models import COMMENT_BODY_MAX, ChangeComment, ChangeRequest
from changes.selectors import access_change
from pipeline.outbox import alert

# `@name`, where name is what Django's username validator allows (letters, digits,
# `.@+-_`), not preceded by one of those (so `ops@example.org` mentions nobody).
MENTION = re.compile(r"(?<![\w.@+-])@([\w.@+-]+)")
# Distinct names resolved per comment: each costs a permission lookup, and a
# comment is not a mailing list. Names past it are ignored (and said so).
MENTIONS_MAX = 20
# What of the body an alert carries (the whole comment is one click away).
ALERT_BODY_MAX = 500


def mentioned_names(body: str) -> list[str]:
    """The distinct @names in `body`, in order of first appearance. A trailing dot
    ends the sentence, not the name ("thanks @bob.")."""
    names: list[str] = []
    for match in MENTION.finditer(body):
        name = match.group(1).rstrip(".")
        if name and name not in names:
            names.append(name)
    return names


def _validate_body(body: Any) -> str:
    if not isinstance(body, str):
        raise ValidationFailed([{"index": None, "field": "body", "message": "the comment must be text"}])
    text = body.strip()
    if not text:
        raise ValidationFailed([{"index": None, "field": "body", "message": "the comment is empty"}])
    if len(text) > COMMENT_BODY_MAX:
        raise ValidationFailed([{"index": None, "field": "body",
                                 "message": f"at most {COMMENT_BODY_MAX} characters (this has {len(text)})"}])
    if "\x00" in text:  # PostgreSQL refuses NUL in text
        raise ValidationFailed([{"index": None, "field": "body", "message": "the comment contains a NUL character"}])
    return text


def _may_see(user: AbstractBaseUser, change: ChangeRequest) -> bool:
    try:
        access_change(user=user, pk=change.pk)
    except Http404:
        return False
    return True


def _resolve_mentions(names: list[str], change: ChangeRequest) -> tuple[list[AbstractBaseUser], list[str]]:
    """(users who may see the change, names ignored), each in the body's order. An
    unknown name and a known one without access are ignored alike."""
    user_model = get_user_model()
    considered = names[:MENTIONS_MAX]
    found = {user.get_username(): user
             for user in user_model.objects.filter(**{f"{user_model.USERNAME_FIELD}__in": considered})}
    reached: list[AbstractBaseUser] = []
    ignored: list[str] = []
    for name in names:
        user = found.get(name) if name in considered else None
        if user is not None and _may_see(user, change):
            reached.append(user)
        else:
            ignored.append(name)
    return reached, ignored


def comment_add(*, actor: AbstractBaseUser, change: ChangeRequest, body: Any,
                origin: RequestOrigin = SYSTEM) -> ChangeComment:
    """Add `actor`'s comment to `change`, audited as `comment_added` (comment id,
    body, mentions) in the same transaction; every mentioned user who may see the
    change (but the author of the comment) gets a `comment_mention` email alert,
    queued in that transaction and sent after commit. Raises Http404 when `actor`
    may not see the change, ValidationFailed naming `body` for an empty, too long or
    non-text body; stores nothing then. The returned comment carries
    `mentions_ignored`: the names that reached nobody."""
    change = access_change(user=actor, pk=change.pk)  # who you are before what you wrote
    text = _validate_body(body)
    reached, ignored = _resolve_mentions(mentioned_names(text), change)
    mentions = [user.get_username() for user in reached]
    with transaction.atomic():
        comment = ChangeComment.objects.create(change=change, author=actor, body=text, mentions=mentions)
        audit_record(actor=actor, origin=origin, action="comment_added", change=change,
                     payload={"comment": comment.pk, "body": text, "mentions": mentions})
        recipients = [user for user in reached if user.pk != actor.pk]
        if recipients:
            alert(event="comment_mention", change=change, recipients=recipients,
                  detail={"comment": comment.pk, "by": actor.get_username(), "body": text[:ALERT_BODY_MAX]})
    comment.mentions_ignored = ignored  # type: ignore[attr-defined]  # for the author's answer only, not stored
    return comment
