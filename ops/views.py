"""Operations endpoints: liveness, readiness and Prometheus metrics.

None of them may answer a 500 or say a secret: a probe that fails answers 503
and names the part that failed; broker errors are passed through URL redaction.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

from changes.permissions import is_operator
from config.env import env_secret
from ops.logs import redact_urls
from ops.metrics import CONTENT_TYPE, metrics_text

# Seconds. A readiness probe must answer well inside the orchestrator's timeout.
BROKER_TIMEOUT = 2.0
PING_TIMEOUT = 1.0


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any database failure means "not healthy", never a 500 page
        return f"error: {type(exc).__name__}"
    return "ok"


def _error(exc: Exception, secret: str | None) -> str:
    message = redact_urls(f"{type(exc).__name__}: {exc}")
    if secret:  # a driver that echoes the password outside a URL
        message = message.replace(secret, "***")
    return f"error: {message[:200]}"


def _broker(app: Any) -> str:
    """Open and close one fresh broker connection (not from the pool: a pooled
    connection can look alive after the broker went away)."""
    conn = app.connection_for_write(connect_timeout=BROKER_TIMEOUT)
    try:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=BROKER_TIMEOUT)
    except Exception as exc:  # kombu wraps most, transports raise the rest
        return _error(exc, conn.password)
    finally:
        conn.release()
    return "ok"


def _workers(app: Any) -> tuple[int, str]:
    try:
        replies = app.control.ping(timeout=PING_TIMEOUT) or []
    except Exception as exc:
        return 0, _error(exc, app.connection_for_write().password)  # a Connection object; it does not connect
    return len(replies), ("ok" if replies else "error: no worker answered a ping")


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the web process answers and the database is reachable."""
    database = _database()
    if database != "ok":
        return JsonResponse({"status": "error", "database": database.removeprefix("error: ")}, status=503)
    return JsonResponse({"status": "ok"})


@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database and the broker answer, and at least one Celery
    worker answers a ping. 503 lists the failed parts in `failed`."""
    from config.celery_app import app

    body: dict[str, Any] = {"status": "ok", "database": _database(), "broker": _broker(app), "workers": None}
    if body["broker"] == "ok":  # without a broker a ping can only time out
        body["workers"], workers = _workers(app)
        if workers != "ok":
            body["workers_error"] = workers
    failed = [part for part in ("database", "broker") if body[part] != "ok"]
    if body["broker"] == "ok" and not body["workers"]:
        failed.append("workers")
    if failed:
        body.update(status="error", failed=failed)
        return JsonResponse(body, status=503)
    return JsonResponse(body)


def _metrics_allowed(request: HttpRequest) -> bool:
    """Operators always. With METRICS_TOKEN (or METRICS_TOKEN_FILE) set, also
    `Authorization: Bearer <token>`; without it, also anonymous requests made
    directly from loopback. A request that names a proxy (X-Forwarded-For,
    Forwarded) is not direct: a reverse proxy on the same host would otherwise
    make every client on the internet look local."""
    if is_operator(request.user):
        return True
    token = env_secret("METRICS_TOKEN", "")
    if token:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())
    if "X-Forwarded-For" in request.headers or "Forwarded" in request.headers:
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from a dual-stack socket
    return (mapped or address).is_loopback


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics (see ops.metrics); 403 unless `_metrics_allowed`."""
    if not _metrics_allowed(request):
        return HttpResponse("forbidden: metrics need a staff login, the bearer token, or a loopback client\n",
                            status=403, content_type="text/plain; charset=utf-8")
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE)
