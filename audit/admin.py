"""The audit log in the admin: read-only, limited to the events of visible targets;
the export action writes the export's line format for the events the user may export."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import URLPattern, path

from audit.export import CONTENT_TYPES, ExportQuery, events_jsonl, selection_events
from audit.report_admin import report_view
from audit.selectors import events_exportable, events_visible
from changes.errors import NotPermitted
from changes.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("seq", "created_at", "actor_username", "origin", "action", "change", "target", "hash_prefix")
    list_filter = ("action", "origin")
    search_fields = ("actor_username", "action")
    list_select_related = ("change", "target")
    date_hierarchy = "created_at"
    actions = ("export_jsonl",)
    readonly_fields = [field.name for field in AuditEvent._meta.fields]

    def has_export_permission(self, request: HttpRequest) -> bool:
        """Offer the export to whoever may export some target (the action checks per event)."""
        try:
            events_exportable(user=request.user)
        except NotPermitted:
            return False
        return True

    @admin.action(description="Export selected as JSON Lines", permissions=["export"])
    def export_jsonl(self, request: HttpRequest, queryset: QuerySet[AuditEvent]) -> HttpResponse | None:
        """The selection in the export's line format (audit.export): the chain from the
        first selected event to the last, the selected events the user may export
        whole, every other one as its withheld link, so the file verifies offline.
        "Select all" exports the filtered changelist."""
        try:
            events = selection_events(user=request.user, selected=queryset)
        except NotPermitted as exc:
            messages.error(request, exc.message)
            return None
        response = StreamingHttpResponse(events_jsonl(events), content_type=CONTENT_TYPES["jsonl"])
        response["Content-Disposition"] = f'attachment; filename="{ExportQuery().filename()}"'
        response["Cache-Control"] = "no-store"
        return response

    def get_urls(self) -> list[URLPattern]:
        # The period report (issue 15) lives beside the log it reads.
        report = path("report/", self.admin_site.admin_view(report_view), name="changes_auditevent_report")
        return [report, *super().get_urls()]

    @admin.display(description="hash", ordering="hash")
    def hash_prefix(self, obj: AuditEvent) -> str:
        return obj.hash[:12]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        # Events the user may not read do not exist for them (audit.selectors: the one rule).
        return super().get_queryset(request) & events_visible(user=request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False
