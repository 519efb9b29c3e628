"""Change requests in the admin: the proposal form, the read-only change page whose
buttons call one service each, the evidence page, and the bulk approve/reject pages
that confirm what they show (fingerprints) before the policy decides per change."""

from __future__ import annotations

import datetime
import html
import json
from collections.abc import Callable
from functools import partial
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.templatetags.admin_list import ResultList
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import (
    FieldIsAForeignKeyColumnName,
    _get_non_gfk_field,
    display_for_field,
    display_for_value,
    lookup_field,
    quote,
)
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import FieldDoesNotExist, PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.functional import Promise
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext

from adapters import RRValue
from approvals.policy import (
    approvals_required,
    approvals_valid,
    can_review,
    change_approve,
    change_reject,
)
from audit.evidence import change_evidence
from audit.evidence_page import chain_status, evidence_summary
from changes.admin import change_page, proposal, record_editor
from changes.admin.common import _admin_origin, _render_form, add_service_errors
from changes.admin.diff import _rrset_text, plan_diff_html
from changes.admin.listing import emergency_cell, state_cell, time_cell
from changes.admin.record_history import record_history_view
from changes.errors import NotPermitted, ServiceError, ValidationFailed
from changes.kinds import REGISTRY, kind_of
from changes.models import TERMINAL, AuditEvent, ChangeRequest, Target
from changes.search import changes_search
from changes.selectors import (
    access_change,
    change_events,
    changes_reviewable,
    changes_visible,
    targets_reviewable,
    targets_visible,
)
from changes.services import change_cancel, change_create, change_plan, change_revert, change_submit, comment_add

CHANGE_TEMPLATE = "admin/changes/changerequest/detail.html"
REJECT_SELECTED_TEMPLATE = "admin/changes/changerequest/reject_selected.html"
APPROVE_SELECTED_TEMPLATE = "admin/changes/changerequest/approve_selected.html"
EVIDENCE_TEMPLATE = "admin/changes/changerequest/evidence.html"
APPROVE_CONFIRM_TEMPLATE = "admin/changes/changerequest/approve_confirm.html"


class ChangeProposalForm(forms.Form):
    target = forms.ModelChoiceField(queryset=Target.objects.none())
    # Not required here: the service says what is missing, in the same words as the API.
    title = forms.CharField(max_length=200, required=False)
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False,
                             help_text="Why the change is needed.")
    patch = forms.CharField(widget=forms.Textarea(attrs={"rows": 8, "class": "cg-patch", "spellcheck": "false"}),
                            required=False)
    allow_apex = forms.BooleanField(required=False, label="Allow apex changes",
                                    help_text="Needed to touch records at the zone apex (@).")
    health_checks = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "class": "cg-patch", "spellcheck": "false"}), required=False,
        label="Health checks", help_text=proposal.CHECKS_HELP)
    # Optional; the service validates both (pipeline/bake_time.py) and its errors land on these fields.
    bake_override_seconds = forms.IntegerField(
        required=False, label="Bake (seconds, overrides the TTL rule)",
        help_text="Empty: the target's rule (DNS: the old records' TTL, within the target's minimum and cap).")
    bake_override_reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), required=False, max_length=4000, label="Why",
        help_text="Required with a bake of your own; reviewers see it.")

    def __init__(self, *args: Any, targets: QuerySet[Target] | None, **kwargs: Any) -> None:
        """`targets`: those offered; None for an edit, which keeps the change's target."""
        super().__init__(*args, **kwargs)
        if targets is None:
            del self.fields["target"]
        else:
            self.fields["target"].queryset = targets  # type: ignore[attr-defined]
        # The patch syntax is each kind's own; a kind registered later shows too.
        self.fields["patch"].help_text = "\n\n".join(kind.patch_syntax for kind in REGISTRY.all())

    def clean_health_checks(self) -> list[dict[str, Any]]:
        # The lines' shape (the CLI's grammar); the service validates the checks themselves.
        return proposal.parse_check_lines(self.cleaned_data.get("health_checks", ""))


def _proposal_field(field: str) -> str:
    if field.startswith("items") or field == "patch":
        return "patch"
    if field.startswith("health_checks"):
        return "health_checks"
    return field


