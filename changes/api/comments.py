"""REST API v1: the discussion on a change (issue 15), GET/POST
/changes/{id}/comments/. Thin like the other views: find the change you may see
(404 otherwise, before anything about the body), call the selector or the
service, render."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response

from changes import selectors, services
from changes.api.query import StrictPageNumberPagination, StrictQueryMixin
from changes.api.serializers.comments import (
    ChangeCommentAddedSerializer,
    ChangeCommentCreateSerializer,
    ChangeCommentSerializer,
)
from changes.api.views import PK, JSONBodyParser, _errors, origin_of, parse
from changes.models import ChangeComment


class ChangeCommentListView(StrictQueryMixin, generics.ListAPIView):
    parser_classes = [JSONBodyParser]
    pagination_class = StrictPageNumberPagination
    serializer_class = ChangeCommentSerializer

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular reading the view for the schema
            return ChangeComment.objects.none()
        change = selectors.access_change(user=self.request.user, pk=self.kwargs["pk"])
        return selectors.change_comments(change)

    @extend_schema(operation_id="changes_comments_list", summary="The discussion on a change, oldest first",
                   parameters=[PK], responses={200: ChangeCommentSerializer(many=True), **_errors(404)})
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="changes_comments_create", summary="Comment on a change (anyone who may see it)",
        description="Recorded as the audit event `comment_added`. Each `@username` that names someone who may see "
                    "the change is alerted by email; the others are listed in `mentions_ignored`.",
        parameters=[PK], request=ChangeCommentCreateSerializer,
        responses={201: ChangeCommentAddedSerializer, **_errors(400, 404)},
    )
    def post(self, request: Request, pk: int) -> Response:
        change = selectors.access_change(user=request.user, pk=pk)
        data = parse(ChangeCommentCreateSerializer, request.data, request)
        comment = services.comment_add(actor=request.user, change=change, origin=origin_of(request), **data)
        return Response(ChangeCommentAddedSerializer(comment).data, status=status.HTTP_201_CREATED)
