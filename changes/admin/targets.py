"""Targets in the admin: operators register a target through `target_register` and
edit its policy through `target_update_policy`; nothing else is typed in here."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, re_path, reverse

from changes.admin.common import _admin_origin, _base_field, _render_form, add_service_errors
from changes.errors import ServiceError, ValidationFailed
from changes.models import Target
from changes.permissions import is_operator
from changes.selectors import targets_visible
from changes.services import target_register, target_update_policy


class TargetRegisterForm(forms.Form):
    """What `target_register` needs for a DNS zone. Validation is the service's."""

    name = forms.CharField(max_length=253, help_text="Unique name of the target, usually the zone name.")
    zone = forms.CharField(max_length=253, required=False, help_text="Zone name (default: the target name).")
    primary = forms.CharField(max_length=300, help_text="HOST:PORT of the primary that accepts signed UPDATEs.")
    tsig_key_file = forms.CharField(
        max_length=1000, label="TSIG key file",
        help_text="Absolute path of a BIND-format key file in the gateway's key directory (CHANGEGATE_KEY_DIR). "
                  "Only the path is stored.",
    )
    nameservers = forms.CharField(
        max_length=2000, required=False,
        help_text="Comma-separated HOST:PORT of the authoritative servers checked after apply (default: the primary).",
    )
    timeout = forms.FloatField(required=False, help_text="Seconds per DNS query (default 5).")
    required_approvals = forms.IntegerField(initial=1)
    approval_lifetime_seconds = forms.IntegerField(initial=24 * 3600)
    bake_seconds = forms.IntegerField(initial=60, help_text="How long health checks watch an applied change.")
    frozen = forms.BooleanField(required=False, help_text="A frozen target accepts proposals but applies nothing.")

    def config(self) -> dict[str, Any]:
        data = self.cleaned_data
        config: dict[str, Any] = {
            "zone": data["zone"] or data["name"],
            "primary": data["primary"],
            "tsig_key_file": data["tsig_key_file"],
        }
        nameservers = [ns.strip() for ns in data["nameservers"].split(",") if ns.strip()]
        if nameservers:
            config["nameservers"] = nameservers
        if data["timeout"] is not None:
            config["timeout"] = data["timeout"]
        return config


@admin.register(Target)
class TargetAdmin(admin.ModelAdmin):
    """Operators register targets and edit their policy. Not guardian's
    GuardedModelAdmin: its object-permissions page wrote grants around the grant
    service (unaudited, no second operator); roles are granted on the Grants page."""

    list_display = ("name", "kind", "zone", "required_approvals", "frozen", "item_count")
    list_filter = ("kind", "frozen")
    search_fields = ("name",)
    fields = (
        "name", "kind", "config", "required_approvals", "approval_lifetime_seconds", "bake_seconds", "frozen",
        "health_checks", "item_count", "item_count_at", "created_at", "updated_at",
    )
    # Config is validated (and the zone checked) only at registration; health checks
    # only through their validator. Neither may be typed in here unchecked.
    readonly_fields = (
        "name", "kind", "config", "health_checks", "item_count", "item_count_at", "created_at", "updated_at",
    )

    @admin.display(description="zone")
    def zone(self, obj: Target) -> str:
        return obj.config.get("zone", "")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Target]:
        # Operators register and tune every target without holding a role on it.
        return Target.objects.all() if is_operator(request.user) else targets_visible(user=request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_operator(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Target | None = None) -> bool:
        return is_operator(request.user)  # not changes.change_target: the operator role is the one rule

    def has_view_permission(self, request: HttpRequest, obj: Target | None = None) -> bool:
        return is_operator(request.user) or super().has_view_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Target | None = None) -> bool:
        return False  # the audit chain references every target

    def get_urls(self) -> list[URLPattern]:
        # guardian's object-permissions pages lived under <id>/permissions/; say
        # plainly that they are gone instead of redirecting to a "not found" change page.
        gone = re_path(r"^(?P<object_id>.+)/permissions/", self.admin_site.admin_view(self.permissions_gone_view))
        return [gone, *super().get_urls()]

    def permissions_gone_view(self, request: HttpRequest, object_id: str, **kwargs: Any) -> HttpResponse:
        raise Http404("roles are granted on the Grants page")

    def save_model(self, request: HttpRequest, obj: Target, form: forms.ModelForm, change: bool) -> None:
        if not change:  # pragma: no cover - add_view below never reaches the model form
            raise PermissionDenied
        # Only the edited policy fields, through the service (validated, audited); a
        # full save would put back a stale item_count over a concurrent refresh.
        if form.changed_data:
            target_update_policy(actor=request.user, target=obj, origin=_admin_origin(request),
                                 **{field: form.cleaned_data[field] for field in form.changed_data})

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = TargetRegisterForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                target = target_register(
                    actor=request.user, name=data["name"], config=form.config(),
                    required_approvals=data["required_approvals"],
                    approval_lifetime_seconds=data["approval_lifetime_seconds"],
                    bake_seconds=data["bake_seconds"], frozen=data["frozen"], origin=_admin_origin(request),
                )
            except ValidationFailed as exc:
                add_service_errors(form, exc.errors, field_of=_base_field)
            except ServiceError as exc:  # TargetUnavailable, NotPermitted
                form.add_error(None, exc.message)
            else:
                messages.success(request, f"Registered target {target.name} ({target.item_count} RRsets).")
                return HttpResponseRedirect(reverse("admin:changes_target_change", args=[target.pk]))
        return _render_form(self, request, form, title="Register a DNS zone", submit_label="Register")
