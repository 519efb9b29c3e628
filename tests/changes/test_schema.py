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
from tests.factories import WWW, api_client

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
    ("/api/v1/changes/{id}/revert/", "post"): "changes_revert",
    ("/api/v1/emergency-queue/", "get"): "emergency_queue",
    ("/api/v1/changes/{id}/evidence/", "get"): "changes_evidence",
    ("/api/v1/changes/{id}/comments/", "get"): "changes_comments_list",
    ("/api/v1/changes/{id}/comments/", "post"): "changes_comments_create",
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
    assert filters == {"state", "target", "author", "reviewable", "q", "page"}


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


# ---------------------------------------------------------------------------
# Request bodies: named for what they mean, and constrained as the server is (issue 15)


def _request_component(schema: dict[str, Any], path: str, method: str) -> str | None:
    body = schema["paths"][path][method].get("requestBody")
    if body is None:
        return None
    return body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]


def test_each_request_body_has_its_own_component(schema):
    bodies = {op: _request_component(schema, path, method) for (path, method), op in OPERATIONS.items()}
    assert bodies["changes_rollback"] == "RollbackRequest"
    assert bodies["changes_revert"] == "RevertRequest"
    assert bodies["changes_emergency"] == "EmergencyRequest"
    named = [name for name in bodies.values() if name is not None]
    assert len(named) == len(set(named)), bodies  # no body shared by two operations


# Required (or, in an edit, non-blank when given) text the server refuses blank, with its cap where it has one.
NON_BLANK = [
    ("ChangeCreateRequest", "title", 200),
    ("ChangeCreateRequest", "reason", None),
    ("PatchedChangeUpdateRequest", "title", 200),
    ("PatchedChangeUpdateRequest", "reason", None),
    ("ApproveRequest", "fingerprint", None),
    ("RejectRequest", "comment", 2000),
    ("EmergencyRequest", "reason", 4000),
    ("RollbackRequest", "reason", 4000),
    ("RevertRequest", "reason", 4000),
    ("EmergencyReviewRequest", "comment", 2000),
]


@pytest.mark.parametrize(("component", "field", "cap"), NON_BLANK, ids=[f"{c}.{f}" for c, f, _ in NON_BLANK])
def test_required_text_is_non_blank_in_the_schema(schema, component, field, cap):
    prop = schema["components"]["schemas"][component]["properties"][field]
    assert prop["type"] == "string" and prop["minLength"] == 1 and prop["pattern"] == r"\S", prop
    assert "oneOf" not in prop  # no blank alternative
    assert prop.get("maxLength") == cap
    if not component.startswith("Patched"):
        assert field in schema["components"]["schemas"][component]["required"]


def test_other_caps_are_in_the_schema(schema):
    components = schema["components"]["schemas"]
    assert components["ChangeCreateRequest"]["properties"]["reference"]["maxLength"] == 100
    assert components["ChangeCommentCreateRequest"]["properties"]["body"]["minLength"] == 1


def test_every_request_body_refuses_unknown_keys_in_the_schema(schema):
    for (path, method), operation_id in OPERATIONS.items():
        name = _request_component(schema, path, method)
        if name is not None:
            assert schema["components"]["schemas"][name]["additionalProperties"] is False, operation_id


def _enum(schema: dict[str, Any], prop: dict[str, Any]) -> list[str]:
    ref = prop.get("$ref") or next((p["$ref"] for p in prop.get("allOf", []) if "$ref" in p), None)
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]["enum"] if ref else prop["enum"]


def test_closed_sets_of_values_are_enums(schema):
    components = schema["components"]["schemas"]

    def prop(component: str, field: str) -> dict[str, Any]:
        return components[component]["properties"][field]

    assert set(_enum(schema, prop("DNSChangeItemRequest", "op"))) == {"upsert", "delete", "add", "remove"}
    assert "append" in _enum(schema, prop("FirewallChangeItemRequest", "op"))
    assert _enum(schema, prop("TCPCheckRequest", "type")) == ["tcp"]
    assert _enum(schema, prop("HTTPCheckRequest", "type")) == ["http"]
    assert _enum(schema, prop("DNSResolveCheckRequest", "type")) == ["dns_resolve"]
    assert _enum(schema, prop("TCPClosedCheckRequest", "type")) == ["tcp_closed"]
    kinds = {"dns", "nft"}
    for component in ("TargetRegisterRequest", "Target", "EvidenceTarget"):
        assert set(_enum(schema, prop(component, "kind"))) == kinds, component
    assert "pending_approval" in _enum(schema, prop("ChangeSummary", "state"))
    assert "claimed" in _enum(schema, prop("Execution", "state"))
    assert "claimed" in _enum(schema, prop("EvidenceExecution", "state"))
    parameters = {(path, p["name"]): p["schema"] for path, ops in schema["paths"].items()
                  for op in ops.values() for p in op.get("parameters", [])}
    assert set(parameters[("/api/v1/audit/export/", "format")]["enum"]) == {"jsonl", "csv"}
    assert "draft" in parameters[("/api/v1/changes/", "state")]["enum"]


# A valid body per operation with a request body: the server must refuse it once an
# unknown key is added, as `additionalProperties: false` promises (the refusal comes
# from parsing, before the change's state or the caller's role is looked at).
VALID_BODIES = {
    "changes_create": lambda target: {"target": target.pk, "title": "t", "reason": "r", "items": WWW},
    "changes_partial_update": lambda target: {"title": "t"},
    "changes_cancel": lambda target: {"reason": "r"},
    "changes_approve": lambda target: {"fingerprint": "f"},
    "changes_reject": lambda target: {"comment": "c"},
    "changes_emergency": lambda target: {"reason": "r"},
    "changes_emergency_review": lambda target: {"comment": "c"},
    "changes_rollback": lambda target: {"reason": "r"},
    "changes_revert": lambda target: {"reason": "r"},
    "changes_comments_create": lambda target: {"body": "b"},
    "targets_create": lambda target: {"name": "x.test", "config": {"zone": "x.test"}},
}


def test_every_closed_request_body_is_covered_below(schema):
    closed = {op for (path, method), op in OPERATIONS.items() if _request_component(schema, path, method)}
    assert closed == set(VALID_BODIES)


@pytest.mark.django_db
@pytest.mark.named
@pytest.mark.parametrize("operation_id", sorted(VALID_BODIES))
def test_the_server_refuses_an_unknown_key_in_each_closed_body(operation_id, dns_target, author, staff):
    from changes import services

    change = services.change_create(actor=author, target=dns_target, title="t", reason="r", items=WWW)
    ((path, method),) = [key for key, op in OPERATIONS.items() if op == operation_id]
    url = path.replace("{id}", str(change.pk))
    user = staff if operation_id == "targets_create" else author
    body = VALID_BODIES[operation_id](dns_target)
    response = getattr(api_client(user), method)(url, {**body, "colour": "red"}, format="json")
    assert response.status_code == 400, response.json()
    assert [e["field"] for e in response.json()["errors"]] == ["colour"]
