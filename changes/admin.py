"""The Django admin: a thin adapter over `changes.services` and `changes.selectors`.

Nothing here decides who may do what or writes `state`: adding a target or a
change calls its service, the change page is rendered by hand (no model form, so
no POST can write a field) and its buttons call one service each; approve and
reject (buttons and bulk actions) call `approvals.policy`, which alone decides.
The admin only asks the policy's `can_review` whether to show the buttons.
Whatever a service refuses becomes a form error or an admin message, never a 500.

The add views are not the admin's `changeform_view`: that one wraps the request
in `transaction.atomic()`, and the services read the live zone *before* opening
their own transaction so a DNS timeout never holds a database lock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, re_path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from approvals.policy import (
    approvals_of,
    approvals_required,
    approvals_valid,
    can_review,
    change_approve,
    change_reject,
)
from dns_adapters.base import RRValue, Step
from dns_adapters.presentation import PATCH_SYNTAX, RISKS, rrset_lines

from .audit import RequestOrigin
from .audit_export import CONTENT_TYPES, ExportQuery, change_evidence, events_exportable, events_jsonl
from .errors import NotPermitted, ServiceError, ValidationFailed
from .models import TERMINAL, AuditEvent, ChangeRequest, Origin, Target
from .permissions import is_operator
from .selectors import (
    access_change,
    change_diff,
    change_events,
    change_executions,
    change_live_drift,
    change_plan_of,
    changes_reviewable,
    changes_visible,
    targets_reviewable,
    targets_visible,
)
from .services import change_cancel, change_create, change_plan, change_submit, target_register, target_update_policy

FORM_TEMPLATE = "admin/changes/form_page.html"
CHANGE_TEMPLATE = "admin/changes/changerequest/detail.html"
REJECT_SELECTED_TEMPLATE = "admin/changes/changerequest/reject_selected.html"
APPROVE_SELECTED_TEMPLATE = "admin/changes/changerequest/approve_selected.html"
EVIDENCE_TEMPLATE = "admin/changes/changerequest/evidence.html"


# ---------------------------------------------------------------------------
# Service errors -> form errors


def add_service_errors(form: Form, errors: Iterable[dict[str, Any]], *, field_of: Callable[[str], str | None]) -> None:
    """Attach each ValidationFailed entry to the form field it names (or the form)."""
    for error in errors:
        field = field_of(error["field"])
        message = error["message"]
        if error.get("line"):
            message = f"line {error['line']}: {_item_field(error['field'])}: {message}"
        if field in form.fields:
            form.add_error(field, message)
        else:
            form.add_error(None, f"{error['field']}: {message}")


def _item_field(field: str) -> str:
    # "items[1].records[0]" -> "records[0]": the line number already says which item.
    return field.split(".", 1)[1] if field.startswith("items[") and "." in field else field


def _base_field(field: str) -> str:
    # "config.nameservers[1]" -> "nameservers", "health_checks[0].url" -> "health_checks"
    return field.removeprefix("config.").split(".", 1)[0].split("[", 1)[0]


def _admin_origin(request: HttpRequest) -> RequestOrigin:
    return RequestOrigin.from_request(request, kind=Origin.ADMIN)


def _render_form(model_admin: admin.ModelAdmin, request: HttpRequest, form: Form, *, title: str,
                 submit_label: str) -> TemplateResponse:
    opts = model_admin.model._meta
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "opts": opts,
        "app_label": opts.app_label,
        "form": form,
        "submit_label": submit_label,
        "media": model_admin.media + form.media,
    }
    return TemplateResponse(request, FORM_TEMPLATE, context)


# ---------------------------------------------------------------------------
# Targets


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

    list_display = ("name", "kind", "zone", "required_approvals", "frozen", "rrset_count")
    list_filter = ("kind", "frozen")
    search_fields = ("name",)
    fields = (
        "name", "kind", "config", "required_approvals", "approval_lifetime_seconds", "bake_seconds", "frozen",
        "health_checks", "rrset_count", "rrset_count_at", "created_at", "updated_at",
    )
    # Config is validated (and the zone checked) only at registration; health checks
    # only through their validator. Neither may be typed in here unchecked.
    readonly_fields = (
        "name", "kind", "config", "health_checks", "rrset_count", "rrset_count_at", "created_at", "updated_at",
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
        # full save would put back a stale rrset_count over a concurrent refresh.
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
                messages.success(request, f"Registered target {target.name} ({target.rrset_count} RRsets).")
                return HttpResponseRedirect(reverse("admin:changes_target_change", args=[target.pk]))
        return _render_form(self, request, form, title="Register a DNS zone", submit_label="Register")


# ---------------------------------------------------------------------------
# Change requests


class ChangeProposalForm(forms.Form):
    target = forms.ModelChoiceField(queryset=Target.objects.none())
    # Not required here: the service says what is missing, in the same words as the API.
    title = forms.CharField(max_length=200, required=False)
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False,
                             help_text="Why the change is needed.")
    patch = forms.CharField(widget=forms.Textarea(attrs={"rows": 8, "class": "cg-patch", "spellcheck": "false"}),
                            required=False, help_text=PATCH_SYNTAX)
    allow_apex = forms.BooleanField(required=False, label="Allow apex changes",
                                    help_text="Needed to touch records at the zone apex (@).")

    def __init__(self, *args: Any, targets: QuerySet[Target], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["target"].queryset = targets  # type: ignore[attr-defined]


def _proposal_field(field: str) -> str:
    if field.startswith("items") or field == "patch":
        return "patch"
    return field


STEP_CLASS = {"-": "cg-del", "+": "cg-add", " ": "cg-ctx"}


def _step_summary(step: Step) -> str:
    if step.before is None:
        return "create"
    if step.after is None:
        return "delete"
    return "replace"


def plan_diff_html(change: ChangeRequest) -> SafeString:
    """The plan as a coloured diff, one table body per RRset. Built from the same
    unified diff the API and CLI show; every piece of text goes through format_html."""
    plan = change_plan_of(change)
    if plan is None:
        return format_html('<p class="cg-empty">{}</p>', "No plan has been computed.")
    lines = change_diff(change).splitlines()
    header, body = lines[:2], lines[2:]
    hunks: list[tuple[str, list[str]]] = []
    for line in body:
        if line.startswith("@@"):
            hunks.append((line.strip("@ "), []))
        elif hunks:
            hunks[-1][1].append(line)
    if not hunks:
        return format_html('<p class="cg-empty">{}</p>', "The live zone already matches this change: nothing to do.")
    sections = []
    for index, (key, rows) in enumerate(hunks):
        summary = _step_summary(plan.steps[index]) if index < len(plan.steps) else ""
        row_html = format_html_join(
            "", '<tr class="{}"><td class="cg-sign">{}</td><td class="cg-line"><code>{}</code></td></tr>',
            ((STEP_CLASS.get(row[:1], "cg-ctx"), row[:1], row[1:]) for row in rows),
        )
        sections.append(format_html(
            '<tbody class="cg-rrset"><tr class="cg-hunk"><th colspan="2">{} <span class="cg-op">{}</span></th></tr>'
            "{}</tbody>", key, summary, row_html,
        ))
    return format_html(
        '<table class="cg-diff"><thead><tr><th colspan="2">{}<br>{}</th></tr></thead>{}</table>',
        header[0], header[1], format_html_join("", "{}", ((s,) for s in sections)),
    )


def _event_summary(event: AuditEvent) -> str:
    payload = event.payload or {}
    parts = []
    if "from" in payload and "to" in payload:
        parts.append(f"{payload['from']} \u2192 {payload['to']}")
    if payload.get("fingerprint"):
        steps = f", {payload['steps']} step(s)" if "steps" in payload else ""  # approvals name the plan only
        parts.append(f"plan {payload['fingerprint'][:12]}{steps}")
    if payload.get("comment"):
        parts.append(f"comment: {payload['comment']}")
    if payload.get("reason"):
        parts.append(f"reason: {payload['reason']}")
    return "; ".join(parts)


# What the live zone holds is compared with the plan's `before` only while the plan
# has not been applied: afterwards the live zone is meant to differ from it.
LIVE_COMPARED = frozenset({
    ChangeRequest.State.DRAFT, ChangeRequest.State.PENDING_APPROVAL, ChangeRequest.State.APPROVED,
    ChangeRequest.State.DRIFTED,
})


def _rrset_text(name: str, rdtype: str, value: RRValue | None) -> list[str]:
    return rrset_lines(name, rdtype, value) or ["(absent)"]


def live_drift_context(change: ChangeRequest) -> dict[str, Any]:
    """The "live zone since the plan was read" section: rows, or why there are none.
    A target that cannot be read is a message on the page, never a 500."""
    if change.state not in LIVE_COMPARED:
        return {"drift_note": f"Not compared: the change is {change.get_state_display()}."}
    try:
        rows = change_live_drift(change)
    except ServiceError as exc:  # TargetUnavailable
        return {"drift_error": exc.message}
    if not rows:
        return {"drift_note": "The plan has no steps."}
    return {
        "drift": [
            {**row, "before_lines": _rrset_text(row["name"], row["type"], row["before"]),
             "live_lines": _rrset_text(row["name"], row["type"], row["live"])}
            for row in rows
        ],
        "drift_count": sum(1 for row in rows if not row["matches"]),
    }


class ReviewFilter(admin.SimpleListFilter):
    """Pending changes the user may review and has not approved yet (selectors.changes_reviewable)."""

    title = "review"
    parameter_name = "review"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("waiting", "waiting for me")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ChangeRequest]) -> QuerySet[ChangeRequest] | None:
        if self.value() == "waiting":
            return queryset.filter(pk__in=changes_reviewable(user=request.user).values("pk"))
        return None


class RiskFilter(admin.SimpleListFilter):
    title = "risk flags"
    parameter_name = "risk"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "has risk flags"), ("no", "no risk flags")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ChangeRequest]) -> QuerySet[ChangeRequest] | None:
        if self.value() == "yes":
            return queryset.exclude(risk_flags=[])
        if self.value() == "no":
            return queryset.filter(risk_flags=[])
        return None


class BulkRejectForm(forms.Form):
    # Not required here: the policy says a rejection needs a comment, in its own words.
    comment = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3, "required": True}),
        help_text="Why these changes are rejected. Every selected change gets this comment.",
    )


@admin.register(ChangeRequest)
class ChangeRequestAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "target", "author", "state", "risk", "emergency", "created_at")
    list_display_links = ("id", "title")
    # RelatedOnly: the filters list targets and authors of visible changes, not every name.
    list_filter = (
        ReviewFilter, "state", ("target", admin.RelatedOnlyFieldListFilter),
        ("author", admin.RelatedOnlyFieldListFilter), RiskFilter, "emergency",
    )
    show_facets = admin.ShowFacets.ALWAYS  # counts next to every filter choice (per state, ...)
    search_fields = ("title", "reason")
    date_hierarchy = "created_at"
    # Offered to whoever may review somewhere (has_review_permission); each calls the
    # policy per change, which decides (admin action permissions cannot be per object).
    actions = ("approve_selected", "reject_selected")

    @admin.display(description="risk flags")
    def risk(self, obj: ChangeRequest) -> str:
        return ", ".join(obj.risk_flags)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ChangeRequest]:
        return changes_visible(user=request.user)

    # Nothing on a change is edited through a model form: the change page below is
    # read-only and every move is a button that calls one service.
    def has_change_permission(self, request: HttpRequest, obj: ChangeRequest | None = None) -> bool:
        return False

    def has_review_permission(self, request: HttpRequest) -> bool:
        """Offer the bulk approve/reject only to someone who may review somewhere
        (approve_change on a target); the policy still decides per change."""
        return targets_reviewable(user=request.user).exists()

    def has_delete_permission(self, request: HttpRequest, obj: ChangeRequest | None = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        mine = [
            path("<path:object_id>/submit/", wrap(self.submit_view), name="changes_changerequest_submit"),
            path("<path:object_id>/cancel/", wrap(self.cancel_view), name="changes_changerequest_cancel"),
            path("<path:object_id>/replan/", wrap(self.replan_view), name="changes_changerequest_replan"),
            path("<path:object_id>/approve/", wrap(self.approve_view), name="changes_changerequest_approve"),
            path("<path:object_id>/reject/", wrap(self.reject_view), name="changes_changerequest_reject"),
            path("<path:object_id>/evidence/", wrap(self.evidence_view), name="changes_changerequest_evidence"),
        ]
        return mine + super().get_urls()  # before the catch-all "<path:object_id>/"

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        waiting = changes_reviewable(user=request.user).count()
        return super().changelist_view(request, {**(extra_context or {}), "waiting_count": waiting})

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        targets = targets_visible(user=request.user)
        if request.method == "POST":
            form = ChangeProposalForm(request.POST, targets=targets)
        else:
            form = ChangeProposalForm(targets=targets, initial={"target": request.GET.get("target")})
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                change = change_create(
                    actor=request.user, target=data["target"], title=data["title"], reason=data["reason"],
                    patch=data["patch"], allow_apex=data["allow_apex"], origin=_admin_origin(request),
                )
            except ValidationFailed as exc:
                add_service_errors(form, exc.errors, field_of=_proposal_field)
            except NotPermitted as exc:
                form.add_error("target", exc.message)
            except ServiceError as exc:  # TargetUnavailable
                form.add_error(None, exc.message)
            else:
                messages.success(request, f"Change #{change.pk} created as a draft. Review the plan, then submit it.")
                return HttpResponseRedirect(reverse("admin:changes_changerequest_change", args=[change.pk]))
        return _render_form(self, request, form, title="Propose a DNS change", submit_label="Create draft and plan")

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict | None = None) -> HttpResponse:
        change = access_change(user=request.user, pk=object_id)  # 404 for missing and for invisible
        if not self.has_view_permission(request, change):
            raise PermissionDenied
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        opts = self.model._meta
        valid_ids = set(approvals_valid(change).values_list("pk", flat=True))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Change #{change.pk}: {change.title}",
            "subtitle": None,
            "opts": opts,
            "app_label": opts.app_label,
            "original": change,
            "change": change,
            "editors": list(change.editors.all()),
            "risks": [(flag, RISKS.get(flag, "")) for flag in change.risk_flags],
            "diff": plan_diff_html(change),
            "events": [(event, _event_summary(event)) for event in change_events(change).select_related("actor")],
            "executions": list(change_executions(change)),  # every attempt, oldest first
            "show_actions": change.state not in TERMINAL,
            # Whether to offer the buttons; change_approve/change_reject decide.
            "show_review": change.state == ChangeRequest.State.PENDING_APPROVAL and can_review(request.user, change),
            "approvals": [(approval, approval.pk in valid_ids) for approval in approvals_of(change)],
            "approved_by_me": approvals_valid(change).filter(approver_id=request.user.pk).first(),
            "approvals_valid_count": len(valid_ids),
            "approvals_required": approvals_required(change),
            **live_drift_context(change),
            "can_view_events": request.user.has_perm("changes.view_auditevent"),
            "media": self.media,
        }
        return TemplateResponse(request, CHANGE_TEMPLATE, context)

    def evidence_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The printable evidence report: `change_evidence`, the same dict the API answers."""
        change = access_change(user=request.user, pk=object_id)  # 404 for missing and for invisible
        if not self.has_view_permission(request, change):
            raise PermissionDenied
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        evidence = change_evidence(change)
        context = {
            "title": f"Evidence: change #{change.pk}",
            "change": change,
            "evidence": evidence,
            "steps": [
                {"name": step["name"], "type": step["type"],
                 "before": _rrset_text(step["name"], step["type"], RRValue.from_json(step["before"])),
                 "after": _rrset_text(step["name"], step["type"], RRValue.from_json(step["after"]))}
                for step in (evidence["plan"] or {}).get("steps", [])
            ],
            "execution_json": {
                key: _pretty((evidence["execution"] or {}).get(key))
                for key in ("apply_result", "rollback_result", "log")
            },
            "rollback_json": {
                key: _pretty((evidence["rollback"] or {}).get(key)) for key in ("failed_checks", "result")
            },
            "items_json": _pretty(evidence["items"]),
            "checks_json": _pretty(evidence["health_checks"] + evidence["target_health_checks"]),
            "events": [(event, _pretty(event["payload"])) for event in evidence["events"]],
        }
        return TemplateResponse(request, EVIDENCE_TEMPLATE, context)

    def _action(self, request: HttpRequest, object_id: str, service: Callable[..., ChangeRequest],
                done: str | Callable[[ChangeRequest], str], **arguments: Any) -> HttpResponse:
        change = access_change(user=request.user, pk=object_id)
        if not self.has_view_permission(request, change):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            result = service(actor=request.user, change=change, origin=_admin_origin(request), **arguments)
        except ServiceError as exc:  # 403/409/400 semantics, shown as a message
            messages.error(request, exc.message)
        else:
            messages.success(request, done(result) if callable(done) else f"Change #{change.pk} {done}.")
        return HttpResponseRedirect(reverse("admin:changes_changerequest_change", args=[change.pk]))

    def submit_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._action(request, object_id, change_submit, "submitted for approval")

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._action(request, object_id, change_cancel, "cancelled", reason=request.POST.get("reason", ""))

    def replan_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._action(request, object_id, change_plan, "re-planned against the live zone")

    def approve_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        # The fingerprint is the one the page showed: approving binds to what was seen.
        return self._action(request, object_id, change_approve, _approved_message,
                            fingerprint=request.POST.get("fingerprint", ""), comment=request.POST.get("comment", ""))

    def reject_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._action(request, object_id, change_reject, "rejected", comment=request.POST.get("comment", ""))

    @admin.action(description="Approve selected (shows each plan first)", permissions=["review"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[ChangeRequest]) -> HttpResponse | None:
        """First POST: a page showing each selected change's plan and fingerprint.
        Confirming POST: each change is approved with the fingerprint that page showed
        (`fingerprint_<pk>`), never with whatever is current by then, so a plan edited
        in between is refused as stale by the policy."""
        changes = list(queryset.order_by("pk"))
        if request.POST.get("post") == "yes":
            for change in changes:
                try:
                    result = change_approve(actor=request.user, change=change,
                                            fingerprint=request.POST.get(f"fingerprint_{change.pk}", ""),
                                            origin=_admin_origin(request))
                except ServiceError as exc:
                    messages.error(request, f"Change #{change.pk} not approved: {exc.message}")
                else:
                    messages.success(request, _approved_message(result))
            return None  # back to the change list, with the messages
        # Whether to offer each one; change_approve decides.
        shown = [
            {"change": change, "diff": plan_diff_html(change),
             "reviewable": change.state == ChangeRequest.State.PENDING_APPROVAL and bool(change.fingerprint)
             and can_review(request.user, change)}
            for change in changes
        ]
        return self._bulk_page(request, APPROVE_SELECTED_TEMPLATE, action="approve_selected",
                               title="Approve the selected changes", changes=shown)

    @admin.action(description="Reject selected (asks for a comment)", permissions=["review"])
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[ChangeRequest]) -> HttpResponse | None:
        confirmed = request.POST.get("post") == "yes"
        form = BulkRejectForm(request.POST if confirmed else None)
        if confirmed and form.is_valid():
            for change in queryset.order_by("pk"):
                try:
                    change_reject(actor=request.user, change=change, comment=form.cleaned_data["comment"],
                                  origin=_admin_origin(request))
                except ValidationFailed as exc:
                    # The comment is the same for every change, so the policy refuses it
                    # on the first one, before anything was rejected: ask again.
                    add_service_errors(form, exc.errors, field_of=lambda field: field)
                    break
                except ServiceError as exc:
                    messages.error(request, f"Change #{change.pk} not rejected: {exc.message}")
                else:
                    messages.success(request, f"Change #{change.pk} rejected.")
            else:
                return None  # back to the change list, with the messages
        return self._bulk_page(request, REJECT_SELECTED_TEMPLATE, action="reject_selected",
                               title="Reject the selected changes", changes=list(queryset.order_by("pk")), form=form)

    def _bulk_page(self, request: HttpRequest, template: str, *, action: str, title: str,
                   **extra: Any) -> TemplateResponse:
        """The confirmation page of a bulk action: it re-posts the selection and `action`."""
        opts = self.model._meta
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "subtitle": None,
            "opts": opts,
            "app_label": opts.app_label,
            "action": action,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
            **extra,
        }
        return TemplateResponse(request, template, context)


