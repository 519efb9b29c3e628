"""`{% change_result_list cl %}`: Django's `{% result_list cl %}` (same template, headers
and hidden fields) with the rows from the change list's own `result_rows()`, which renders
the same cells with the per-column work done once per page (changes.admin.change_requests
.ChangeRequestList). A list without `result_rows` gets Django's rows."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.templatetags.admin_list import result_headers, result_list
from django.contrib.admin.templatetags.base import InclusionAdminNode
from django.template import Library

register = Library()


def change_result_list(cl: Any) -> dict[str, Any]:
    rows = getattr(cl, "result_rows", None)
    if rows is None or cl.formset:
        return result_list(cl)
    # admin_list.result_list's context; no formset, so no hidden fields.
    headers = list(result_headers(cl))
    return {"cl": cl, "result_hidden_fields": [], "result_headers": headers,
            "num_sorted_fields": sum(1 for header in headers if header["sortable"] and header["sorted"]),
            "results": rows()}


@register.tag(name="change_result_list")
def change_result_list_tag(parser: Any, token: Any) -> InclusionAdminNode:
    return InclusionAdminNode(parser, token, func=change_result_list, template_name="change_list_results.html",
                              takes_context=False)
