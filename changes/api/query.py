"""Query strings, read strictly: every parameter once, only the documented ones,
and a bad value is a 400 naming the parameter (like a bad body field), never a
404 or a silently ignored typo."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request


class StrictPageNumberPagination(PageNumberPagination):
    """DRF's page numbers, with a bad or out-of-range `page` a 400 naming it
    (DRF answers 404 "Invalid page.", which names nothing and reads as a missing
    endpoint)."""

    def get_page_number(self, request: Request, paginator: Any) -> int:
        raw = request.query_params.get(self.page_query_param, "1")
        # isascii: "²".isdigit() is True; the length bound keeps int() and the
        # paginator's arithmetic small.
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 9 and int(raw) >= 1):
            raise serializers.ValidationError({self.page_query_param: ["A page number: an integer from 1."]})
        return int(raw)

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any] | None:
        try:
            return super().paginate_queryset(queryset, request, view)
        except NotFound:  # past the last page
            pages = self.django_paginator_class(queryset, self.get_page_size(request)).num_pages
            raise serializers.ValidationError(
                {self.page_query_param: [f"Past the last page (there are {pages})."]}) from None


class StrictQueryMixin:
    """Refuses, after authentication and permissions, a query string with a
    parameter the view does not document, or one given more than once (Django
    would silently use the last), or holding NUL (PostgreSQL cannot compare text
    holding it), or empty. `query_serializer` lists the parameters; a paginated list view
    also takes `page`."""

    query_serializer: type[serializers.Serializer] | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        allowed = set(self.query_serializer().fields) if self.query_serializer else set()
        paginator = getattr(self, "paginator", None)
        if paginator is not None:
            allowed.add(paginator.page_query_param)
        errors: dict[str, list[str]] = {}
        for name in request.query_params:
            values = request.query_params.getlist(name)
            if name not in allowed:
                errors[name] = ["Unknown query parameter."]
            elif len(values) > 1:
                errors[name] = ["Given more than once."]
            elif any("\x00" in value for value in values):
                errors[name] = ["Must not contain NUL characters."]
            elif values == [""]:
                # DRF would read `?author=` as "not given"; the schema says a
                # parameter is either absent or a value.
                errors[name] = ["Must not be empty: leave the parameter out instead."]
        if errors:
            raise serializers.ValidationError(errors)
