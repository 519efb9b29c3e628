"""Real processes for the integration tests: a throwaway redis-server and Celery
worker processes, pointed at the test database. Under CI=true a missing
redis-server fails the run instead of skipping."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from django.db import connection

from dns_adapters.local_named import free_port

ROOT = Path(__file__).resolve().parent.parent


def require_redis() -> str:
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server is required under CI=true (apt-get install redis-server)")
        pytest.skip("redis-server not installed")
    return path


class RedisServer:
    """redis-server on a free loopback port, keeping nothing on disk."""

    def __init__(self) -> None:
        self.binary = require_redis()
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="changegate-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)  # readiness poll interval
        raise RuntimeError("redis-server did not answer")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # SIGKILL: restarting "empty" means losing everything queued
            self.process.wait()
        self.process = None

    def restart_empty(self) -> None:
        self.stop()
        self.start()


def database_url() -> str:
    """The test database as a DATABASE_URL a worker process can use."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class CeleryWorker:
    """`celery -A config worker` as a real child process (solo pool: the process
    that runs the task is the one a kill -9 hits)."""

    def __init__(self, broker_url: str, *, name: str = "w1", env: dict[str, str] | None = None) -> None:
        self.broker_url, self.name, self.extra_env = broker_url, name, env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix=f"changegate-{name}-", suffix=".log")[1])

    def start(self) -> CeleryWorker:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "CELERY_BROKER_URL": self.broker_url,
               "DATABASE_URL": database_url(), **self.extra_env}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "--concurrency=1",
                 "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info", "-n",
                 f"{self.name}@%h"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    def wait_ready(self, app, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log.read_text()[-3000:]}")
            if any(self.name in name for reply in app.control.ping(timeout=0.5) for name in reply):
                return
        raise RuntimeError(f"worker did not answer a ping:\n{self.log.read_text()[-3000:]}")

    def wait_dead(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        stop_group(self.process)
        self.process = None


def stop_group(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a child started with start_new_session (it and its pool), SIGKILL
    after 15 s."""
    if process is not None and process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def app_broker(app) -> Iterator[RedisServer]:
    """A real redis-server that the in-process Celery app publishes to, for the block."""
    from django.conf import settings

    server = RedisServer().start()
    point_app_at(app, server.url)
    try:
        yield server
    finally:
        point_app_at(app, settings.CELERY_BROKER_URL)
        server.stop()


def point_app_at(app, url: str) -> None:
    """Make the in-process Celery app publish to `url` (fresh connection pools)."""
    from kombu import pools

    # Celery prefers the environment variable over app.conf: drop it for this process.
    os.environ.pop("CELERY_BROKER_URL", None)
    app.conf.broker_url = url
    pools.reset()  # kombu's process-wide pools are keyed by URL; a restarted server needs new ones
    app._pool = None
    app.amqp._producer_pool = None


class CeleryBeat:
    """`celery -A config beat` as a real child process: the periodic sweeps
    (executions, notifications, out-of-band, checkpoints) exactly as deployed.
    Its schedule file lives in a temporary directory of its own."""

    def __init__(self, broker_url: str, *, env: dict[str, str] | None = None) -> None:
        self.broker_url, self.extra_env = broker_url, env or {}
        self.dir = Path(tempfile.mkdtemp(prefix="changegate-beat-"))
        self.log = self.dir / "beat.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> CeleryBeat:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "CELERY_BROKER_URL": self.broker_url,
               "DATABASE_URL": database_url(), **self.extra_env}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "config", "beat", "-l", "info",
                 "-s", str(self.dir / "schedule"), "--pidfile", str(self.dir / "beat.pid")],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return self

    def stop(self) -> None:
        stop_group(self.process)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)