def _event_summary(event: AuditEvent) -> str:
    payload = event.payload or {}
    parts = []
    if "from" in payload and "to" in payload:
        parts.append(f"{payload['from']} \u2192 {payload['to']}")
    if payload.get("fingerprint"):
        steps = f", {payload['steps']} step(s)" if "steps" in payload else ""  # approvals name the plan only
        warnings = f", {len(payload['warnings'])} warning(s)" if payload.get("warnings") else ""
        parts.append(f"plan {payload['fingerprint'][:12]}{steps}{warnings}")
    if payload.get("comment"):
        parts.append(f"comment: {payload['comment']}")
    if payload.get("reason"):
        parts.append(f"reason: {payload['reason']}")
    return "; ".join(parts)



class ReviewFilter(admin.SimpleListFilter):
    """Pending changes the user may review and has not approved yet (selectors.changes_reviewable,
    its conditions added to the list's own query): the filter and its facet count cost one
    statement each, whatever the queue holds."""

    title = "review"
    parameter_name = "review"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("waiting", "waiting for me")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ChangeRequest]) -> QuerySet[ChangeRequest] | None:
        if self.value() == "waiting":
            return changes_reviewable(user=request.user, within=queryset)
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


class VisibleTargetFilter(admin.RelatedFieldListFilter):
    """The targets the user may see (selectors.targets_visible). Not RelatedOnly's distinct
    targets of every visible change: that reads every change on every page view (10-130 ms
    at 100,000 changes on PostgreSQL) to list the same few names."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        return field.get_choices(include_blank=False, ordering=self.field_admin_ordering(field, request, model_admin),
                                 limit_choices_to={"pk__in": targets_visible(user=request.user).values("pk")})


class OpenChangeAuthorFilter(admin.RelatedFieldListFilter):
    """Authors of the visible changes still open (not in a terminal state): whose work may
    still need a reviewer. Every author of the whole history (RelatedOnly) is a distinct
    over every stored change per page view (80-190 ms at 100,000 changes on PostgreSQL);
    the open ones are found through the (target, state) index. Any author can still be
    chosen by the URL (?author__id__exact=<id>)."""

    title = "author (of open changes)"

    def field_choices(self, field: Any, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        open_changes = (model_admin.get_queryset(request).filter(state__in=sorted(OPEN_STATES))
                        .values("author_id").distinct())
        return field.get_choices(include_blank=False, ordering=self.field_admin_ordering(field, request, model_admin),
                                 limit_choices_to={"pk__in": open_changes})

    def has_output(self) -> bool:
        # Django drops a filter without output, and its parameter with it: an author
        # chosen by the URL must still filter when fewer than two authors are listed.
        return super().has_output() or bool(self.lookup_val)


# The waiting line above the list counts up to this many ("100+ changes waiting").
WAITING_SHOWN = 100

# Listed, not excluded: a positive list lets the database use the (target, state) index.
OPEN_STATES = frozenset(ChangeRequest.State.values) - TERMINAL


def _html(value: Any) -> str:
    """conditional_escape, without the lazy-argument wrapper its escape() pays per call (a
    list page escapes some 1,500 values)."""
    if isinstance(value, Promise):
        value = str(value)
    return value.__html__() if hasattr(value, "__html__") else html.escape(str(value))


class ChangeRequestList(ChangeList):
    """The change list's page of rows, cheaper to read and render: the links to the changes
    from one reverse() per page, not one per link (two a row: id and title; a sixth of the
    list's rendering), and only the columns the rows show."""

    PLACEHOLDER = "CHANGEPK"
    # What the rows show (list_display, the links): not the plan, the items, a dozen
    # timestamps and the target's configuration, parsed for 100 rows and never shown.
    SHOWN = ("id", "title", "state", "risk_flags", "emergency", "created_at", "updated_at", "target__name",
             "author__username")

    def get_results(self, request: HttpRequest) -> None:
        # Only the page's rows: the actions get their own queryset (get_queryset).
        self.queryset = self.queryset.only(*self.SHOWN)
        super().get_results(request)

    def url_for_result(self, result: ChangeRequest) -> str:
        if not hasattr(self, "_change_url"):
            self._change_url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                                       args=(self.PLACEHOLDER,), current_app=self.model_admin.admin_site.name)
        return self._change_url.replace(self.PLACEHOLDER, quote(str(result.pk)), 1)

    def result_rows(self) -> list[ResultList]:
        """The page's rows, cell for cell what Django's admin_list.items_for_result renders
        (same classes, links, empty value, escaping), with what does not depend on the row
        worked out once per column instead of once per cell: how the column is looked up
        (a FieldDoesNotExist raised and caught per method column), its class, whether it
        links, and the link's preserved filters (add_preserved_filters resolve()s every
        link's URL). Those were about half of the page's CPU (100 rows of 10 cells).
        tests/changes/test_admin.py compares the rows with Django's.
        Used by the change_result_list tag (this list's change_list.html)."""
        columns = [self._column(index, name) for index, name in enumerate(self.list_display)]
        # A row is one item, its cells joined: change_list_results.html writes a row's items
        # one after the other, so the HTML is the same, without a template variable per cell.
        return [ResultList(None, [mark_safe("".join([cell(result) for cell in columns]))])
                for result in self.result_list]

    def _column(self, index: int, name: Any) -> Callable[[ChangeRequest], str]:
        """One column's cell renderer (a branch of items_for_result each, no list_editable here)."""
        model_admin = self.model_admin
        empty = model_admin.get_empty_value_display()
        field_name = name.__name__ if callable(name) and name.__name__ != "<lambda>" else (
            f"lambda{index}" if callable(name) else name)
        classes = [f"field-{field_name}"]
        try:
            field = _get_non_gfk_field(self.lookup_opts, name) if isinstance(name, str) else None
        except (FieldDoesNotExist, FieldIsAForeignKeyColumnName):
            field = None
        if field is None and isinstance(name, str) and name != "__str__" and hasattr(model_admin, name):
            method = getattr(model_admin, name)
            empty = getattr(method, "empty_value_display", empty)
            boolean = getattr(method, "boolean", False)
            if name == "action_checkbox":
                classes = ["action-checkbox"]

            def content(result: ChangeRequest) -> tuple[Any, bool]:
                value = method(result)
                if isinstance(value, str) and value.strip() == "":
                    value = ""
                return display_for_value(value, empty, boolean), isinstance(value, (datetime.date, datetime.time))
        elif field is not None and not field.auto_created:
            if isinstance(field, (models.DateField, models.TimeField, models.ForeignKey)):
                classes.append("nowrap")
            link = self._links(name)
            if isinstance(field.remote_field, models.ManyToOneRel):
                def content(result: ChangeRequest) -> tuple[Any, bool]:
                    value = getattr(result, field.name)
                    return (empty if value is None else value), False
            else:
                def content(result: ChangeRequest) -> tuple[Any, bool]:
                    value = getattr(result, name)
                    if isinstance(value, str) and value.strip() == "":
                        value = ""
                    return display_for_field(value, field, empty, avoid_link=link), False
        else:  # a model field created for it (the id), a model attribute or a callable: Django's own lookup
            def content(result: ChangeRequest) -> tuple[Any, bool]:
                try:
                    found, attr, value = lookup_field(name, result, model_admin)
                except models.ObjectDoesNotExist:
                    return empty, False
                shown_empty = getattr(attr, "empty_value_display", empty)
                if isinstance(value, str) and value.strip() == "":
                    value = ""
                boolean = getattr(attr, "boolean", False)
                if isinstance(attr, property) and hasattr(attr, "fget"):
                    boolean = getattr(attr.fget, "boolean", False)
                return (display_for_value(value, shown_empty, boolean),
                        isinstance(value, (datetime.date, datetime.time)))
        # The markup items_for_result's format_html calls make, each value through _html.
        cell_class = ' class="%s"' % " ".join(classes)
        nowrap_class = ' class="%s"' % " ".join([*classes, "nowrap"])
        if not self._links(name):
            def cell(result: ChangeRequest) -> str:
                shown, nowrap = content(result)
                return f"<td{nowrap_class if nowrap else cell_class}>{_html(shown)}</td>"
            return cell
        # The first linked column is the row's header cell (items_for_result's `first`).
        tag = "th" if name == next(n for n in self.list_display if self._links(n)) else "td"
        href = self._linked_url()
        key = str(self.to_field) if self.to_field else self.lookup_opts.pk.attname

        def linked(result: ChangeRequest) -> str:
            shown, nowrap = content(result)
            opener = f' data-popup-opener="{_html(result.serializable_value(key))}"' if self.is_popup else ""
            return (f'<{tag}{nowrap_class if nowrap else cell_class}><a href="{_html(href(result))}"{opener}>'
                    f"{_html(shown)}</a></{tag}>")
        return linked

    def _links(self, name: Any) -> bool:
        """Whether the column links to the change (items_for_result's link_in_col, `first` aside)."""
        if self.list_display_links is None:
            return False
        if not self.list_display_links:
            return name == self.list_display[0]
        return name in self.list_display_links

    def _linked_url(self) -> Callable[[ChangeRequest], str]:
        """The change link with the list's filters kept (add_preserved_filters), built once
        for the placeholder and filled in per row: the placeholder resolves to the same
        change view as any pk, so the filters added are the same."""
        url = add_preserved_filters({"preserved_filters": self.preserved_filters, "opts": self.opts},
                                    self.url_for_result(self.model(pk=self.PLACEHOLDER)))
        return lambda result: url.replace(self.PLACEHOLDER, quote(str(result.pk)), 1)


