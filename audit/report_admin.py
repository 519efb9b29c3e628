"""The period report in the admin (issue 15): a form (dates, targets), the printable
page, and the same report as CSV. For auditors: whoever may export audit events
(audit.selectors, the export's rule); the query is audit.report."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, StreamingHttpResponse
from django.template.response import TemplateResponse

from audit.report import SECTIONS, period_report, report_csv, report_query
from audit.selectors import events_exportable, targets_exportable
from changes.errors import NotPermitted, ValidationFailed

REPORT_TEMPLATE = "admin/audit/report.html"


def report_view(request: HttpRequest) -> HttpResponse:
    """GET ?since=&until=&target=…[&format=csv]: the page (with the form), or the CSV."""
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    try:
        events_exportable(user=request.user)
    except NotPermitted:
        raise PermissionDenied from None
    params = request.GET
    context: dict[str, object] = {
        "title": "Audit period report", "sections": SECTIONS,
        "targets": targets_exportable(user=request.user).order_by("name"),
        "chosen": params.getlist("target"), "since": params.get("since", ""), "until": params.get("until", ""),
    }
    if "since" in params or "until" in params:
        try:
            since, until, targets = report_query(user=request.user, since=params.get("since"),
                                                 until=params.get("until"), targets=params.getlist("target"))
        except ValidationFailed as exc:
            context["errors"] = exc.errors
            return TemplateResponse(request, REPORT_TEMPLATE, context, status=400)
        report = period_report(user=request.user, since=since, until=until, targets=targets)
        if params.get("format") == "csv":
            response = StreamingHttpResponse(report_csv(report), content_type="text/csv; charset=utf-8")
            name = f"changegate-report-{since.date().isoformat()}-{until.date().isoformat()}.csv"
            response["Content-Disposition"] = f'attachment; filename="{name}"'
            response["Cache-Control"] = "no-store"
            return response
        context["report"] = report
        context["csv_query"] = params.urlencode() + "&format=csv"
    return TemplateResponse(request, REPORT_TEMPLATE, context)
