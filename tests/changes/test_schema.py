"""The OpenAPI schema is valid, covers every API route, and describes the bodies
the API really sends: real responses are validated against it."""

from __future__ import annotations

import re
from io import StringIO
from typing import Any

import jsonschema
import pytest
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

from changes import urls as change_urls
from tests.conftest import ZONE, grant
from tests.factories import api_client

OPERATIONS = {
    ("/api/v1/targets/", "get"): "targets_list",
    ("/api/v1/targets/", "post"): "targets_create",
    ("/api/v1/targets/{ref}/", "get"): "targets_retrieve",
    ("/api/v1/targets/{ref}/live/", "get"): "targets_live",
    ("/api/v1/changes/", "get"): "changes_list",
    ("/api/v1/changes/", "post"): "changes_create",
    ("/api/v1/changes/{id}/", "get"): "changes_retrieve",
    ("/api/v1/changes/{id}/", "patch"): "changes_partial_update",
    ("/api/v1/changes/{id}/plan/", "post"): "changes_plan",
    ("/api/v1/changes/{id}/submit/", "post"): "changes_submit",
    ("/api/v1/changes/{id}/cancel/", "post"): "changes_cancel",
    ("/api/v1/changes/{id}/approve/", "post"): "changes_approve",
    ("/api/v1/changes/{id}/reject/", "post"): "changes_reject",
    ("/api/v1/changes/{id}/emergency/", "post"): "changes_emergency",
    ("/api/v1/changes/{id}/emergency-review/", "post"): "changes_emergency_review",
    ("/api/v1/changes/{id}/rollback/", "post"): "changes_rollback",
    ("/api/v1/emergency-queue/", "get"): "emergency_queue",
    ("/api/v1/changes/{id}/evidence/", "get"): "changes_evidence",
    ("/api/v1/audit/export/", "get"): "audit_export",
}
# Files, not JSON: the success body is the export in the media type `format` asks for.
STREAMED = {"audit_export": {"application/x-ndjson", "text/csv"}}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)


def test_schema_generates_and_validates(schema):
    validate_schema(schema)
    assert schema["components"]["securitySchemes"].keys() == {"tokenAuth", "cookieAuth"}


def test_spectacular_command_passes_with_fail_on_warn(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out), stdout=StringIO(), stderr=StringIO())
    assert "/api/v1/changes/{id}/submit/" in out.read_text()


def test_every_api_route_is_in_the_schema(schema):
    routes = set()
    for pattern in change_urls.urlpatterns:
        route = str(pattern.pattern)
        route = re.sub(r"<int:pk>", "{id}", route)  # drf-spectacular names a pk "id"
        routes.add("/api/v1/" + re.sub(r"<\w+:(\w+)>", r"{\1}", route))
    documented = {path for path in schema["paths"] if path.startswith("/api/v1/")}
    assert documented == routes
    assert {(path, method) for path in documented for method in schema["paths"][path]} == set(OPERATIONS)


def test_every_operation_documents_its_bodies_and_errors(schema):
    for (path, method), operation_id in OPERATIONS.items():
        operation = schema["paths"][path][method]
        assert operation["operationId"] == operation_id
        responses = operation["responses"]
        (success,) = [code for code in responses if code.startswith("2")]
        if operation_id in STREAMED:
            assert set(responses[success]["content"]) == STREAMED[operation_id]
        else:
            assert "$ref" in responses[success]["content"]["application/json"]["schema"], operation_id
        errors = [code for code in responses if int(code) >= 400]
        assert "401" in errors
        for code in errors:
            assert responses[code]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        if method in ("post", "patch") and operation_id not in ("changes_plan", "changes_submit"):
            assert "$ref" in operation["requestBody"]["content"]["application/json"]["schema"], operation_id
    live = {p["name"]: p for p in schema["paths"]["/api/v1/targets/{ref}/live/"]["get"]["parameters"]}
    assert live["name"]["in"] == live["type"]["in"] == "query" and live["name"]["required"]
    filters = {p["name"] for p in schema["paths"]["/api/v1/changes/"]["get"]["parameters"]}
    assert filters == {"state", "target", "author", "reviewable", "page"}


