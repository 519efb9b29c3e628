"""REST API v1. Each view parses its input, calls one selector or service, and
renders the result; the rules live in `changes.services` and `approvals.policy`.
Objects the user may not see answer 404 (the selectors decide), and every error
has the shape of `ErrorSerializer` (see `changes.api.exceptions`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from approvals import policy
from audit import export as audit_export
from audit.chain import RequestOrigin
from audit.evidence import change_evidence
from changes import selectors, services
from changes.api.query import StrictPageNumberPagination, StrictQueryMixin
from changes.api.serializers import (
    ApproveSerializer,
    AuditExportQuerySerializer,
    CancelSerializer,
    ChangeCreateSerializer,
    ChangeDetailSerializer,
    ChangeListQuerySerializer,
    ChangeSummarySerializer,
    ChangeUpdateSerializer,
    EmergencyReviewSerializer,
    EmergencySerializer,
    ErrorSerializer,
    EvidenceSerializer,
    LiveQuerySerializer,
    LiveRRsetSerializer,
    RejectSerializer,
    RevertSerializer,
    RollbackSerializer,
    TargetRegisterSerializer,
    TargetSerializer,
)
from changes.models import ChangeRequest, Origin, Target
from changes.search import changes_search

# ---------------------------------------------------------------------------
# Input hygiene shared by every endpoint


class JSONBodyParser(JSONParser):
    """JSON bodies only, and only JSON the rest of the stack can hold: nesting is
    bounded (deep nesting would hit the recursion limit somewhere downstream),
    numbers are finite, and no string carries NUL or an unpaired surrogate, which
    PostgreSQL and the UTF-8 response encoder cannot take. (The size is capped by
    Django's DATA_UPLOAD_MAX_MEMORY_SIZE: DRF reads JSON through request.body.)"""

    MAX_DEPTH = 32

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except (RecursionError, LookupError) as exc:  # too deep; an unknown charset
            raise ParseError(f"JSON parse error - {exc}") from None
        _check_text(data, self.MAX_DEPTH)
        return data


def _bad_text(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_text(data: Any, max_depth: int) -> None:
    errors: dict[str, list[str]] = {}
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > max_depth:
            raise ParseError(f"JSON parse error - nested deeper than {max_depth} levels")
        if isinstance(value, str):
            if _bad_text(value):
                errors[path or "body"] = ["Text may not contain NUL characters or unpaired surrogates."]
        elif isinstance(value, Mapping):
            for key, child in value.items():
                child_path = f"{path}.{key}" if path else str(key)
                if _bad_text(str(key)):
                    errors[path or "body"] = ["Field names may not contain NUL characters or unpaired surrogates."]
                    continue
                stack.append((child, child_path, depth + 1))
        elif isinstance(value, float) and not math.isfinite(value):
            # json reads 1e999 as inf; no field takes it and no renderer can echo it.
            raise ParseError("JSON parse error - numbers must be finite")
        elif isinstance(value, list):
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(value))
    if errors:
        raise serializers.ValidationError(errors)


def parse(serializer_class: type[serializers.Serializer], data: Any, request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=data, context={"request": request})
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def origin_of(request: Request) -> RequestOrigin:
    return RequestOrigin.from_request(request, kind=Origin.API)


def change_detail(request: Request, change: ChangeRequest) -> dict[str, Any]:
    """The detail representation, read back through the selector so that a write's
    answer is exactly what a GET of the same change shows."""
    fresh = selectors.access_change(user=request.user, pk=change.pk)
    return ChangeDetailSerializer(fresh, context={"request": request}).data


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    described = {
        400: "Bad input; `errors` names every rejected field or query parameter.",
        401: "Not authenticated.",
        403: "Not permitted.",
        404: "No such object, or not visible to you.",
        409: "The change is in a state that does not allow this, or was edited meanwhile.",
        502: "The target refuses us (configuration or key problem).",
        503: "The target cannot be reached right now; retry later.",
    }
    # Every operation may answer 400: each refuses an unknown or repeated query parameter (StrictQueryMixin).
    return {code: OpenApiResponse(ErrorSerializer, description=described[code])
            for code in sorted({400, 401, *codes})}


REF = OpenApiParameter("ref", str, OpenApiParameter.PATH, description="Target id or name.")
PK = OpenApiParameter("id", int, OpenApiParameter.PATH, description="Change id.")


class APIBase(StrictQueryMixin, APIView):
    parser_classes = [JSONBodyParser]


@csrf_exempt  # a 404 for every method: CSRF's HTML 403 must not answer a POST first
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any path under /api/ that no route matches (`/api/v1/changes/-1/`): the API's
    JSON 404, not Django's HTML page (mounted last in config/urls.py)."""
    return JsonResponse({"detail": "no such API endpoint", "code": "not_found"}, status=404)


# ---------------------------------------------------------------------------
# Targets


class TargetListView(StrictQueryMixin, generics.ListAPIView):
    parser_classes = [JSONBodyParser]
    pagination_class = StrictPageNumberPagination
    serializer_class = TargetSerializer

    def get_queryset(self) -> Any:
        return selectors.targets_visible(user=self.request.user)

    @extend_schema(operation_id="targets_list", summary="Targets you may see",
                   responses={200: TargetSerializer(many=True), **_errors()})
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="targets_create", summary="Register a target: a DNS zone or an nftables host (operators)",
        description="Checks the config and that the target answers before storing it: DNS, SOA over TCP with the "
                    "key; nftables, the host helper runs and the owned tables exist (`prepare`: created empty).",
        request=TargetRegisterSerializer, responses={201: TargetSerializer, **_errors(400, 403, 502, 503)},
    )
    def post(self, request: Request) -> Response:
        data = parse(TargetRegisterSerializer, request.data, request)
        target = services.target_register(actor=request.user, origin=origin_of(request), **data)
        return Response(TargetSerializer(target, context={"request": request}).data, status=status.HTTP_201_CREATED)


