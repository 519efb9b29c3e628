"""Approvals in the admin: read-only. They are written by `approvals.policy` only."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from approvals.models import Approval
from changes.selectors import changes_visible


@admin.register(Approval)
class ApprovalAdmin(admin.ModelAdmin):
    list_display = ("id", "change", "approver", "fingerprint_prefix", "created_at", "expires_at", "invalidated_at")
    list_filter = ("invalidated_at",)
    list_select_related = ("change", "approver")
    search_fields = ("approver__username", "fingerprint")
    date_hierarchy = "created_at"
    actions = None
    readonly_fields = tuple(field.name for field in Approval._meta.fields)

    @admin.display(description="fingerprint", ordering="fingerprint")
    def fingerprint_prefix(self, obj: Approval) -> str:
        return obj.fingerprint[:12]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Approval]:
        # Approvals of changes the user cannot see do not exist for them.
        return super().get_queryset(request).filter(change__in=changes_visible(user=request.user))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Approval | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Approval | None = None) -> bool:
        return False
