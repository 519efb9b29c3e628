"""The record editor (issue 15): the RRsets at one name of a DNS target, read live, as a
table of rows an engineer edits instead of writing patch lines. It writes nothing: the
table becomes patch text (the same items a hand-written patch gives) and the proposal
form opens with it, where the title, reason and checks are added and change_create runs."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from adapters import RRKey, RRValue
from changes.adapters import adapter_for
from changes.errors import ServiceError, ValidationFailed
from changes.kinds import kind_of, target_unavailable_on_adapter_error
from changes.models import Target
from changes.selectors import targets_visible

TEMPLATE = "admin/changes/changerequest/record_editor.html"
# The types the table reads and offers: one read of these keys at the name (one query
# each on one connection), not a zone transfer. A type outside the list is edited as a patch.
EDITOR_TYPES = ("A", "AAAA", "CNAME", "MX", "TXT", "SRV", "CAA", "NS", "PTR")
DEFAULT_TTL = 300


class NameForm(forms.Form):
    target = forms.ModelChoiceField(queryset=Target.objects.none())
    name = forms.CharField(max_length=255, help_text="Relative to the zone unless it ends in '.'; '@' is the apex.")

    def __init__(self, *args: Any, targets: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["target"].queryset = targets.filter(kind="dns")  # type: ignore[attr-defined]


class RecordRow(forms.Form):
    type = forms.ChoiceField(choices=[(t, t) for t in EDITOR_TYPES])
    ttl = forms.IntegerField(min_value=0, required=False)
    value = forms.CharField(required=False, widget=forms.TextInput(attrs={"size": 50, "spellcheck": "false"}))
    delete = forms.BooleanField(required=False)


RowFormSet = forms.formset_factory(RecordRow, extra=3)


def read_name(target: Target, name: str) -> tuple[RRKey, dict[str, RRValue]]:
    """The live RRsets of EDITOR_TYPES at `name` (absolute key name, {type: value}).
    ValidationFailed naming `name`; TargetUnavailable when the zone cannot be read."""
    kind = kind_of(target)
    key, errors = kind.parse_key(target.config, name, "A")
    if key is None:
        raise ValidationFailed([{"index": None, "field": field, "message": message} for field, message in errors])
    keys = [RRKey(key.name, rdtype) for rdtype in EDITOR_TYPES]
    with target_unavailable_on_adapter_error(target):
        adapter = adapter_for(target)
        try:
            live = adapter.read(keys)
        finally:
            adapter.close()
    return key, {k.rdtype: value for k in keys if (value := live.get(k)) is not None}


def rows_of(live: dict[str, RRValue]) -> list[dict[str, Any]]:
    return [{"type": rdtype, "ttl": value.ttl, "value": rdata}
            for rdtype, value in live.items() for rdata in value.rdatas]


def patch_of(name: str, live: dict[str, RRValue], rows: list[dict[str, Any]]) -> str:
    """The table as patch lines: an RRset whose rows differ from live becomes '=' lines
    (the RRset becomes exactly the rows), one whose rows are all gone a '- NAME TYPE'
    delete; an unchanged one nothing. `rows`: the formset's cleaned rows."""
    wanted: dict[str, tuple[int | None, list[str]]] = {}
    for row in rows:
        value = (row.get("value") or "").strip()
        if not row or row.get("delete") or not value:
            continue
        ttl, values = wanted.setdefault(row["type"], (row.get("ttl"), []))
        if ttl is None and row.get("ttl") is not None:
            wanted[row["type"]] = (row["ttl"], values)
        values.append(value)
    lines = []
    for rdtype in [t for t in EDITOR_TYPES if t in live or t in wanted]:
        before = live.get(rdtype)
        if rdtype not in wanted:
            lines.append(f"- {name} {rdtype}")
            continue
        ttl, values = wanted[rdtype]
        ttl = ttl if ttl is not None else (before.ttl if before else DEFAULT_TTL)
        if before is not None and before.ttl == ttl and sorted(before.rdatas) == sorted(values):
            continue  # as typed may differ from canonical text: then the plan finds it unchanged
        lines += [f"= {name} {ttl} IN {rdtype} {value}" for value in values]
    return "\n".join(lines)


def _shown_name(key_name: str, target: Target) -> str:
    zone = str(target.config.get("zone", "")).rstrip(".").lower() + "."
    if key_name.lower() == zone:
        return "@"
    return key_name[: -len(zone) - 1] if key_name.lower().endswith("." + zone) else key_name


def record_editor_view(model_admin: admin.ModelAdmin, request: HttpRequest) -> HttpResponse:
    """GET ?target=&name=: the table of the live RRsets at the name. POST: the table's
    patch, opened in the proposal form (nothing is stored until that form is sent)."""
    if not model_admin.has_add_permission(request):
        raise PermissionDenied
    if request.method not in ("GET", "HEAD", "POST"):
        return HttpResponseNotAllowed(["GET", "HEAD", "POST"])
    source = request.POST if request.method == "POST" else request.GET
    name_form = NameForm(source if "name" in source else None, targets=targets_visible(user=request.user))
    context: dict[str, Any] = {"name_form": name_form, "formset": None}
    if name_form.is_bound and name_form.is_valid():
        target, name = name_form.cleaned_data["target"], name_form.cleaned_data["name"]
        try:
            key, live = read_name(target, name)
        except ValidationFailed as exc:
            for error in exc.errors:
                name_form.add_error("name" if error["field"] == "name" else None, error["message"])
        except ServiceError as exc:  # TargetUnavailable
            name_form.add_error(None, exc.message)
        else:
            shown = _shown_name(key.name, target)
            if request.method == "POST":
                formset = RowFormSet(request.POST, prefix="rr")
                if formset.is_valid():
                    patch = patch_of(shown, live, [row for row in formset.cleaned_data if row])
                    if not patch:
                        formset._non_form_errors = formset.error_class(  # type: ignore[attr-defined]
                            ["the table is what is live: there is nothing to propose"])
                    else:
                        add = reverse("admin:changes_changerequest_add")
                        return HttpResponseRedirect(f"{add}?{urlencode({'target': target.pk, 'patch': patch})}")
            else:
                formset = RowFormSet(initial=rows_of(live), prefix="rr")
            context.update(formset=formset, target=target, key_name=key.name, shown_name=shown)
    opts = model_admin.model._meta
    context.update({**model_admin.admin_site.each_context(request), "title": "Edit the records at a name",
                    "opts": opts, "app_label": opts.app_label, "media": model_admin.media})
    return TemplateResponse(request, TEMPLATE, context)
