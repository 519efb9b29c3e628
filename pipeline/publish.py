"""Wake a worker by task name. The services, the policy and the outbox publish
through here, never by importing `pipeline.tasks`: the task module imports the
domain, and publishing must not import it back (no import circle).

The names are the wire protocol between web and worker (queued messages carry
them across a deploy), so they keep their historical `changes.` prefix."""

from __future__ import annotations

from typing import Any

from config.celery_app import app

APPLY_CHANGE = "changes.apply_change"
DELIVER_NOTIFICATION = "changes.deliver_notification"


def task_publish(name: str, *args: Any, countdown: float = 0, eager: bool = False) -> None:
    """Send task `name` to the broker, or with `eager` run it here and now (the
    countdown is ignored, as Celery's task_always_eager does). Raises whatever the
    broker raises: callers decide whether the row they wrote is the truth."""
    if eager:
        app.tasks[name].apply(args)
        return
    app.send_task(name, args=args, countdown=countdown or None)
