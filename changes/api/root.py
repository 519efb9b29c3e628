"""`GET /api/v1/`: where a newcomer (or a client) lands first: what the API offers and
where its documentation is. Open to anyone: it lists routes, nothing stored."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

# (key, route name, what it is) — the entry points a client starts from; the rest is
# reached from these (a change's plan, approve, ... are under its own URL).
ENTRY_POINTS = (
    ("targets", "target-list", "DNS zones and firewall hosts you may see"),
    ("changes", "change-list", "change requests; ?reviewable=true is your review queue"),
    ("emergency_queue", "emergency-queue", "break-glass changes waiting for their review"),
    ("audit_export", "audit-export", "the hash-chained audit log (auditors)"),
    ("schema", "schema", "OpenAPI 3 schema"),
    ("docs", "swagger-ui", "Swagger UI"),
    ("redoc", "redoc", "ReDoc"),
)


class ApiRootView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []  # a bad token must not turn the map of the API into a 401

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        return Response({
            "name": "changegate API",
            "version": "1",
            "authentication": "Authorization: Token <token> (manage.py drf_create_token USER), or the admin session",
            "endpoints": {
                key: {"url": reverse(name, request=request), "what": what} for key, name, what in ENTRY_POINTS
            },
        })