class BulkRejectForm(forms.Form):
    # Not required here: the policy says a rejection needs a comment, in its own words.
    comment = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3, "required": True}),
        help_text="Why these changes are rejected. Every selected change gets this comment.",
    )


@admin.register(ChangeRequest)
class ChangeRequestAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "target", "author", "state_badge", "risk", "emergency_flag", "created",
                    "updated")
    list_display_links = ("id", "title")
    # The target and author filters list visible names only, not every target or user.
    list_filter = (
        ReviewFilter, "state", ("target", VisibleTargetFilter), ("author", OpenChangeAuthorFilter),
        RiskFilter, "emergency",
    )
    # Counts next to the filter choices only when asked for ("Show counts", ?_facets): Django
    # counts every visible change once per filter (18 more statements, 1-3 s at 100,000
    # changes), on every page view when ALWAYS. The waiting count stays (changelist_view).
    show_facets = admin.ShowFacets.ALLOW
    # Shows the search box; what a search matches is changes.search (get_search_results).
    search_fields = ("title", "reason")
    search_help_text = ("Change number (42, #42), author, record name (www, www.demo.test.), "
                        "value (192.0.2.31), or words of the title.")
    # No date_hierarchy: its drill-down reads the day of every visible change on every
    # page (650 ms of a 100,000-change list on SQLite); newest first, search and the
    # filters find a change. No "N total" count beside a filtered count: one scan fewer.
    show_full_result_count = False
    # Offered to whoever may review somewhere (has_review_permission); each calls the
    # policy per change, which decides (admin action permissions cannot be per object).
    actions = ("approve_selected", "reject_selected")

    def action_checkbox(self, obj: ChangeRequest) -> SafeString:
        # What ModelAdmin.action_checkbox renders through the CheckboxInput widget's
        # template (a template render per row), as one format_html.
        return format_html('<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
                           helpers.ACTION_CHECKBOX_NAME, str(obj.pk),
                           format_html(gettext("Select this object for an action - {}"), str(obj)))

    @admin.display(description="risk flags")
    def risk(self, obj: ChangeRequest) -> str:
        return ", ".join(obj.risk_flags)

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: ChangeRequest) -> str:
        return state_cell(obj.state)

    @admin.display(description="emergency", ordering="emergency")
    def emergency_flag(self, obj: ChangeRequest) -> str:
        return emergency_cell(obj.emergency)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: ChangeRequest) -> str:
        return time_cell(obj.created_at)

    @admin.display(description="updated", ordering="updated_at")
    def updated(self, obj: ChangeRequest) -> str:
        return time_cell(obj.updated_at)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[ChangeRequest],
                           search_term: str) -> tuple[QuerySet[ChangeRequest], bool]:
        # Number, author, record name or value, title (changes.search): no join that
        # duplicates rows, and no statement of its own, the page's read carries it.
        return changes_search(within=queryset, text=search_term), False

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return ChangeRequestList

    def get_queryset(self, request: HttpRequest) -> QuerySet[ChangeRequest]:
        # No page of this admin reads the editors prefetch: a statement per list page saved.
        # Built once per request (the list, its author filter and its waiting line each
        # ask), a fresh copy each time: building it is the guardian subqueries' ORM work.
        if not hasattr(request, "_changegate_changes_visible"):
            request._changegate_changes_visible = (  # type: ignore[attr-defined]
                changes_visible(user=request.user).prefetch_related(None))
        return request._changegate_changes_visible.all()  # type: ignore[attr-defined]

    # Nothing on a change is edited through a model form: the change page below is
    # read-only and every move is a button that calls one service.
    def has_change_permission(self, request: HttpRequest, obj: ChangeRequest | None = None) -> bool:
        return False

    def has_review_permission(self, request: HttpRequest) -> bool:
        """Offer the bulk approve/reject only to someone who may review somewhere
        (approve_change on a target); the policy still decides per change. Asked
        once per request: the change list asks it for every action and facet."""
        if not hasattr(request, "_changegate_may_review"):
            request._changegate_may_review = targets_reviewable(user=request.user).exists()  # type: ignore[attr-defined]
        return request._changegate_may_review  # type: ignore[attr-defined]

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
            path("<path:object_id>/revert/", wrap(self.revert_view), name="changes_changerequest_revert"),
            path("<path:object_id>/evidence/", wrap(self.evidence_view), name="changes_changerequest_evidence"),
            path("history/", wrap(partial(record_history_view, self)), name="changes_changerequest_history"),
            path("<path:object_id>/comment/", wrap(self.comment_view), name="changes_changerequest_comment"),
            path("<path:object_id>/edit/", wrap(partial(proposal.edit_view, self, form_class=ChangeProposalForm,
                                                        field_of=_proposal_field)), name="changes_changerequest_edit"),
            path("records/", wrap(partial(record_editor.record_editor_view, self)),
                 name="changes_changerequest_records"),
        ]
        return mine + super().get_urls()  # before the catch-all "<path:object_id>/"

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context is not None and "cl" in context:  # not a redirect, nor an action's own page
            context["waiting_count"], context["waiting_more"] = self._waiting_count(request, context["cl"])
        return response

    def _waiting_count(self, request: HttpRequest, cl: Any) -> tuple[int, bool]:
        """How many changes wait for the user's review, for the line above the list. On
        the page that is exactly that filter (no search, no other filter) its paginator
        has just counted the same rows: no statement. Elsewhere one count, stopped after
        WAITING_SHOWN + 1: the review rule is checked per pending change (5,000 of them:
        60-230 ms), and "100+ waiting" says what the line is for; the filter counts them all.
        Answers (the count shown, whether there are more)."""
        if cl.get_filters_params() == {ReviewFilter.parameter_name: ["waiting"]} and not cl.query:
            return cl.result_count, False
        waiting = changes_reviewable(user=request.user, within=self.get_queryset(request))
        count = waiting[:WAITING_SHOWN + 1].count()
        return min(count, WAITING_SHOWN), count > WAITING_SHOWN

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        targets = targets_visible(user=request.user)
        if request.method == "POST":
            form = ChangeProposalForm(request.POST, targets=targets)
        else:
            # The record editor opens this form with the patch its table made.
            form = ChangeProposalForm(targets=targets, initial={"target": request.GET.get("target"),
                                                                "patch": request.GET.get("patch", "")})
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                change = change_create(
                    actor=request.user, target=data["target"], title=data["title"], reason=data["reason"],
                    patch=data["patch"], health_checks=data["health_checks"],
                    options={"allow_apex": data["allow_apex"]}, origin=_admin_origin(request),
                    bake_override_seconds=data["bake_override_seconds"],
                    bake_override_reason=data["bake_override_reason"],
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
        return self._change_page(request, change)

    def _page_frame(self, request: HttpRequest, title: str) -> dict[str, Any]:
        opts = self.model._meta
        return {**self.admin_site.each_context(request), "title": title, "subtitle": None, "opts": opts,
                "app_label": opts.app_label, "media": self.media}

    def _change_page(self, request: HttpRequest, change: ChangeRequest,
                     comment_form: change_page.CommentForm | None = None) -> TemplateResponse:
        """The read-only change page (changes.admin.change_page says what it shows and why)."""
        events = [(event, _event_summary(event)) for event in change_events(change).select_related("actor")]
        context = {
            **self._page_frame(request, f"Change #{change.pk}: {change.title}"),
            **change_page.change_page_context(request, change, events=events, comment_form=comment_form),
        }
        return TemplateResponse(request, CHANGE_TEMPLATE, context)

    def comment_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Add a comment (changes.services.comment_add); a refused body is a form error on the page."""
        change = access_change(user=request.user, pk=object_id)
        if not self.has_view_permission(request, change):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        form = change_page.CommentForm(request.POST)
        form.is_valid()  # nothing to check here: the service does
        try:
            comment = comment_add(actor=request.user, change=change, body=form.cleaned_data.get("body", ""),
                                  origin=_admin_origin(request))
        except ValidationFailed as exc:
            add_service_errors(form, exc.errors, field_of=lambda field: field)
            return self._change_page(request, change, comment_form=form)
        messages.success(request, "Your comment is added.")
        if getattr(comment, "mentions_ignored", None):
            messages.warning(request, "Nobody was alerted for " + ", ".join(f"@{name}" for name in
                             comment.mentions_ignored)  # type: ignore[attr-defined]
                             + ": no such user who may see this change.")
        return HttpResponseRedirect(reverse("admin:changes_changerequest_change", args=[change.pk]) + "#comments")

    def evidence_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The printable evidence report: `change_evidence`, the same dict the API answers."""
        change = access_change(user=request.user, pk=object_id)  # 404 for missing and for invisible
        if not self.has_view_permission(request, change):
            raise PermissionDenied
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        evidence = change_evidence(change)
        kind = kind_of(change.target)
        context = {
            "title": f"Evidence: change #{change.pk}",
            "change": change,
            "evidence": evidence,
            "steps": [
                {"name": step["name"], "type": step["type"],
                 "before": _rrset_text(kind, step["name"], step["type"], RRValue.from_json(step["before"])),
                 "after": _rrset_text(kind, step["name"], step["type"], RRValue.from_json(step["after"]))}
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
        seqs = [event["seq"] for event in evidence["events"]]
        context["summary"] = evidence_summary(evidence, context["steps"])
        context["chain"] = chain_status(min(seqs, default=None), max(seqs, default=None))
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
        """Approve the fingerprint the page showed, once the reviewer has ticked the box
        naming that fingerprint and its number of steps; without the box (or with another
        fingerprint in it), the confirmation page instead, and nothing is approved. Whoever
        may not review the change gets the policy's refusal, not a page to confirm."""
        if request.method == "POST" and not change_page.approve_confirmed(request.POST):
            change = access_change(user=request.user, pk=object_id)
            if not self.has_view_permission(request, change):
                raise PermissionDenied
            if not change_page.may_review(request.user, change):
                return self._action(request, object_id, change_approve, _approved_message,
                                    fingerprint=request.POST.get("fingerprint", ""),
                                    comment=request.POST.get("comment", ""))
            context = {
                **self._page_frame(request, f"Approve change #{change.pk}?"),
                **change_page.approve_confirm_context(
                    change, fingerprint=request.POST.get("fingerprint", "").strip(),
                    comment=request.POST.get("comment", ""), unticked="reviewed" in request.POST),
            }
            return TemplateResponse(request, APPROVE_CONFIRM_TEMPLATE, context)
        # The fingerprint is the one the page showed: approving binds to what was seen.
        return self._action(request, object_id, change_approve, _approved_message,
                            fingerprint=request.POST.get("fingerprint", ""), comment=request.POST.get("comment", ""))

    def reject_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._action(request, object_id, change_reject, "rejected", comment=request.POST.get("comment", ""))

    def revert_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The one-person revert (changes.services.reverts): the page's form posts the
        reason and a ticked box naming this change, since it applies without a second
        approval; then the revert's own page. A refusal is a message on this change's page."""
        change = access_change(user=request.user, pk=object_id)
        if not self.has_view_permission(request, change):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        here = HttpResponseRedirect(reverse("admin:changes_changerequest_change", args=[change.pk]))
        if request.POST.get("confirm", "").strip() != str(change.pk):
            messages.error(request, f"Nothing was reverted: tick the box to confirm that change #{change.pk} is "
                                    "undone without a second approval.")
            return here
        try:
            revert = change_revert(actor=request.user, change=change, reason=request.POST.get("reason", ""),
                                   origin=_admin_origin(request))
        except ServiceError as exc:
            messages.error(request, exc.message)
            return here
        messages.success(request, f"Change #{revert.pk} reverts #{change.pk}: approved on the approvals of "
                                  f"#{change.pk} and queued to apply.")
        return HttpResponseRedirect(reverse("admin:changes_changerequest_change", args=[revert.pk]))

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
