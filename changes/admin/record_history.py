"""History by record (issue 15): from a record (a DNS RRset, a firewall chain or set)
to every visible change that touched it, newest first, with its state, author, times
and what it did there. Reached from the change list ("History by record") and, per
step, from the change page: /admin/changes/changerequest/history/?target=<id>&name=<name>&type=<type>
(`record_history_url`). Which changes touch the record is changes.search's
`changes_touching`; this page only reads the form and renders. A page costs the same
statements whatever the history holds: the target, the count and the page's rows."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.template.response import TemplateResponse
from django.urls import reverse

from changes.admin.listing import STATES_CSS, emergency_cell, state_cell, time_cell
from changes.errors import ValidationFailed
from changes.models import ChangeRequest, Target
from changes.search import changes_touching, record_forms
from changes.selectors import targets_visible

HISTORY_TEMPLATE = "admin/changes/changerequest/record_history.html"
PER_PAGE = 100
# What a row shows: no target config, no health checks, no editors.
SHOWN = ("id", "title", "state", "emergency", "created_at", "updated_at", "items", "plan", "target__name",
         "author__username")


def record_history_url(*, target: Target | int, name: str, rdtype: str) -> str:
    """The history page of one record: the change page links each plan step here."""
    target_id = target.pk if isinstance(target, Target) else target
    query = urlencode({"target": target_id, "name": name, "type": rdtype})
    return f"{reverse('admin:changes_changerequest_history')}?{query}"


class RecordForm(forms.Form):
    target = forms.ModelChoiceField(queryset=Target.objects.none())
    name = forms.CharField(max_length=300, help_text="www, www.demo.test. or, on a firewall, inet filter input")
    type = forms.CharField(max_length=20, help_text="A, AAAA, MX, ... or, on a firewall, chain or set")

    def __init__(self, *args: Any, targets: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Only visible targets: an invisible one is "not one of the available choices", like a missing one.
        self.fields["target"].queryset = targets  # type: ignore[attr-defined]


def record_history_view(model_admin: admin.ModelAdmin, request: HttpRequest) -> HttpResponse:
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    asked = any(field in request.GET for field in ("target", "name", "type"))
    form = RecordForm(request.GET if asked else None, targets=targets_visible(user=request.user))
    context: dict[str, Any] = {"form": form, "rows": None, "record": None}
    if asked and form.is_valid():
        target, name, rdtype = form.cleaned_data["target"], form.cleaned_data["name"], form.cleaned_data["type"]
        try:
            changes = changes_touching(within=model_admin.get_queryset(request), target=target, name=name,
                                       rdtype=rdtype)
            key_name, key_type, names = record_forms(target, name, rdtype)
        except ValidationFailed as exc:
            for error in exc.errors:
                form.add_error(error["field"] if error["field"] in form.fields else None, error["message"])
        else:
            page = Paginator(changes.select_related("target", "author").only(*SHOWN), PER_PAGE).get_page(
                request.GET.get("p"))
            context.update({
                "record": {"target": target, "name": key_name, "type": key_type},
                "page": page,
                "rows": [_row(change, names, key_type) for change in page],
                "page_query": urlencode({"target": target.pk, "name": name, "type": rdtype}),
            })
    opts = model_admin.model._meta
    record = context["record"]
    context.update({
        **model_admin.admin_site.each_context(request),
        "title": f"Changes that touched {record['name']} {record['type']}" if record else "History by record",
        "subtitle": None,
        "opts": opts,
        "app_label": opts.app_label,
        "states_css": STATES_CSS,
        "media": model_admin.media + form.media,
    })
    return TemplateResponse(request, HISTORY_TEMPLATE, context)


def _row(change: ChangeRequest, names: list[str], rdtype: str) -> dict[str, Any]:
    # The same cells as the change list's (changes.admin.listing).
    return {"change": change, "url": reverse("admin:changes_changerequest_change", args=[change.pk]),
            "did": _what_it_did(change, names, rdtype), "state": state_cell(change.state),
            "emergency": emergency_cell(change.emergency), "created": time_cell(change.created_at),
            "updated": time_cell(change.updated_at)}


def _what_it_did(change: ChangeRequest, names: list[str], rdtype: str) -> list[str]:
    """The plan's step on the record (before -> after), else the items that name it:
    what the reviewer would look for in the change itself."""
    def touches(name: Any, kind: Any) -> bool:
        return str(name or "").lower() in names and str(kind or "").lower() == rdtype.lower()

    steps = [step for step in (change.plan or {}).get("steps", []) if isinstance(step, dict)
             and touches(step.get("name"), step.get("type"))]
    if steps:
        return [f"{_value_text(step.get('before'))} \u2192 {_value_text(step.get('after'))}" for step in steps]
    did = []
    for item in change.items or []:
        if not isinstance(item, dict):
            continue
        if "table" in item:
            kind, name = ("chain", item.get("chain")) if "chain" in item else ("set", item.get("set"))
            if not touches(f"{item.get('table')} {name}", kind):
                continue
        elif not touches(item.get("name"), item.get("type")):
            continue
        values = item.get("records") or item.get("rules") or item.get("elements") or (
            [item["rule"]] if item.get("rule") else [])
        did.append(" ".join([str(item.get("op", "")), *map(str, values)]).strip())
    return did


def _value_text(value: Any) -> str:
    if not isinstance(value, dict):
        return "(absent)"
    return ", ".join(map(str, value.get("rdatas", []))) or "(empty)"
