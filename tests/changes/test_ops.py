"""Operations: /healthz, /readyz (against a real redis-server and a real Celery
worker process), /metrics (values after changes went through the real
pipeline), and structured logs."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.db import OperationalError

from changes.models import ChangeRequest
from changes.services import change_create, change_submit, target_update_policy
from config.celery_app import app
from dns_adapters.local_named import free_port
from ops.logs import (
    ChangeContextFilter,
    JSONFormatter,
    PlainFormatter,
    current_change_id,
    log_context,
)
from pipeline.execution import execution_claim
from pipeline.run import execution_run
from tests.factories import WWW, approved
from tests.processes import ROOT, CeleryWorker, RedisServer, point_app_at

State = ChangeRequest.State


@contextmanager
def broker_at(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point the in-process Celery app at `url` for the block, then back."""
    # Celery reads CELERY_BROKER_URL from the environment before its own config.
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    point_app_at(app, url)
    try:
        yield
    finally:
        point_app_at(app, settings.CELERY_BROKER_URL)


# ---------------------------------------------------------------------------
# /healthz and /readyz


@pytest.mark.django_db
def test_healthz_answers_ok(client):
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.django_db
def test_readyz_is_503_naming_the_workers_when_no_worker_answers(client):
    # The test settings use the in-memory broker: it answers, nobody listens on it.
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert (body["status"], body["database"], body["broker"], body["workers"]) == ("error", "ok", "ok", 0)
    assert body["failed"] == ["workers"]


@pytest.mark.django_db
def test_readyz_is_503_naming_the_broker_when_redis_is_down_and_says_no_password(client, monkeypatch):
    dead = f"redis://:hunter2-broker-password@127.0.0.1:{free_port()}/0"
    with broker_at(dead, monkeypatch):
        response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["failed"] == ["broker"]
    assert body["broker"].startswith("error: ") and body["database"] == "ok"
    assert "hunter2" not in response.content.decode()


@pytest.mark.django_db
def test_readyz_is_503_naming_the_database_when_it_is_down(client, monkeypatch):
    class DeadConnection:
        def cursor(self):
            raise OperationalError("could not connect to server")

    monkeypatch.setattr("ops.views.connection", DeadConnection())
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["database"] == "error: OperationalError"
    assert "database" in response.json()["failed"]
    assert client.get("/healthz").status_code == 503


# Real commits: a real worker process answers the ping and reads the database.
@pytest.mark.django_db(transaction=True)
def test_readyz_is_200_with_a_real_redis_and_a_real_worker(client, monkeypatch):
    server = RedisServer().start()
    worker = CeleryWorker(server.url, name="ops").start()
    try:
        with broker_at(server.url, monkeypatch):
            worker.wait_ready(app)
            response = client.get("/readyz")
    finally:
        worker.stop()
        server.stop()
    body = response.json()
    assert response.status_code == 200, body
    assert body == {"status": "ok", "database": "ok", "broker": "ok", "workers": body["workers"]}
    assert body["workers"] >= 1


# ---------------------------------------------------------------------------
# /metrics


SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def scrape(client, **extra) -> dict[tuple[str, frozenset], float]:
    """Parse the exposition: every sample belongs to a family with a TYPE line."""
    response = client.get("/metrics", **extra)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    families: set[str] = set()
    samples: dict[tuple[str, frozenset], float] = {}
    for line in response.content.decode().splitlines():
        if line.startswith("# TYPE "):
            families.add(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, line
        name = match["name"]
        assert any(name == f or name == f + suffix for f in families for suffix in ("_bucket", "_sum", "_count")), line
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        samples[(name, labels)] = float(match["value"])
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def buckets(samples, name: str) -> list[float]:
    found = [(k[1], v) for k, v in samples.items() if k[0] == f"{name}_bucket"]
    return [v for labels, v in sorted(found, key=lambda kv: float(dict(kv[0])["le"]))]


@pytest.mark.django_db
def test_metrics_on_an_empty_database_list_every_state_at_zero(client):
    samples = scrape(client)
    for state in State.values:
        assert value(samples, "changegate_changes", state=state) == 0
    assert value(samples, "changegate_apply_duration_seconds_count") == 0
    assert value(samples, "changegate_check_failures_total", kind="tcp") == 0
    assert value(samples, "changegate_executions_pending") == 0


@pytest.mark.named
@pytest.mark.django_db
def test_metrics_count_changes_durations_failures_and_the_queue(client, author, reviewer, dns_target, staff):
    target = target_update_policy(actor=staff, target=dns_target, bake_seconds=0)
    change_create(actor=author, target=target, title="draft", reason="r", items=WWW)
    change_submit(actor=author, change=change_create(actor=author, target=target, title="p", reason="r", items=WWW))
    applied = approved(author, reviewer, target)
    assert execution_run(execution_id=applied.execution.pk, worker="w") == State.APPLIED
    dead = {"type": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": 0.5}
    back = approved(author, reviewer, target,
                    items=[{"op": "upsert", "name": "api", "type": "A", "ttl": 300, "records": ["192.0.2.98"]}],
                    health_checks=[dead])
    assert execution_run(execution_id=back.execution.pk, worker="w") == State.ROLLED_BACK
    running = approved(author, reviewer, target,
                       items=[{"op": "upsert", "name": "mail", "type": "A", "ttl": 300, "records": ["192.0.2.97"]}])
    assert execution_claim(execution_id=running.execution.pk, worker="w") is not None
    approved(author, reviewer, target,
             items=[{"op": "upsert", "name": "new", "type": "A", "ttl": 300, "records": ["192.0.2.96"]}])

    samples = scrape(client)

    states = {state: value(samples, "changegate_changes", state=state) for state in State.values}
    assert states == {**dict.fromkeys(State.values, 0), State.DRAFT: 1, State.PENDING_APPROVAL: 1,
                      State.APPLIED: 1, State.ROLLED_BACK: 1, State.APPROVED: 2}
    # Both the applied and the rolled-back change were applied once.
    apply_buckets = buckets(samples, "changegate_apply_duration_seconds")
    assert value(samples, "changegate_apply_duration_seconds_count") == 2 == apply_buckets[-1]
    assert apply_buckets == sorted(apply_buckets)  # cumulative
    assert value(samples, "changegate_apply_duration_seconds_sum") >= 0
    assert value(samples, "changegate_rollback_duration_seconds_count") == 1
    assert 0 < value(samples, "changegate_rollback_duration_seconds_sum") < 60
    assert value(samples, "changegate_check_failures_total", kind="tcp") >= 1
    assert value(samples, "changegate_check_failures_total", kind="http") == 0
    assert value(samples, "changegate_executions_pending") == 1
    assert value(samples, "changegate_executions_running") == 1


@pytest.mark.django_db
def test_metrics_are_forbidden_to_anonymous_clients_that_are_not_local(client, make_user, operator):
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    # A reverse proxy on the same host makes everyone look local; it says so in a header.
    assert client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 403
    client.force_login(make_user("engineer"))
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    client.force_login(make_user("stu", is_staff=True))  # staff only opens the admin
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    client.force_login(operator)
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 200


@pytest.mark.django_db
def test_metrics_token_when_set_is_required_even_from_loopback(client, monkeypatch):
    monkeypatch.setenv("METRICS_TOKEN", "scrape-me")
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.get("/metrics", headers={"Authorization": "Basic scrape-me"}).status_code == 403
    ok = client.get("/metrics", REMOTE_ADDR="203.0.113.9", headers={"Authorization": "Bearer scrape-me"})
    assert ok.status_code == 200


# ---------------------------------------------------------------------------
# Structured logs


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ChangeContextFilter())
    logger = logging.getLogger("tests.ops")
    logger.addHandler(handler)
    logger.propagate, logger.level = False, logging.INFO
    yield logger, stream, handler
    logger.removeHandler(handler)
    logger.propagate = True


def test_json_log_lines_parse_and_carry_the_change_id_inside_log_context(captured):
    logger, stream, handler = captured
    handler.setFormatter(JSONFormatter())
    logger.info("before")
    with log_context(change_id=42):
        logger.warning("applying %s", "www", extra={"step": 1})
        with log_context(change_id=43):
            logger.info("nested")
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            logger.exception("failed")
    logger.info("after")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["message"], e["change_id"]) for e in lines] == [
        ("before", None), ("applying www", 42), ("nested", 43), ("failed", 42), ("after", None)]
    assert {"time", "level", "logger", "message", "change_id"} <= set(lines[1])
    assert (lines[1]["level"], lines[1]["logger"], lines[1]["step"]) == ("WARNING", "tests.ops", 1)
    assert "ValueError: bad" in lines[3]["exc_info"]
    assert current_change_id() is None


def test_logs_redact_secret_extras_and_url_passwords(captured):
    logger, stream, handler = captured
    handler.setFormatter(JSONFormatter())
    logger.warning("broker redis://:hunter2@10.0.0.1:6379/0 down",
                   extra={"password": "hunter2", "api_token": "hunter2", "token": 7,
                          "config": {"tsig_secret": "hunter2", "zone": "demo.test"}})
    line = stream.getvalue()
    assert "hunter2" not in line
    entry = json.loads(line)
    assert entry["token"] == 7  # a fencing token is a number, not a credential
    assert entry["config"] == {"tsig_secret": "***", "zone": "demo.test"}
    assert "redis://:***@10.0.0.1:6379/0" in entry["message"]


def test_plain_log_lines_name_the_change_inside_log_context(captured):
    logger, stream, handler = captured
    handler.setFormatter(PlainFormatter())
    with log_context(change_id=5):
        logger.info("applied")
    logger.info("idle")
    first, second = stream.getvalue().splitlines()
    assert first.endswith(" INFO tests.ops change=5 applied")
    assert second.endswith(" INFO tests.ops idle")


def test_log_json_true_switches_the_configured_logging_to_json():
    code = (
        "import django, logging; django.setup()\n"
        "from ops.logs import log_context\n"
        "with log_context(change_id=9):\n"
        "    logging.getLogger('changes.x').warning('hello')\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "LOG_JSON": "true"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    entry = json.loads(done.stderr.strip().splitlines()[-1])
    assert (entry["message"], entry["change_id"], entry["logger"]) == ("hello", 9, "changes.x")
