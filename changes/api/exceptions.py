"""One error mapping for the whole API: every non-2xx body is
{"detail": text, "code": text} plus, for bad input, "errors" naming each field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from changes.errors import Contention, ServiceError, ValidationFailed
from changes.locking import is_contention


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, OperationalError) and is_contention(exc):
        # A deadlock or serialization failure that reached the view without a retry
        # (changes.locking.retry_on_contention): the transaction was rolled back, so
        # the client may simply try again. Nothing of the database error is shown.
        exc = Contention("the database is busy with concurrent changes; try again")
    if isinstance(exc, ServiceError):
        body: dict[str, Any] = {"detail": exc.message, "code": exc.code, **exc.extra()}
        if isinstance(exc, ValidationFailed):
            body["errors"] = exc.errors
        set_rollback()
        retry_after = getattr(exc, "retry_after", None)
        return Response(body, status=exc.status, headers={"Retry-After": str(retry_after)} if retry_after else None)
    if isinstance(exc, exceptions.ValidationError):
        errors = list(_flatten(exc.detail, ""))
        set_rollback()
        return Response(
            {"detail": "; ".join(f"{e['field']}: {e['message']}" for e in errors), "code": "invalid", "errors": errors},
            status=exc.status_code,
        )
    if isinstance(exc, RequestDataTooBig):  # over DATA_UPLOAD_MAX_MEMORY_SIZE
        return Response({"detail": "Request body too large.", "code": "too_large"},
                        status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or None)
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        response.data = {"detail": str(exc.detail), "code": codes if isinstance(codes, str) else "error"}
    return response


def _flatten(detail: Any, path: str) -> Iterator[dict[str, Any]]:
    """DRF's nested {"field": ["message"]} into [{"index", "field", "message"}], with
    paths written like the services write them ("items[0].ttl")."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if isinstance(key, int):  # ListField/DictField children
                yield from _flatten(value, f"{path}[{key}]")
                continue
            name = "body" if key == api_settings.NON_FIELD_ERRORS_KEY else str(key)
            yield from _flatten(value, f"{path}.{name}" if path else name)
    elif isinstance(detail, list):
        if all(not isinstance(v, dict | list) for v in detail):
            for message in detail:
                yield {"index": None, "field": path or "body", "message": str(message)}
        else:
            for i, value in enumerate(detail):
                yield from _flatten(value, f"{path}[{i}]")
    else:
        yield {"index": None, "field": path or "body", "message": str(detail)}
