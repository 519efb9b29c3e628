"""Waiting for what another process does on its own (a worker, the firewall host's
revert watchdog) by polling with a deadline: the one poll loop of the tests, never a
fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(read: Callable[[], T], done: Callable[[T], bool], *, timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {value!r}")
        time.sleep(0.05)


def wait_until(predicate: Callable[[], object], what: str, *, timeout: float = 60) -> None:
    """Until `predicate()` is truthy; AssertionError naming `what` after `timeout` s."""
    wait_for(predicate, bool, timeout=timeout, what=what)

