"""What the target_add_* commands share (Django skips this module as a command: its
name starts with an underscore): registering through the one service as the OS user
at the shell, and turning a refusal into a CommandError that names every field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.chain import RequestOrigin
from changes.errors import ServiceError, ValidationFailed
from changes.models import Origin, Target
from changes.services import target_register


def register_or_fail(command: BaseCommand, *, name: str, label: Callable[[str], str] = str, **kwargs: Any) -> Target:
    """target_register(actor=None, origin=CLI, ...); `label` names a refused field the
    way the command's user typed it (e.g. "ssh_key_file (--ssh-key-file)")."""
    try:
        target = target_register(actor=None, name=name, origin=RequestOrigin(kind=Origin.CLI), **kwargs)
    except ValidationFailed as exc:
        lines = "\n".join(f"  {label(e['field'])}: {e['message']}" for e in exc.errors)
        raise CommandError(f"target {name} not registered:\n{lines}") from None
    except ServiceError as exc:  # TargetUnavailable; NotPermitted cannot happen without an actor
        raise CommandError(f"target {name} not registered: {exc.message}") from None
    command.stdout.write(command.style.SUCCESS(f"Registered target {target.name} (id {target.pk})"))
    return target
