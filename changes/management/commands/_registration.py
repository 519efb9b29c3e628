"""What the target_add_* commands share (Django skips this module as a command: its
name starts with an underscore): registering through the one service as the OS user
at the shell, and turning a refusal into a CommandError that names every field."""

from __future__ import annotations

import argparse
import json
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


def add_watch_arguments(parser: argparse.ArgumentParser) -> None:
    """The watch window and change windows, the same for every kind."""
    parser.add_argument("--watch-seconds", type=int, metavar="S",
                        help="how long checks keep running after the bake (default: as long as the bake; 0: none)")
    parser.add_argument("--watch-interval", type=int, default=30, metavar="S",
                        help="seconds between check rounds in the watch window")
    parser.add_argument("--no-watch-revert", action="store_true",
                        help="a check failing in the watch window only alerts (default: it reverts the change)")
    parser.add_argument("--change-windows", type=json.loads, metavar="JSON",
                        help='when changes may be applied, e.g. \'{"timezone": "Europe/Berlin", "weekly": '
                             '[{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}]}\'')


def watch_options(options: dict[str, Any]) -> dict[str, Any]:
    """target_register's keywords for the arguments of add_watch_arguments."""
    return {"watch_seconds": options["watch_seconds"], "watch_interval_seconds": options["watch_interval"],
            "watch_auto_revert": not options["no_watch_revert"], "change_windows": options["change_windows"] or {}}


# Service field -> the flag that sets it, for the commands' error lines.
WATCH_FLAGS = {"watch_seconds": "--watch-seconds", "watch_interval_seconds": "--watch-interval",
               "watch_auto_revert": "--no-watch-revert", "change_windows": "--change-windows"}


def describe_watch(target: Target) -> list[str]:
    span = f"{target.watch_seconds} s" if target.watch_seconds is not None else "as long as the bake"
    revert = "reverts on a failed check" if target.watch_auto_revert else "alerts only"
    windows = json.dumps(target.change_windows, sort_keys=True) if target.change_windows else "always open"
    return [
        f"watch window:       {span}, every {target.watch_interval_seconds} s, {revert}",
        f"change windows:     {windows}",
    ]
