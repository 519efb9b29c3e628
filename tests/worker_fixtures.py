"""`broker` (a redis-server of the module's own, the app pointed at it) and `worker`
(start real Celery worker processes on it; stopped after the test), for the tests
that run the pipeline in real worker processes. Import both names into the test
module to use them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from config.celery_app import app
from tests.processes import CeleryWorker, RedisServer, app_broker


@pytest.fixture(scope="module")
def broker() -> Iterator[RedisServer]:
    with app_broker(app) as server:
        yield server


@pytest.fixture
def worker(broker: RedisServer) -> Iterator[Callable[..., CeleryWorker]]:
    """start(**env) starts one more worker; with CHANGEGATE_CRASH_AT in env it is not
    waited for (it dies at its fault point)."""
    started: list[CeleryWorker] = []

    def start(**env: str) -> CeleryWorker:
        w = CeleryWorker(broker.url, name=f"w{len(started) + 1}", env=env).start()
        started.append(w)
        if "CHANGEGATE_CRASH_AT" not in env:
            w.wait_ready(app)
        return w

    yield start
    for w in started:
        w.stop()