class TargetDetailView(APIBase):
    @extend_schema(operation_id="targets_retrieve", summary="One target", parameters=[REF],
                   responses={200: TargetSerializer, **_errors(404)})
    def get(self, request: Request, ref: str) -> Response:
        target: Target = selectors.access_target(user=request.user, ref=ref)
        return Response(TargetSerializer(target, context={"request": request}).data)


class TargetLiveView(APIBase):
    query_serializer = LiveQuerySerializer

    @extend_schema(
        operation_id="targets_live", summary="Read one live RRset", parameters=[REF, LiveQuerySerializer],
        description="Reads the RRset from the zone's primary right now (TSIG-signed query).",
        responses={200: LiveRRsetSerializer, **_errors(400, 404, 502, 503)},
    )
    def get(self, request: Request, ref: str) -> Response:
        target = selectors.access_target(user=request.user, ref=ref)
        query = parse(LiveQuerySerializer, request.query_params, request)
        key, value = selectors.target_read_live(target=target, name=query["name"], rdtype=query["type"])
        body = {"name": key.name, "type": key.rdtype, "value": value.to_json() if value else None}
        return Response(LiveRRsetSerializer(body).data)


# ---------------------------------------------------------------------------
# Changes


class ChangeSearchQuerySerializer(ChangeListQuerySerializer):
    # The admin's search box, the same selector (changes.search): narrows what you may see.
    q = serializers.CharField(
        required=False, max_length=200,
        help_text="Search: a change number (42, #42), an author (username or its beginning), a record name "
        "(www, www.demo.test.), a value (192.0.2.31) or words of the title. Every term must match.")


class ChangeListView(StrictQueryMixin, generics.ListAPIView):
    parser_classes = [JSONBodyParser]
    pagination_class = StrictPageNumberPagination
    query_serializer = ChangeSearchQuerySerializer
    serializer_class = ChangeSummarySerializer

    def get_queryset(self) -> Any:
        query = parse(ChangeSearchQuerySerializer, self.request.query_params, self.request)
        # The summary shows no editors: one query per page fewer than the detail needs.
        changes = selectors.changes_visible(user=self.request.user).prefetch_related(None)
        if "state" in query:
            changes = changes.filter(state=query["state"])
        if "target" in query:
            changes = changes.filter(selectors.target_ref_q(query["target"], via="target__"))
        if "author" in query:
            changes = changes.filter(author__username=query["author"])
        if query.get("reviewable"):
            changes = selectors.changes_reviewable(user=self.request.user, within=changes)
        if "q" in query:
            changes = changes_search(within=changes, text=query["q"])
        return changes

    @extend_schema(operation_id="changes_list", summary="Changes on targets you may see",
                   parameters=[ChangeSearchQuerySerializer],
                   responses={200: ChangeSummarySerializer(many=True), **_errors(400)})
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="changes_create", summary="Propose a change",
        description="Validates the items (or patch lines), reads the live zone and stores a draft with its plan. "
        "Answers with the change exactly as GET shows it.",
        request=ChangeCreateSerializer, responses={201: ChangeDetailSerializer, **_errors(400, 403, 502, 503)},
    )
    def post(self, request: Request) -> Response:
        data = parse(ChangeCreateSerializer, request.data, request)
        change = services.change_create(actor=request.user, origin=origin_of(request), **data)
        # Not read back through access_change: the target was found among those the
        # user may see (ChangeCreateSerializer) and the service just stored this row,
        # so the answer is what GET shows without a second permission resolution.
        context = {"request": request, "created": change}
        return Response(ChangeDetailSerializer(change, context=context).data, status=status.HTTP_201_CREATED)


