"""Fault injection for the crash tests: a worker started with
CHANGEGATE_CRASH_AT=<point> kills itself with SIGKILL when it reaches that point,
exactly like a machine losing power there. Unset (always, in production), a
crash point is one dictionary lookup."""

from __future__ import annotations

import os
import signal

POINTS = ("before_send", "after_send", "during_checks")


def crashpoint(name: str) -> None:
    if os.environ.get("CHANGEGATE_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
