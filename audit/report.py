"""The period report (issue 15): for a date range and targets, every change with its
outcome, every emergency change and its after-the-fact review, every out-of-band
change and every permission change. One query module for the admin page and
`manage.py audit_report`; who sees what is `audit.selectors.events_exportable`
(the export's rule: auditors are those who may export audit events). Reads only.

Events are read from their stored canonical text (the hashed record, as the export
and the evidence page do); a row whose columns disagree with it is marked."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from approvals.models import Approval
from audit.chain import event_checked
from audit.export import parse_moment
from audit.selectors import events_exportable, targets_exportable
from changes.errors import ValidationFailed
from changes.models import ChangeRequest, Target

# Every action that gives or takes away a right: target roles and grant requests
# (changes.permissions), admin access, and the identity events (audit.identity).
PERMISSION_ACTIONS = frozenset({
    "permission_granted", "permission_revoked", "grant_requested", "grant_request_rejected", "admin_pages_granted",
    "user_permission_added", "user_permission_removed", "group_permission_added", "group_permission_removed",
    "object_permission_added", "object_permission_removed", "group_membership_added", "group_membership_removed",
    "user_created", "user_deleted",
})
# user_changed counts only for the fields that are rights.
PERMISSION_USER_FIELDS = frozenset({"is_active", "is_staff", "is_superuser"})
OUT_OF_BAND_ACTIONS = frozenset({"out_of_band_change"})

SECTIONS = ("change", "emergency", "out_of_band", "permission")
CSV_COLUMNS = ("section", "at", "target", "change", "reference", "title", "who", "approvers", "outcome", "review",
               "detail", "seq", "tampered")


@dataclass(frozen=True)
class ReportRow:
    section: str
    at: str
    target: str
    change: int | None = None
    reference: str = ""
    title: str = ""
    who: str = ""
    approvers: str = ""
    outcome: str = ""
    review: str = ""
    detail: str = ""
    seq: int | None = None
    tampered: str = ""


@dataclass
class PeriodReport:
    since: dt.datetime
    until: dt.datetime
    targets: list[str]
    changes: list[ReportRow] = field(default_factory=list)
    emergencies: list[ReportRow] = field(default_factory=list)
    out_of_band: list[ReportRow] = field(default_factory=list)
    permissions: list[ReportRow] = field(default_factory=list)

    def rows(self) -> Iterator[ReportRow]:
        yield from self.changes
        yield from self.emergencies
        yield from self.out_of_band
        yield from self.permissions


def report_query(*, user: AbstractBaseUser | AnonymousUser | None, since: str | None, until: str | None,
                 targets: Sequence[str] = ()) -> tuple[dt.datetime, dt.datetime, list[Target]]:
    """Read the report's parameters: ISO 8601 dates or date-times (naive = UTC;
    `until` is the first moment left out), targets by id or name among those the
    user may export. Raises NotPermitted first (the user may export nothing), then
    ValidationFailed naming every bad field."""
    events_exportable(user=user)  # NotPermitted before anything is said about the parameters
    errors: list[dict[str, Any]] = []
    moments: dict[str, dt.datetime | None] = {}
    for name, raw in (("since", since), ("until", until)):
        moments[name] = parse_moment(raw) if raw else None
        if moments[name] is None:
            errors.append({"index": None, "field": name, "message": "give an ISO 8601 date or date-time"})
    if moments["since"] and moments["until"] and moments["since"] >= moments["until"]:
        errors.append({"index": None, "field": "until", "message": "must be later than since"})
    found: list[Target] = []
    exportable = targets_exportable(user=user)
    for ref in (str(t).strip() for t in targets if str(t).strip()):
        target = (exportable.filter(pk=int(ref)) if ref.isascii() and ref.isdigit() and len(ref) < 19
                  else exportable.filter(name=ref)).first()
        if target is None:
            errors.append({"index": None, "field": "target",
                           "message": f"no target {ref!r} whose audit log you may export"})
        elif target not in found:
            found.append(target)
    if errors:
        raise ValidationFailed(errors)
    return moments["since"], moments["until"], found  # type: ignore[return-value]


def period_report(*, user: AbstractBaseUser | AnonymousUser | None, since: dt.datetime, until: dt.datetime,
                  targets: Sequence[Target] = ()) -> PeriodReport:
    """What happened in [since, until) on `targets` (all the user may export when
    empty). A change is in the report when any of its events is in the period; its
    outcome is its state now. With targets given, events without a target (identity
    and permission events of the whole system) are left out. Raises NotPermitted when
    the user may export nothing (audit.selectors)."""
    events = events_exportable(user=user).filter(created_at__gte=since, created_at__lt=until)
    if targets:
        events = events.filter(target__in=list(targets))
    report = PeriodReport(since=since, until=until, targets=[t.name for t in targets])
    change_ids: set[int] = set()
    for event in events.order_by("seq").iterator(chunk_size=2000):
        checked = event_checked(event)
        record = checked.record
        if record.get("change_id") is not None:
            change_ids.add(record["change_id"])
        action, payload = record["action"], record.get("payload") or {}
        base = {"at": record["created_at"], "target": record.get("target_name") or "", "seq": record["seq"],
                "who": record.get("actor_username") or "system", "tampered": " ".join(checked.tampered),
                "change": record.get("change_id")}
        if action in OUT_OF_BAND_ACTIONS:
            report.out_of_band.append(ReportRow(section="out_of_band", outcome=record.get("outcome", ""),
                                                detail=_oob_detail(payload), **base))
        elif action in PERMISSION_ACTIONS or (action == "user_changed"
                                              and payload.get("field") in PERMISSION_USER_FIELDS):
            report.permissions.append(ReportRow(section="permission", outcome=action,
                                                detail=_permission_detail(payload), **base))
    changes = list(ChangeRequest.objects.filter(pk__in=change_ids)
                   .select_related("target", "author", "emergency_by", "emergency_reviewed_by").order_by("pk"))
    approvers: dict[int, list[str]] = defaultdict(list)
    for change_id, username in (Approval.objects.filter(change__in=changes).order_by("created_at", "pk")
                                .values_list("change_id", "approver__username")):
        approvers[change_id].append(username)
    for change in changes:
        common = {"target": change.target.name, "change": change.pk, "reference": change.reference,
                  "title": change.title, "approvers": " ".join(approvers[change.pk]), "outcome": change.state}
        report.changes.append(ReportRow(section="change", at=change.created_at.isoformat(),
                                        who=change.author.get_username(), **common))
        if change.emergency:
            reviewer = change.emergency_reviewed_by
            review = (f"reviewed by {reviewer.get_username()} at {change.emergency_reviewed_at.isoformat()}: "
                      f"{change.emergency_review_comment}" if reviewer is not None and change.emergency_reviewed_at
                      else "NOT REVIEWED")
            report.emergencies.append(ReportRow(
                section="emergency", at=change.emergency_at.isoformat() if change.emergency_at else "",
                who=change.emergency_by.get_username() if change.emergency_by else "", review=review,
                detail=change.emergency_reason, **common))
    return report


def _oob_detail(payload: dict[str, Any]) -> str:
    counts = ", ".join(f"{payload[k]} {k}" for k in ("added", "removed", "changed") if payload.get(k))
    keys = [f"{entry.get('name', '')} {entry.get('type', '')}".strip() for entry in payload.get("diff") or []
            if isinstance(entry, dict)]
    serial = payload.get("serial") or {}
    text = "changed outside changegate" + (f" ({counts})" if counts else "")
    if keys:
        text += ": " + ", ".join(keys[:20]) + (" ..." if len(keys) > 20 or payload.get("truncated") else "")
    if serial:
        text += f"; serial {serial.get('baseline')} -> {serial.get('live')}"
    return text


def _permission_detail(payload: dict[str, Any]) -> str:
    parts = []
    for key in ("user", "group", "role", "permissions", "permission", "field", "before", "after", "bootstrap",
                "reason", "request"):
        if key in payload and payload[key] not in (None, "", [], {}):
            parts.append(f"{key}={payload[key]}")
    return " ".join(parts)


def report_csv(report: PeriodReport) -> Iterable[str]:
    """The report as CSV lines, one row per entry, `section` first. Cells that a
    spreadsheet would run as a formula are prefixed with an apostrophe."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in report.rows():
        writer.writerow([_cell(getattr(row, column)) for column in CSV_COLUMNS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.getvalue():
        yield buffer.getvalue()


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
