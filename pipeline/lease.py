"""Keeping a worker's lease alive while it works: the renewal and the heartbeat.

A lease (pipeline.execution.execution_claim) says "this worker runs this attempt
until lease_expires_at"; when it runs out the sweep hands the attempt to another
worker, which is how a dead worker's change resumes. Work longer than the lease
(a slow apply, a long check round, a rollback retrying) therefore needs renewing
while it runs, or two live workers take the attempt from each other for ever
(issue 10, item 4). The heartbeat renews it every third of the lease.

Renewal is fenced: a conditional UPDATE on (pk, token, owner, leased state). A
worker that lost its lease (another one claimed it and bumped the token) or whose
attempt ended renews nothing, and learns so from the row count.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from types import TracebackType
from typing import Protocol

from django.conf import settings
from django.db import connection
from django.utils import timezone

from changes.models import LEASED, Execution

logger = logging.getLogger(__name__)


class Fence(Protocol):
    """What identifies a lease (pipeline.execution.Lease)."""

    execution_id: int
    worker: str
    token: int


def lease_extend(fence: Fence, *, seconds: float | None = None) -> bool:
    """Push the lease to now + `seconds` (default CHANGEGATE_LEASE_SECONDS) if it is
    still this worker's: same fencing token and owner, attempt still leased. False
    when it is not (taken over, or the attempt is over). One autocommit UPDATE of the
    execution row and nothing else, so it holds no lock another lock could wait for
    (it cannot take part in a deadlock, whatever the lock order)."""
    seconds = float(seconds if seconds is not None else settings.CHANGEGATE_LEASE_SECONDS)
    return Execution.objects.filter(
        pk=fence.execution_id, token=fence.token, lease_owner=fence.worker, state__in=LEASED,
    ).update(lease_expires_at=timezone.now() + timedelta(seconds=seconds)) == 1


class LeaseHeartbeat:
    """`with LeaseHeartbeat(lease): ...` renews the lease every `interval` seconds
    (default a third of the lease, so two renewals may fail before it runs out)
    until the block ends.

    A background thread, not renewals between steps: the steps it must cover are
    single blocking calls (an UPDATE sent to a DNS server that answers slowly, a
    check round) that no code of ours runs "between". Django keeps one database
    connection per thread, so the thread gets its own connection (never sharing the
    worker's, which may be inside a transaction) and closes it when it stops. Its
    UPDATE commits on its own; if the worker's transaction holds the execution row
    lock, the renewal waits for that commit, which is short: nothing slow runs inside
    a transaction of the pipeline.

    When a renewal finds the lease lost, `lost` is set and the thread stops; the
    worker finds out at its next fenced write (LeaseLost) and writes nothing. Not
    started when the caller is inside a transaction (a test's): another connection
    could not see the caller's uncommitted rows."""

    def __init__(self, fence: Fence, *, interval: float | None = None) -> None:
        self.fence = fence
        self.interval = interval if interval is not None else settings.CHANGEGATE_LEASE_SECONDS / 3
        self.lost = threading.Event()
        self.beats = 0  # successful renewals, for the tests and the log
        self._beat = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LeaseHeartbeat:
        if connection.in_atomic_block:
            return self
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"lease-heartbeat-{self.fence.execution_id}")
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop renewing and wait for the thread, so no renewal lands after the work
        ended. A renewal waiting on a lock is waited for (bounded by the lease: the
        database gives up on it before a stuck renewal could matter)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(5.0, float(settings.CHANGEGATE_LEASE_SECONDS)))
            if self._thread.is_alive():  # pragma: no cover - a database that hangs
                logger.warning("lease heartbeat of execution %s did not stop", self.fence.execution_id)

    def wait_beats(self, count: int, *, timeout: float) -> bool:
        """Block until `count` renewals succeeded (or the lease was lost, or timeout)."""
        with self._beat:
            return self._beat.wait_for(lambda: self.beats >= count or self.lost.is_set(), timeout=timeout) \
                and self.beats >= count

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    renewed = lease_extend(self.fence)
                except Exception:  # a database hiccup: try again next beat; the lease has slack for two
                    logger.warning("could not renew the lease of execution %s", self.fence.execution_id,
                                   exc_info=True)
                    continue
                with self._beat:
                    if renewed:
                        self.beats += 1
                    else:
                        self.lost.set()
                    self._beat.notify_all()
                if not renewed:
                    logger.warning("execution %s: lease lost (token %s is no longer %s's); heartbeat stops",
                                   self.fence.execution_id, self.fence.token, self.fence.worker)
                    return
        finally:
            connection.close()  # this thread's own connection (Django keeps one per thread)