# ---------------------------------------------------------------------------
# Real responses against the schema


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema objects -> JSON Schema: `nullable` becomes a null
    alternative, and objects are closed so an undocumented key fails too."""
    if isinstance(node, list):
        return [_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _json_schema(v) for k, v in node.items() if k not in ("discriminator", "example", "readOnly")}
    if converted.get("type") == "object" and "properties" in converted:
        converted.setdefault("additionalProperties", False)
    if converted.pop("nullable", False):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def check(schema: dict[str, Any], component: str, body: Any) -> None:
    root = {"$ref": f"#/components/schemas/{component}", "components": {"schemas": _json_schema(schema["components"]["schemas"])}}
    jsonschema.Draft202012Validator(root).validate(body)


@pytest.fixture
def demo_target(db, named_server, staff, author):
    from changes.services import target_register

    target = target_register(actor=staff, name=ZONE, config={
        "zone": ZONE, "primary": named_server.primary, "tsig_key_file": str(named_server.key_file), "timeout": 3})
    grant(author, "engineer", target)
    return target


CHECKS = [
    {"type": "tcp", "host": "127.0.0.1", "port": 443},
    {"type": "http", "url": "https://pay.example/health", "expect_status": 204, "contains": "ok", "timeout": 1.5},
    {"type": "dns_resolve", "resolver": "127.0.0.1:53", "name": "www.demo.test.", "rdtype": "A", "expect": ["192.0.2.10"]},
]


@pytest.mark.django_db
@pytest.mark.named
def test_real_responses_validate_against_the_schema(schema, demo_target, author, staff):
    client = api_client(author)
    created = client.post("/api/v1/changes/", {
        "target": ZONE, "title": "Mail and www", "reason": "migration", "health_checks": CHECKS,
        "patch": "= www 300 IN A 192.0.2.99\n= @ 300 IN MX 20 mail\n+ new 60 IN CNAME www\n"}, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    properties = schema["components"]["schemas"]["ChangeDetail"]["properties"]
    assert set(body) == set(properties) == set(schema["components"]["schemas"]["ChangeDetail"]["required"])
    assert body["plan"]["guards"] and body["risk_flags"]
    check(schema, "ChangeDetail", body)

    submitted = client.post(f"/api/v1/changes/{body['id']}/submit/").json()
    assert submitted["submitted_at"]
    check(schema, "ChangeDetail", submitted)
    check(schema, "ChangeDetail", client.get(f"/api/v1/changes/{body['id']}/").json())
    check(schema, "PaginatedChangeSummaryList", client.get("/api/v1/changes/", {"state": "pending_approval"}).json())

    check(schema, "PaginatedTargetList", client.get("/api/v1/targets/").json())
    grant(staff, "auditor", demo_target)
    staff_view = api_client(staff).get(f"/api/v1/targets/{ZONE}/").json()
    assert "tsig_key_file" in staff_view
    check(schema, "Target", staff_view)
    for name in ("www", "nothing-here"):
        check(schema, "LiveRRset", client.get(f"/api/v1/targets/{ZONE}/live/", {"name": name, "type": "A"}).json())

    invalid = client.post("/api/v1/changes/", {"target": ZONE, "title": "t", "reason": "r", "patch": "+ x 60 A 1.2.3"},
                          format="json")
    assert invalid.status_code == 400 and invalid.json()["errors"][0]["line"] == 1
    for error in (invalid, client.post(f"/api/v1/changes/{body['id']}/submit/"), client.get("/api/v1/changes/0/"),
                  APIClient().get("/api/v1/changes/"), client.post("/api/v1/changes/", b"{", content_type="application/json")):
        assert error.status_code >= 400
        check(schema, "Error", error.json())

    with pytest.raises(jsonschema.ValidationError):  # the check itself has teeth
        check(schema, "ChangeDetail", {**body, "undocumented": 1})
