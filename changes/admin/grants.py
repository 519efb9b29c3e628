"""Admin pages that change who may do what: the Grants page (roles on targets,
through `changes.permissions`, four-eyes for reviewer and emergency) and Django's
User and Group pages, narrowed so nobody raises their own privileges there.

Every change made on these pages is an audit event: the grant services write
theirs, `audit.identity` those of the User and Group pages.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from changes.admin.common import _admin_origin, _render_form, add_service_errors
from changes.errors import ServiceError, ValidationFailed
from changes.models import GrantRequest, Target
from changes.permissions import (
    FOUR_EYES_ROLES,
    ROLES,
    grant_request_approve,
    grant_request_create,
    grant_request_reject,
    is_operator,
    may_change_privileges,
    target_role_grant,
    target_role_revoke,
)

GRANT_TEMPLATE = "admin/changes/grantrequest/detail.html"


class GrantForm(forms.Form):
    target = forms.ModelChoiceField(queryset=Target.objects.all())
    role = forms.ChoiceField(choices=[(role, f"{role} ({', '.join(perms)})") for role, perms in ROLES.items()])
    user = forms.ModelChoiceField(queryset=get_user_model().objects.filter(is_active=True), required=False)
    group = forms.ModelChoiceField(queryset=Group.objects.all(), required=False)
    revoke = forms.BooleanField(required=False, label="Revoke instead of grant")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False,
                             help_text="Why. Required for reviewer and emergency, which a second operator approves.")


@admin.register(GrantRequest)
class GrantRequestAdmin(admin.ModelAdmin):
    """Grants: engineer and auditor are given at once; reviewer and emergency become
    a request another operator approves here. Revoking takes effect at once."""

    list_display = ("pk", "target", "role", "principal", "state", "requested", "decided_by", "created_at")
    list_filter = ("state", "role")

    @admin.display(description="for")
    def principal(self, obj: GrantRequest) -> str:
        return f"user {obj.user}" if obj.user_id else f"group {obj.group}"

    @admin.display(description="requested by")
    def requested(self, obj: GrantRequest) -> str:
        return str(obj.requested_by) if obj.requested_by_id else obj.requested_by_label

    def get_queryset(self, request: HttpRequest) -> QuerySet[GrantRequest]:
        return super().get_queryset(request).select_related("target", "user", "group", "requested_by", "decided_by")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: GrantRequest | None = None) -> bool:
        return is_operator(request.user) or super().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_operator(request.user)

    def has_change_permission(self, request: HttpRequest, obj: GrantRequest | None = None) -> bool:
        return False  # decisions are the buttons below, each one service call

    def has_delete_permission(self, request: HttpRequest, obj: GrantRequest | None = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/approve/", wrap(self.approve_view), name="changes_grantrequest_approve"),
            path("<path:object_id>/reject/", wrap(self.reject_view), name="changes_grantrequest_reject"),
            *super().get_urls(),
        ]

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = GrantForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            arguments = {"actor": request.user, "target": data["target"], "role": data["role"], "user": data["user"],
                         "group": data["group"], "origin": _admin_origin(request)}
            try:
                if data["revoke"]:
                    changed = target_role_revoke(**arguments)
                    message = f"Revoked {data['role']} on {data['target']}: {', '.join(changed) or 'nothing held'}."
                elif data["role"] in FOUR_EYES_ROLES:
                    grant_request = grant_request_create(**arguments, reason=data["reason"])
                    message = (f"Grant request #{grant_request.pk} created: another operator (not you, not the "
                               "grantee) must approve it.")
                else:
                    changed = target_role_grant(**arguments, reason=data["reason"])
                    message = f"Granted {data['role']} on {data['target']}: {', '.join(changed) or 'already held'}."
            except ValidationFailed as exc:
                add_service_errors(form, exc.errors, field_of=lambda field: field)
            except ServiceError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, message)
                return HttpResponseRedirect(reverse("admin:changes_grantrequest_changelist"))
        return _render_form(self, request, form, title="Grant or revoke a role", submit_label="Save")

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        grant_request = self._get(request, object_id)
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        opts = self.model._meta
        context = {
            **self.admin_site.each_context(request),
            "title": f"Grant request #{grant_request.pk}",
            "opts": opts,
            "app_label": opts.app_label,
            "grant_request": grant_request,
            "requested": self.requested(grant_request),
            "principal": self.principal(grant_request),
            "permissions": ROLES.get(grant_request.role, ()),
            "can_decide": (grant_request.state == GrantRequest.State.PENDING and is_operator(request.user)
                           and grant_request.requested_by_id != request.user.pk),
        }
        return TemplateResponse(request, GRANT_TEMPLATE, context)

    def approve_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._decide(request, object_id, grant_request_approve, "approved: the role is granted",
                            comment=request.POST.get("comment", ""))

    def reject_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._decide(request, object_id, grant_request_reject, "rejected",
                            comment=request.POST.get("comment", ""))

    def _get(self, request: HttpRequest, object_id: str) -> GrantRequest:
        if not self.has_view_permission(request):
            raise PermissionDenied
        grant_request = self.get_object(request, object_id)
        if grant_request is None:
            raise Http404("no such grant request")
        return grant_request

    def _decide(self, request: HttpRequest, object_id: str, service: Any, done: str, **arguments: Any) -> HttpResponse:
        grant_request = self._get(request, object_id)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            service(actor=request.user, grant_request=grant_request, origin=_admin_origin(request), **arguments)
        except ServiceError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Grant request #{grant_request.pk} {done}.")
        return HttpResponseRedirect(reverse("admin:changes_grantrequest_change", args=[grant_request.pk]))


# ---------------------------------------------------------------------------
# Django's User and Group pages: audited by audit.identity; here only
# narrowed. The superuser flag, groups and model-wide permissions are superusers'
# to change, and never on their own account (someone else must raise you).

PRIVILEGE_FIELDS = ("is_superuser", "groups", "user_permissions")


class ChangegateUserAdmin(UserAdmin):
    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        if not may_change_privileges(actor=request.user, user=obj):
            readonly += [field for field in PRIVILEGE_FIELDS if field not in readonly]
        return readonly


class ChangegateGroupAdmin(GroupAdmin):
    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        if not may_change_privileges(actor=request.user, group=obj):
            readonly.append("permissions")
        return readonly


for _model, _admin in ((get_user_model(), ChangegateUserAdmin), (Group, ChangegateGroupAdmin)):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    admin.site.register(_model, _admin)
