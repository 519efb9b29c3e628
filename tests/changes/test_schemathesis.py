"""schemathesis against the schema a real server serves (`/api/schema/` of
pytest-django's live server), with every check it has (`ALL_CHECKS`: no 5xx,
status codes, content types, headers and bodies as documented, invalid input
refused, auth not ignored), authenticated with DRF tokens as an engineer and as
a reviewer (every operation) and as an auditor (export and evidence), on a
target served by the real named.

The run is reproducible (derandomized, no example database). Each operation gets
CHANGEGATE_FUZZ_EXAMPLES examples (default 10: the short run in `make test`);
`make fuzz` runs the long one. Generated ids, target refs and fingerprints are
sometimes pointed at the real change and target, so the fuzzing reaches the
services and not only the 404s."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis import DataGenerationMethod, GenerationConfig
from schemathesis.checks import ALL_CHECKS
from schemathesis.specs.openapi._hypothesis import get_schema_for_location
from schemathesis.specs.openapi.checks import negative_data_rejection

from changes import services
from tests.factories import WWW

pytestmark = [pytest.mark.named]

EXAMPLES = int(os.environ.get("CHANGEGATE_FUZZ_EXAMPLES", "10"))
CHECKS = [{"type": "http", "url": "https://pay.example.test/health", "expect_status": 200, "timeout": 2}]


@dataclass
class World:
    """What the generated requests are aimed at: the target, one draft and one
    pending change by the engineer, and the token of the persona under test."""

    target_id: int
    target_name: str
    change_ids: list[int] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def world(live_server, dns_target, author, reviewer, auditor) -> World:
    draft = services.change_create(actor=author, target=dns_target, title="fuzz draft", reason="fuzzing",
                                   items=WWW, health_checks=CHECKS)
    pending = services.change_create(actor=author, target=dns_target, title="fuzz pending", reason="fuzzing",
                                     items=[{**WWW[0], "records": ["192.0.2.98"]}])
    services.change_submit(actor=author, change=pending)
    return World(target_id=dns_target.pk, target_name=dns_target.name, change_ids=[draft.pk, pending.pk],
                 tokens={"engineer": Token.objects.create(user=author).key,
                         "reviewer": Token.objects.create(user=reviewer).key,
                 "auditor": Token.objects.create(user=auditor).key})


@pytest.fixture
def api_schema(live_server, world):
    return schemathesis.from_uri(f"{live_server.url}/api/schema/", base_url=live_server.url)


schema = schemathesis.from_pytest_fixture(
    "api_schema", data_generation_methods=[DataGenerationMethod.positive, DataGenerationMethod.negative],
    # Our token is the auth; a generated session cookie beside it would make the
    # ignored_auth check take the (valid) token for a generated one.
    generation_config=GenerationConfig(with_security_parameters=False))

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=list(HealthCheck),
)


def aim(case, world: World) -> None:
    """Point a share of the valid generated values at real objects (chosen from the
    generated value itself, so the run stays deterministic)."""
    if case.data_generation_method is not DataGenerationMethod.positive:
        return
    params = case.path_parameters or {}
    if isinstance(params.get("id"), int) and params["id"] % 4:
        params["id"] = world.change_ids[params["id"] % len(world.change_ids)]
    if isinstance(params.get("ref"), str) and len(params["ref"]) % 3:
        params["ref"] = world.target_name if len(params["ref"]) % 3 == 1 else str(world.target_id)
    body = case.body
    if isinstance(body, dict):
        if "target" in body and case.operation.path == "/api/v1/changes/" and len(repr(body["target"])) % 4:
            body["target"] = world.target_id
        if isinstance(body.get("fingerprint"), str) and len(body["fingerprint"]) % 2 == 0 and "id" in params:
            from changes.models import ChangeRequest

            change = ChangeRequest.objects.filter(pk=params["id"]).first()
            if change is not None:
                body["fingerprint"] = change.fingerprint
    query = case.query
    if isinstance(query, dict) and query.get("target") is not None and len(str(query["target"])) % 2:
        query["target"] = world.target_name


def _as_sent(value: object, schema: dict) -> object:
    """A query value as the server reads it: text, typed by what the parameter takes."""
    if isinstance(value, list | dict):
        return value
    text = str(value)
    if schema.get("type") == "integer" and re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    if schema.get("type") == "boolean" and text in ("true", "false"):
        return text == "true"
    return text


def negative_data_rejection_as_sent(ctx, response, case):
    """schemathesis 3.39 negates a query parameter by changing its JSON type
    (`author=0` for a string) or by adding one with an empty list (which sends
    nothing), but a query string has no types: "0" is a valid username. A case
    whose query, as sent, is valid is not negative and may be accepted; every
    other negative case must be refused."""
    meta = case.meta
    if (meta is not None and meta.query is not None and meta.query.is_negative
            and not (meta.body is not None and meta.body.is_negative)
            # schemathesis marks an operation without path parameters as path-negative too
            and not (case.path_parameters and meta.path_parameters is not None and meta.path_parameters.is_negative)):
        schema = get_schema_for_location(case.operation, "query", case.operation.query)
        props = schema.get("properties", {})
        sent = parse_qs(urlsplit(response.request.url).query, keep_blank_values=True)
        typed = {k: _as_sent(v[0] if len(v) == 1 else v, props.get(k, {})) for k, v in sent.items()}
        if case.operation.schema.validator_cls(schema).is_valid(typed):
            return None
    return negative_data_rejection(ctx, response, case)


CHECKS_AS_SENT = tuple(negative_data_rejection_as_sent if c is negative_data_rejection else c for c in ALL_CHECKS)
assert negative_data_rejection in ALL_CHECKS and len(CHECKS_AS_SENT) == len(ALL_CHECKS)


def run(case, world: World, role: str) -> None:
    aim(case, world)
    # schemathesis 3.39's ignored_auth writes its invalid credentials into these
    # containers and fails on None.
    case.headers = case.headers or {}
    case.cookies = case.cookies or {}
    headers = {"Authorization": f"Token {world.tokens[role]}"}
    with requests.Session() as session:
        response = case.call(session=session, headers=headers, timeout=30)
        case.validate_response(response, checks=CHECKS_AS_SENT, headers=headers)
    # The house error shape, on top of what the schema says.
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("detail"), str) and isinstance(body.get("code"), str), body
        if response.status_code == 400 and body["code"] == "invalid":
            assert body["errors"] and all(e["field"] for e in body["errors"]), body


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_as_an_engineer(case, world):
    run(case, world, "engineer")


@schema.parametrize()
@FUZZ_SETTINGS
def test_api_as_a_reviewer(case, world):
    run(case, world, "reviewer")


@schema.include(path_regex="^/api/v1/(audit/|changes/{id}/evidence/)").parametrize()
@FUZZ_SETTINGS
def test_audit_api_as_an_auditor(case, world):
    """The only operations an auditor has beyond reading: the export and the evidence."""
    run(case, world, "auditor")