def _pretty(value: Any) -> str:
    """JSON for a <pre> on the evidence page (escaped by the template)."""
    return "" if value is None else json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _approved_message(change: ChangeRequest) -> str:
    if change.state == ChangeRequest.State.APPROVED:
        return f"Change #{change.pk} approved."
    return (f"Your approval of change #{change.pk} is recorded "
            f"({approvals_valid(change).count()} of {approvals_required(change)} needed).")


# ---------------------------------------------------------------------------
# Audit log


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
        """The selection in the export's line format (changes.audit_export), limited to the
        events of targets the user may export. "Select all" exports the filtered changelist."""
        try:
            events = events_exportable(user=request.user).filter(pk__in=queryset.values("pk"))
        except NotPermitted as exc:
            messages.error(request, exc.message)
            return None
        response = StreamingHttpResponse(events_jsonl(events), content_type=CONTENT_TYPES["jsonl"])
        response["Content-Disposition"] = f'attachment; filename="{ExportQuery().filename()}"'
        response["Cache-Control"] = "no-store"
        return response

    @admin.display(description="hash", ordering="hash")
    def hash_prefix(self, obj: AuditEvent) -> str:
        return obj.hash[:12]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditEvent]:
        qs = super().get_queryset(request)
        if request.user.is_superuser:
            return qs
        # Events of targets the user cannot see do not exist for them.
        return qs.filter(target__in=targets_visible(user=request.user))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False


# Grants, users and groups: their own module, registered with this site.
from . import admin_grants  # noqa: E402,F401
from . import admin_notifications  # noqa: E402,F401  # the notification outbox and its dead letters
