"""What every admin page here shares: service errors become form errors, one
template for the add forms, and the request origin the audit events record."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import admin
from django.forms import Form
from django.http import HttpRequest
from django.template.response import TemplateResponse

from audit.chain import RequestOrigin
from changes.models import Origin

FORM_TEMPLATE = "admin/changes/form_page.html"


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