class ChangeDetailView(APIBase):
    @extend_schema(operation_id="changes_retrieve", summary="One change with plan, diff and events",
                   parameters=[PK], responses={200: ChangeDetailSerializer, **_errors(404)})
    def get(self, request: Request, pk: int) -> Response:
        change = selectors.access_change(user=request.user, pk=pk)
        return Response(ChangeDetailSerializer(change, context={"request": request}).data)

    @extend_schema(
        operation_id="changes_partial_update", summary="Edit a change",
        description="Re-plans against live; a new revision voids approvals given to the old one.",
        parameters=[PK], request=ChangeUpdateSerializer,
        responses={200: ChangeDetailSerializer, **_errors(400, 403, 404, 409, 502, 503)},
    )
    def patch(self, request: Request, pk: int) -> Response:
        change = selectors.access_change(user=request.user, pk=pk)
        data = parse(ChangeUpdateSerializer, request.data, request)
        change = services.change_update(actor=request.user, change=change, origin=origin_of(request), **data)
        return Response(change_detail(request, change))


class ChangeActionView(APIBase):
    """POST /changes/{id}/<action>/: find the change you may see, parse the body,
    call one service or policy function, answer with the detail."""

    input_serializer: type[serializers.Serializer] | None = None
    service: Any = None  # a services/policy function taking actor, change, origin and the body

    def post(self, request: Request, pk: int) -> Response:
        change = selectors.access_change(user=request.user, pk=pk)
        data = parse(self.input_serializer, request.data, request) if self.input_serializer else {}
        change = type(self).service(actor=request.user, change=change, origin=origin_of(request), **data)
        return Response(change_detail(request, change))


@extend_schema_view(post=extend_schema(operation_id="changes_plan", summary="Re-run the dry-run against live",
                   parameters=[PK], request=None,
                   responses={200: ChangeDetailSerializer, **_errors(400, 403, 404, 409, 502, 503)}))
class ChangePlanView(ChangeActionView):
    service = staticmethod(services.change_plan)


@extend_schema_view(post=extend_schema(operation_id="changes_submit", summary="Submit for approval (draft -> pending_approval)",
                   parameters=[PK], request=None,
                   responses={200: ChangeDetailSerializer, **_errors(403, 404, 409)}))
class ChangeSubmitView(ChangeActionView):
    service = staticmethod(services.change_submit)


@extend_schema_view(post=extend_schema(operation_id="changes_cancel",
                   summary="Withdraw a change, saying why (author, editor or operator)",
                   parameters=[PK], request=CancelSerializer,
                   responses={200: ChangeDetailSerializer, **_errors(400, 403, 404, 409)}))
class ChangeCancelView(ChangeActionView):
    input_serializer = CancelSerializer
    service = staticmethod(services.change_cancel)


@extend_schema_view(post=extend_schema(operation_id="changes_approve", summary="Approve exactly the plan with this fingerprint",
                   description="403 for the author, its editors and users without approve_change on the target; "
                               "409 when the fingerprint is stale (the body carries `current_fingerprint`) "
                               "or the change is not pending.",
                   parameters=[PK], request=ApproveSerializer,
                   responses={200: ChangeDetailSerializer, **_errors(400, 403, 404, 409)}))
class ChangeApproveView(ChangeActionView):
    input_serializer = ApproveSerializer
    service = staticmethod(policy.change_approve)


@extend_schema_view(post=extend_schema(operation_id="changes_reject", summary="Reject a pending change, saying why",
                   parameters=[PK], request=RejectSerializer,
                   responses={200: ChangeDetailSerializer, **_errors(400, 403, 404, 409)}))
class ChangeRejectView(ChangeActionView):
    input_serializer = RejectSerializer
    service = staticmethod(policy.change_reject)


@extend_schema_view(post=extend_schema(operation_id="changes_emergency", summary="Break glass: approve alone, as an emergency",
                   description="Needs emergency_change on the target. The change is flagged, the target's "
                               "reviewers are alerted, and it waits in the emergency review queue.",
                   parameters=[PK], request=EmergencySerializer,
                   responses={200: ChangeDetailSerializer, **_errors(400, 403, 404, 409)}))
class ChangeEmergencyView(ChangeActionView):
    input_serializer = EmergencySerializer
    service = staticmethod(policy.change_emergency)


@extend_schema_view(post=extend_schema(operation_id="changes_emergency_review", summary="Review a break-glass change after the fact",
                   parameters=[PK], request=EmergencyReviewSerializer,
                   responses={200: ChangeDetailSerializer, **_errors(400, 403, 404, 409)}))
class ChangeEmergencyReviewView(ChangeActionView):
    input_serializer = EmergencyReviewSerializer
    service = staticmethod(policy.emergency_review)


