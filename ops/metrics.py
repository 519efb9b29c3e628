"""Prometheus metrics, computed from the database at scrape time.

The database is the truth (see pipeline.execution), so every figure is a query,
not an in-process counter: any web process answers the same, and nothing is
lost when a worker dies. Aggregates run in the database; the only rows read
into Python are the most recent `ROLLBACK_WINDOW` rollbacks, whose start time
lives in the execution log (JSON).

Written by hand in the text exposition format 0.0.4 rather than with
prometheus_client: a dozen lines of formatting for five metrics, no registry
whose process-global state would fight the "query at scrape time" design.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum

from changes.models import LEASED, ChangeRequest, CheckResult, Execution, Notification
from changes.selectors import emergency_overdue
from pipeline.check_specs import CHECK_FIELDS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds. Apply is a re-plan read plus one UPDATE (tens of ms); the top buckets
# catch retries against a slow or flapping server.
DURATION_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
ROLLBACK_WINDOW = 1000
# Kinds shown even at zero, so a dashboard has a series before the first failure.
CHECK_KINDS: tuple[str, ...] = ("verify", *sorted(CHECK_FIELDS))


def _value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if value == float("inf"):
        return "+Inf"
    return repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, dict[str, str], float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for suffix, labels, value in samples:
        rendered = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{suffix}{{{rendered}}} {_value(value)}" if rendered else f"{name}{suffix} {_value(value)}")
    return lines


def _histogram(cumulative: Sequence[int], total: int, seconds: float) -> list[tuple[str, dict[str, str], float]]:
    samples: list[tuple[str, dict[str, str], float]] = [
        ("_bucket", {"le": _value(bound)}, count) for bound, count in zip(DURATION_BUCKETS, cumulative)
    ]
    samples += [("_bucket", {"le": "+Inf"}, total), ("_sum", {}, seconds), ("_count", {}, total)]
    return samples


def changes_by_state() -> dict[str, int]:
    counts = dict.fromkeys(ChangeRequest.State.values, 0)
    for row in ChangeRequest.objects.order_by().values("state").annotate(n=Count("pk")):
        counts[row["state"]] = row["n"]
    return counts


def apply_durations() -> tuple[list[int], int, float]:
    """(cumulative bucket counts, count, sum in seconds) over every execution that
    applied: one aggregate query, from the claim (`started_at`) to the apply (`applied_at`)."""
    took = ExpressionWrapper(F("applied_at") - F("started_at"), output_field=DurationField())
    rows = Execution.objects.filter(started_at__isnull=False, applied_at__isnull=False).annotate(took=took)
    buckets = {f"le{i}": Count("pk", filter=Q(took__lte=timedelta(seconds=bound)))
               for i, bound in enumerate(DURATION_BUCKETS)}
    agg = rows.aggregate(total=Count("pk"), seconds=Sum("took"), **buckets)
    cumulative = [agg[f"le{i}"] for i in range(len(DURATION_BUCKETS))]
    return cumulative, agg["total"], (agg["seconds"] or timedelta(0)).total_seconds()


def _rollback_started_at(log: Any) -> datetime | None:
    for entry in reversed(log if isinstance(log, list) else []):
        if isinstance(entry, dict) and entry.get("what") == "rollback_started":
            try:
                return datetime.fromisoformat(str(entry["at"]))
            except (KeyError, ValueError):
                return None
    return None


def rollback_durations() -> tuple[list[int], int, float]:
    """Like `apply_durations`, from the `rollback_started` log entry to `finished_at`,
    over the most recent `ROLLBACK_WINDOW` rolled-back or rollback-failed executions."""
    rows = (Execution.objects.filter(outcome__in=[ChangeRequest.State.ROLLED_BACK, ChangeRequest.State.ROLLBACK_FAILED],
                                     finished_at__isnull=False)
            .order_by("-finished_at")
            .values_list("log", "finished_at")[:ROLLBACK_WINDOW])
    durations = []
    for log, finished_at in rows:
        started = _rollback_started_at(log)
        if started is not None:
            durations.append(max((finished_at - started).total_seconds(), 0.0))
    cumulative = [sum(1 for d in durations if d <= bound) for bound in DURATION_BUCKETS]
    return cumulative, len(durations), sum(durations)


def check_failures_by_kind() -> dict[str, int]:
    counts = dict.fromkeys(CHECK_KINDS, 0)
    for row in CheckResult.objects.filter(ok=False).order_by().values("kind").annotate(n=Count("pk")):
        counts[row["kind"]] = row["n"]
    return counts


def execution_queue() -> dict[str, int]:
    return Execution.objects.aggregate(
        pending=Count("pk", filter=Q(state=Execution.State.PENDING)),
        running=Count("pk", filter=Q(state__in=LEASED)),  # a worker holds the lease
    )


def notification_figures() -> dict[str, Any]:
    """Dead letters ever (a counter: `dead_letters` only grows, a retry keeps it),
    by channel; notifications waiting for delivery; dead letters not retried yet."""
    failed_total = dict.fromkeys(Notification.Channel.values, 0)
    for row in Notification.objects.order_by().values("channel").annotate(n=Sum("dead_letters")):
        failed_total[row["channel"]] = row["n"] or 0
    states = Notification.objects.aggregate(
        pending=Count("pk", filter=Q(state=Notification.State.PENDING)),
        dead=Count("pk", filter=Q(state=Notification.State.FAILED)),
    )
    return {"failed_total": failed_total, **states}


def emergency_reviews_overdue(*, now: datetime | None = None) -> int:
    """Break-glass changes past their target's review deadline and still unreviewed.
    Read into Python: the unreviewed ones are a short queue people empty, and the
    rule stays in one place (selectors.emergency_overdue)."""
    unreviewed = ChangeRequest.objects.filter(emergency=True, emergency_reviewed_at__isnull=True,
                                              emergency_at__isnull=False).select_related("target")
    return sum(1 for change in unreviewed if emergency_overdue(change, now=now))


def metrics_text() -> str:
    """The whole scrape in the Prometheus text format."""
    lines: list[str] = []
    lines += _family("changegate_changes", "gauge", "Change requests by state.",
                     (("", {"state": state}, n) for state, n in changes_by_state().items()))
    lines += _family("changegate_apply_duration_seconds", "histogram",
                     "Seconds from a worker claiming an execution to the apply being sent (started_at to applied_at).",
                     _histogram(*apply_durations()))
    lines += _family("changegate_rollback_duration_seconds", "histogram",
                     f"Seconds from rollback_started to the end of the rollback, over the last {ROLLBACK_WINDOW} "
                     "rollbacks.",
                     _histogram(*rollback_durations()))
    lines += _family("changegate_check_failures_total", "counter", "Failed health check results by check kind.",
                     (("", {"kind": kind}, n) for kind, n in check_failures_by_kind().items()))
    queue = execution_queue()
    lines += _family("changegate_executions_pending", "gauge",
                     "Executions waiting for a worker (queue depth; includes held ones).",
                     [("", {}, queue["pending"])])
    lines += _family("changegate_executions_running", "gauge", "Executions a worker holds the lease on.",
                     [("", {}, queue["running"])])
    notifications = notification_figures()
    lines += _family("changegate_notifications_failed_total", "counter",
                     "Notifications dead-lettered after their last failed attempt, by channel.",
                     (("", {"channel": channel}, n) for channel, n in notifications["failed_total"].items()))
    lines += _family("changegate_notifications_pending", "gauge",
                     "Notifications waiting for their first or next delivery attempt.",
                     [("", {}, notifications["pending"])])
    lines += _family("changegate_notifications_dead_letters", "gauge",
                     "Dead-lettered notifications not retried yet (admin: Notifications, state failed).",
                     [("", {}, notifications["dead"])])
    lines += _family("changegate_emergency_reviews_overdue", "gauge",
                     "Break-glass changes whose after-the-fact review is overdue.",
                     [("", {}, emergency_reviews_overdue())])
    return "\n".join(lines) + "\n"
