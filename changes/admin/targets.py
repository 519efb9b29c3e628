"""Targets in the admin: operators register a target through `target_register` and
edit its policy through `target_update_policy`; nothing else is typed in here."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, re_path, reverse

from changes.admin.common import (
    _admin_origin,
    _base_field,
    _render_form,
    add_service_errors,
)
from changes.errors import ServiceError, ValidationFailed
from changes.kinds import REGISTRY, kind_named, kind_of
from changes.models import Target
from changes.permissions import is_operator
from changes.selectors import targets_visible
from changes.services import target_register, target_update_policy
from pipeline.windows import validate_change_windows


class UnrenderedTextInput(forms.TextInput):
    """A text input that never shows its value back (a kind's secret field): a form
    re-rendered after an error asks for it again instead of echoing it."""

    def format_value(self, value: Any) -> str | None:
        return None


NFT_EXAMPLE = (
    '{"transport": "ssh", "ssh_host": "fw1.example", "ssh_user": "changegate", '
    '"known_hosts_file": "/etc/changegate/known_hosts", "tables": ["inet changegate"], "revert_seconds": 120}'
)


WINDOWS_HELP = ('When changes may be applied, as JSON (empty: always), e.g. {"timezone": "Europe/Berlin", '
                '"weekly": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00"}], '
                '"freezes": [{"start": "2026-12-20T00:00:00+01:00", "end": "2027-01-04T00:00:00+01:00", '
                '"reason": "year-end freeze"}]}. Break-glass changes ignore them.')


class TargetPolicyForm(forms.ModelForm):
    """The policy fields of the change page; the windows validated by their one
    validator here, so a bad one is a form error, not a failure in save_model."""

    class Meta:
        model = Target
        fields = "__all__"

    def clean_change_windows(self) -> dict[str, Any]:
        try:
            return validate_change_windows(self.cleaned_data.get("change_windows"))
        except ValidationFailed as exc:
            raise forms.ValidationError([f"{e['field']}: {e['message']}" for e in exc.errors]) from None


class TargetRegisterForm(forms.Form):
    """What `target_register` needs: for a DNS zone the fields below, for any other
    kind (nftables) its config as JSON plus its secret fields, each in a field of its
    own that is never shown back. Validation is the service's."""

    # The kind whose config the flat fields below make up; every other kind is JSON.
    FLAT_KIND = "dns"
    FLAT_FIELDS = ("zone", "primary", "tsig_key_file", "nameservers", "timeout", "resolvers")

    kind = forms.ChoiceField(choices=(), required=False, initial="dns",
                             help_text="DNS: fill in the zone fields. Other kinds: the JSON config below.")
    name = forms.CharField(max_length=253, help_text="Unique name of the target, usually the zone or host name.")
    zone = forms.CharField(max_length=253, required=False, help_text="DNS: zone name (default: the target name).")
    primary = forms.CharField(max_length=300, required=False,
                              help_text="DNS: HOST:PORT of the primary that accepts signed UPDATEs.")
    tsig_key_file = forms.CharField(
        max_length=1000, label="TSIG key file", required=False, widget=UnrenderedTextInput,
        help_text="DNS: absolute path of a BIND-format key file in the gateway's key directory (CHANGEGATE_KEY_DIR). "
                  "Only the path is stored; never shown back.",
    )
    nameservers = forms.CharField(
        max_length=2000, required=False,
        help_text="DNS: comma-separated HOST:PORT of the authoritative servers checked after apply "
                  "(default: the primary).",
    )
    timeout = forms.FloatField(required=False, help_text="DNS: seconds per DNS query (default 5).")
    resolvers = forms.CharField(
        max_length=2000, required=False,
        help_text="DNS: comma-separated HOST:PORT of caching resolvers (e.g. the company's) the bake also asks for "
                  "the changed names; their old answers count as stale, not wrong, while the old TTL runs.")
    config_json = forms.CharField(
        label="Config (JSON)", required=False, widget=forms.Textarea(attrs={"rows": 6, "cols": 80}),
        help_text=f"Kinds other than DNS. nftables, e.g. {NFT_EXAMPLE} (or \"transport\": \"netns\", "
                  f"\"netns\": \"NAME\"). Secret fields go in their own fields below.",
    )
    prepare = forms.BooleanField(required=False, label="Create missing tables",
                                 help_text="nftables: create the owned tables empty where missing instead of refusing.")
    required_approvals = forms.IntegerField(initial=1)
    approval_lifetime_seconds = forms.IntegerField(initial=24 * 3600)
    bake_seconds = forms.IntegerField(initial=60, help_text="How long health checks watch an applied change.")
    bake_max_seconds = forms.IntegerField(
        initial=3600, label="Bake cap (seconds)",
        help_text="DNS: a change bakes for the old records' TTL (so resolvers have let go of them), at most this; "
                  "the bake time above still applies.")
    watch_seconds = forms.IntegerField(
        required=False, min_value=0, label="Watch window (seconds)",
        help_text="How long checks keep running after the bake (empty: as long as the change's bake; 0: none).")
    watch_interval_seconds = forms.IntegerField(
        required=False, initial=30, label="Watch interval (seconds)",
        help_text="Seconds between check rounds in the watch window (empty: 30).")
    watch_auto_revert = forms.BooleanField(
        required=False, initial=True, label="Revert on a watch failure",
        help_text="A check failing in the watch window reverts the change (otherwise it only alerts).")
    change_windows = forms.JSONField(
        required=False, initial=dict, widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        help_text=WINDOWS_HELP)
    frozen = forms.BooleanField(required=False, help_text="A frozen target accepts proposals but applies nothing.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [(kind.name, kind.label) for kind in REGISTRY.all()]
        for kind in REGISTRY.all():
            for secret in sorted(kind.secret_fields - set(self.fields)):
                self.fields[secret] = forms.CharField(
                    max_length=1000, required=False, widget=UnrenderedTextInput, label=secret.replace("_", " "),
                    help_text=f"{kind.label}: a path inside the gateway's key directory; only the path is stored, "
                              "the file is never read here; never shown back.")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        data["kind"] = data.get("kind") or self.FLAT_KIND
        if data["kind"] == self.FLAT_KIND:
            for field in ("primary", "tsig_key_file"):
                if not data.get(field) and field not in self.errors:
                    self.add_error(field, "This field is required.")
            return data
        try:
            config = json.loads(data.get("config_json") or "")
        except ValueError as exc:
            self.add_error("config_json", f"not JSON: {exc}")
            return data
        if not isinstance(config, dict):
            self.add_error("config_json", "must be a JSON object")
            return data
        secrets = sorted(set(config) & kind_named(data["kind"]).secret_fields)
        if secrets:
            self.add_error("config_json", f"{', '.join(secrets)}: give it in its own field (never shown back)")
        data["config_object"] = config
        return data

    def config(self) -> dict[str, Any]:
        data = self.cleaned_data
        if data["kind"] != self.FLAT_KIND:
            config = dict(data["config_object"])
            for secret in kind_named(data["kind"]).secret_fields:
                if data.get(secret):
                    config[secret] = data[secret]
            return config
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
        resolvers = [r.strip() for r in data["resolvers"].split(",") if r.strip()]
        if resolvers:
            config["resolvers"] = resolvers
        return config

    def field_of(self, error_field: str) -> str:
        """The form field a service error belongs on: a kind's own config field that
        has no form field of its own goes on the JSON config (named in the message)."""
        base = _base_field(error_field)
        if not error_field.startswith("config.") or self.cleaned_data.get("kind") == self.FLAT_KIND:
            return base
        return base if base in kind_named(self.cleaned_data["kind"]).secret_fields else "config_json"


def _errors_for(form: TargetRegisterForm, errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Name the config key in the message when it lands on the JSON field.
    return [{**e, "field": "config_json", "message": f"{_base_field(e['field'])}: {e['message']}"}
            if form.field_of(e["field"]) == "config_json" else e for e in errors]


@admin.register(Target)
class TargetAdmin(admin.ModelAdmin):
    """Operators register targets and edit their policy. Not guardian's
    GuardedModelAdmin: its object-permissions page wrote grants around the grant
    service (unaudited, no second operator); roles are granted on the Grants page."""

    form = TargetPolicyForm
    list_display = ("name", "kind", "zone", "required_approvals", "frozen", "item_count")
    list_filter = ("kind", "frozen")
    search_fields = ("name",)
    fields = (
        "name", "kind", "config_shown", "required_approvals", "approval_lifetime_seconds", "bake_seconds",
        "bake_max_seconds", "watch_seconds", "watch_interval_seconds", "watch_auto_revert", "change_windows",
        "frozen", "health_checks", "item_count", "item_count_at", "created_at", "updated_at",
    )
    # Config is validated (and the zone checked) only at registration; health checks
    # only through their validator. Neither may be typed in here unchecked.
    readonly_fields = (
        "name", "kind", "config_shown", "health_checks", "item_count", "item_count_at", "created_at", "updated_at",
    )

    @admin.display(description="config")
    def config_shown(self, obj: Target) -> str:
        # Where a key lives is the kind's secret field: said to be set, never shown back.
        secret = kind_of(obj).secret_fields
        shown = {k: ("(set, not shown)" if k in secret and v else v) for k, v in obj.config.items()}
        return json.dumps(shown, indent=2, sort_keys=True)

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
                    actor=request.user, name=data["name"], kind=data["kind"], config=form.config(),
                    required_approvals=data["required_approvals"],
                    approval_lifetime_seconds=data["approval_lifetime_seconds"],
                    bake_seconds=data["bake_seconds"], bake_max_seconds=data["bake_max_seconds"],
                    watch_seconds=data["watch_seconds"], watch_interval_seconds=data["watch_interval_seconds"] or 30,
                    watch_auto_revert=data["watch_auto_revert"], change_windows=data["change_windows"] or {},
                    frozen=data["frozen"], origin=_admin_origin(request),
                    prepare=data["prepare"],
                )
            except ValidationFailed as exc:
                add_service_errors(form, _errors_for(form, exc.errors), field_of=_base_field)
            except ServiceError as exc:  # TargetUnavailable, NotPermitted
                form.add_error(None, exc.message)
            else:
                what = "RRsets" if data["kind"] == form.FLAT_KIND else "managed chains and sets"
                messages.success(request, f"Registered target {target.name} ({target.item_count} {what}).")
                return HttpResponseRedirect(reverse("admin:changes_target_change", args=[target.pk]))
        return _render_form(self, request, form, title="Register a target", submit_label="Register")
