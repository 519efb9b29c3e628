"""The notification outbox in the admin: read-only, for operators, so a dead letter
(an alert nobody received) is seen; the retry action gives it a fresh budget of
attempts through `notify.notification_retry` (audited). The webhook URL is never
shown (it may carry a token): only its host, in `destination`."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from changes.admin.common import _admin_origin
from changes.errors import ServiceError
from changes.models import Notification
from changes.permissions import is_operator
from pipeline.outbox import notification_retry

SHOWN = ("event", "channel", "state", "destination", "recipients", "subject", "payload", "change", "target",
         "attempts", "last_error", "dead_letters", "next_attempt_at", "claimed_until", "created_at", "delivered_at",
         "failed_at")


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("pk", "created_at", "event", "channel", "destination", "state", "attempts", "last_error",
                    "change", "target")
    list_filter = ("state", "channel", "event")
    list_select_related = ("change", "target")
    search_fields = ("event", "destination")
    date_hierarchy = "created_at"
    fields = SHOWN
    readonly_fields = SHOWN
    actions = ("retry",)

    # Operators run the gateway; the rows quote changes of every target.
    def has_view_permission(self, request: HttpRequest, obj: Notification | None = None) -> bool:
        return is_operator(request.user)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_operator(request.user)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return is_operator(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Notification | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Notification | None = None) -> bool:
        return False

    @admin.action(description="Retry selected dead letters", permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        retried = 0
        for notification in queryset:
            try:
                notification_retry(actor=request.user, notification=notification, origin=_admin_origin(request))
            except ServiceError as exc:
                messages.error(request, exc.message)
            else:
                retried += 1
        if retried:
            messages.success(request, f"{retried} notification(s) queued for delivery again.")