class ChangeRollbackView(APIBase):
    @extend_schema(operation_id="changes_rollback", summary="Propose the manual rollback of an applied change",
                   description="Creates a new change (a draft) whose items put every RRset back to the applied "
                               "plan's `before`; it needs submitting and four-eyes approval like any other.",
                   parameters=[PK], request=RollbackSerializer,
                   responses={201: ChangeDetailSerializer, **_errors(400, 403, 404, 409, 502, 503)})
    def post(self, request: Request, pk: int) -> Response:
        change = selectors.access_change(user=request.user, pk=pk)
        data = parse(RollbackSerializer, request.data, request)
        rollback = services.change_propose_rollback(actor=request.user, change=change, origin=origin_of(request),
                                                    **data)
        return Response(change_detail(request, rollback), status=status.HTTP_201_CREATED)


class ChangeRevertView(APIBase):
    @extend_schema(operation_id="changes_revert", summary="Revert a young change alone, inside its watch window",
                   description="Its author or one of the people whose approval of it counted (still holding the "
                               "role) may undo an applied change alone while its watch window runs: a new change, "
                               "the exact inverse of the applied plan, approved at once on the original approvals "
                               "and queued to apply (only while the change's `after` is still live). 403 for anyone "
                               "else; 409 after the window (a rollback is then an ordinary four-eyes change: "
                               "POST .../rollback/), for a change not applied or already reverted.",
                   parameters=[PK], request=RevertSerializer,
                   responses={201: ChangeDetailSerializer, **_errors(400, 403, 404, 409)})
    def post(self, request: Request, pk: int) -> Response:
        change = selectors.access_change(user=request.user, pk=pk)
        data = parse(RevertSerializer, request.data, request)
        revert = services.change_revert(actor=request.user, change=change, origin=origin_of(request), **data)
        return Response(change_detail(request, revert), status=status.HTTP_201_CREATED)


class EmergencyQueueView(StrictQueryMixin, generics.ListAPIView):
    """Break-glass changes without their after-the-fact review, oldest first."""

    serializer_class = ChangeSummarySerializer
    pagination_class = StrictPageNumberPagination

    def get_queryset(self) -> Any:
        return selectors.changes_emergency_unreviewed(user=self.request.user)

    @extend_schema(operation_id="emergency_queue", summary="Emergency changes waiting for review",
                   responses={200: ChangeSummarySerializer(many=True), **_errors()})
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


# ---------------------------------------------------------------------------
# Audit


EXPORT_FILE = "The export file (attachment): JSON Lines or CSV, as `format` asks."


class AuditExportView(APIBase):
    """The audit log as a file, streamed: events of the targets you may export."""

    query_serializer = AuditExportQuerySerializer

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[BaseRenderer, str]:
        # `format` is the export's own parameter here, not DRF's renderer override
        # (which would answer 404 for ?format=csv); errors are JSON like everywhere.
        renderer = JSONRenderer()
        return renderer, renderer.media_type

    @extend_schema(
        operation_id="audit_export", summary="Export the audit log (JSON Lines or CSV, streamed)",
        description="Needs export_audit on a target: you get the events of every target you hold it on "
        "(superusers: all, including events without a target). One JSON object per line (sorted keys, ASCII), "
        "each event with its `hash` and `prev_hash`, and a signed checkpoint's line right after the event it "
        "covers. Every JSON Lines export is one contiguous piece of the chain, however it is filtered: an event "
        "you may not export, or that the filter (target, actor, change) leaves out, stands as a `withheld` line "
        "(seq, prev_hash, hash; no content), so `changegate-audit verify FILE` checks it offline and reports how "
        "many were withheld. CSV: one row per event, the same keys as columns, the payload as compact JSON; a "
        "withheld event is a row with only seq, prev_hash and hash.",
        parameters=[AuditExportQuerySerializer],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.BINARY, description=EXPORT_FILE),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description=EXPORT_FILE),
            **_errors(400, 403),
        },
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        query = audit_export.export_query(user=request.user, params=request.query_params)
        response = StreamingHttpResponse(audit_export.export_stream(user=request.user, query=query),
                                         content_type=query.content_type)
        response["Content-Disposition"] = f'attachment; filename="{query.filename()}"'
        response["Cache-Control"] = "no-store"
        return response


class ChangeEvidenceView(APIBase):
    @extend_schema(
        operation_id="changes_evidence", summary="The evidence report of one change",
        description="Who requested it and why, the exact plan and fingerprint, every approval with the "
        "fingerprint approved, rejections, the emergency flag and its review, the execution, every health-check "
        "result, the rollback, and the change's audit events with their hashes.",
        parameters=[PK], responses={200: EvidenceSerializer, **_errors(404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        change = selectors.access_change(user=request.user, pk=pk)
        return Response(change_evidence(change))
