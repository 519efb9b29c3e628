"""REST API v1 against a real named: scoping, lifecycle, the error shape, and that
no input at all makes the server answer 500 or show a secret.

Nothing here applies a change, so most tests share the session's demo zone
(`demo_target`) instead of using up a spare zone each; the lifecycle tests use the
per-test `dns_target`."""

from __future__ import annotations

import json
import random
import shutil

import dns.query
import dns.tsigkeyring
import dns.update
import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from changes.models import AuditEvent, ChangeRequest, Target
from changes.services import target_register, target_update_policy
from tests.conftest import ZONE, grant
from tests.factories import WWW

pytestmark = [pytest.mark.django_db, pytest.mark.named]
State = ChangeRequest.State
TARGET_KEYS = {"id", "name", "kind", "zone", "primary", "nameservers", "required_approvals",
               "approval_lifetime_seconds", "bake_seconds", "bake_max_seconds", "health_checks", "frozen",
               "rrset_count", "watch_seconds", "watch_interval_seconds", "watch_auto_revert", "change_windows",
               "resolvers"}
DETAIL_KEYS = {"id", "target", "author", "editors", "title", "reason", "reference", "items", "health_checks",
               "allow_apex", "state", "revision", "plan", "fingerprint", "planned_at", "risk_flags", "diff", "emergency",
               "executions",
               "created_at", "updated_at", "submitted_at", "events", "approvals", "approvals_required",
               "emergency_overdue", "emergency_reason", "emergency_by", "emergency_at", "emergency_reviewed_by",
               "emergency_reviewed_at", "emergency_review_comment", "warnings", "bake", "phase", "watch_until",
               "reverts", "revert", "reverted_by", "waiting_for_window"}


class CheckedClient(APIClient):
    """Every response in this module: never a crash (5xx only for a target that
    cannot be reached), never the TSIG secret, and every error body has the one
    error shape."""

    secret: str = ""

    def request(self, **kwargs):
        response = super().request(**kwargs)
        body = response.content.decode("utf-8", "replace")
        assert self.secret and self.secret not in body
        if response.status_code >= 400:
            data = response.json()
            assert isinstance(data.get("detail"), str) and isinstance(data.get("code"), str), data
        if response.status_code >= 500:
            assert response.status_code in (502, 503), body
            assert data["code"] in ("target_unavailable", "target_misconfigured"), body
        return response


@pytest.fixture
def client_for(named_server):
    def make(user=None) -> CheckedClient:
        client = CheckedClient()
        client.secret = named_server.secret
        if user is not None:
            client.force_authenticate(user)
        return client

    return make


DROP = object()  # an override that removes the field


def send(client, method, url, body):
    """JSON-encode ourselves (ensure_ascii) so that lone surrogates reach the server."""
    return getattr(client, method)(url, json.dumps(body), content_type="application/json")


@pytest.fixture
def demo_target(db, named_server, staff, author, reviewer, auditor):
    """The shared demo zone, registered with the roles of `dns_target`. Read only."""
    target = target_register(actor=staff, name=ZONE, config={
        "zone": ZONE, "primary": named_server.primary, "tsig_key_file": str(named_server.key_file), "timeout": 3})
    grant(author, "engineer", target)
    grant(reviewer, "reviewer", target)
    grant(auditor, "auditor", target)
    return target


def post_change(client, on, **overrides):
    body = {"target": on.pk, "title": "Move www", "reason": "new load balancer", "items": WWW}
    body.update(overrides)
    return send(client, "post", "/api/v1/changes/", {k: v for k, v in body.items() if v is not DROP})


def fields_of(response) -> set[str]:
    return {e["field"] for e in response.json()["errors"]}


def counts():
    return ChangeRequest.objects.count(), AuditEvent.objects.count()


# ---------------------------------------------------------------------------
# Authentication


def test_anonymous_requests_are_refused_with_401(client_for, demo_target):
    client = client_for()
    for url in ("/api/v1/targets/", f"/api/v1/targets/{demo_target.pk}/", "/api/v1/changes/"):
        response = client.get(url)
        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"
    assert client.post("/api/v1/changes/", {}, format="json").status_code == 401


def test_a_real_token_header_authenticates(client_for, author, demo_target):
    token = Token.objects.create(user=author)
    client = client_for()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = client.get("/api/v1/targets/")
    assert response.status_code == 200
    assert [t["name"] for t in response.json()["results"]] == [demo_target.name]
    created = post_change(client, demo_target)
    assert created.status_code == 201
    assert created.json()["author"] == "alice"
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get("/api/v1/targets/").status_code == 401


# ---------------------------------------------------------------------------
# Targets


def test_target_list_shows_only_visible_targets(client_for, author, outsider, demo_target):
    body = client_for(author).get("/api/v1/targets/").json()
    assert body["count"] == 1
    (target,) = body["results"]
    assert set(target) == TARGET_KEYS  # no tsig_key_file for non-staff
    assert target["zone"] == demo_target.name
    assert target["nameservers"] == [demo_target.config["primary"]]
    assert target["rrset_count"] > 0
    assert client_for(outsider).get("/api/v1/targets/").json() == {
        "count": 0, "next": None, "previous": None, "results": []}


def test_target_detail_by_id_or_name_and_404_for_outsiders(client_for, author, outsider, staff, demo_target):
    for ref in (demo_target.pk, demo_target.name):
        response = client_for(author).get(f"/api/v1/targets/{ref}/")
        assert response.status_code == 200
        assert response.json()["id"] == demo_target.pk
        assert client_for(outsider).get(f"/api/v1/targets/{ref}/").status_code == 404
    missing = client_for(author).get("/api/v1/targets/999999/")
    assert missing.status_code == 404 and missing.json() == {"detail": "no such target", "code": "not_found"}
    for odd in ("²", "99999999999999999999999999", "%F0%9F%92%A9", "a%00b"):
        assert client_for(author).get(f"/api/v1/targets/{odd}/").status_code == 404
    grant(staff, "auditor", demo_target)
    staff_view = client_for(staff).get(f"/api/v1/targets/{demo_target.pk}/").json()
    assert staff_view["tsig_key_file"] == demo_target.config["tsig_key_file"]


def register_body(named_server, zone, **overrides):
    body = {"name": zone, "config": {"zone": zone, "primary": named_server.primary,
                                     "tsig_key_file": str(named_server.key_file), "timeout": 3},
            "required_approvals": 2, "bake_seconds": 5}
    body.update(overrides)
    return body


def test_only_staff_register_targets(client_for, author, staff, named_server):
    response = client_for(author).post("/api/v1/targets/", register_body(named_server, ZONE), format="json")
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    assert not Target.objects.filter(name=ZONE).exists()

    response = client_for(staff).post("/api/v1/targets/", register_body(named_server, ZONE), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert set(body) == TARGET_KEYS | {"tsig_key_file"}
    assert (body["name"], body["zone"], body["required_approvals"], body["bake_seconds"]) == (ZONE, ZONE, 2, 5)
    assert body["rrset_count"] > 0
    assert AuditEvent.objects.filter(action="target_registered", target_id=body["id"]).exists()

    again = client_for(staff).post("/api/v1/targets/", register_body(named_server, ZONE), format="json")
    assert again.status_code == 400 and fields_of(again) == {"name"}


def test_a_target_keeps_and_shows_its_bake_cap(client_for, staff, operator, named_server):
    response = client_for(staff).post("/api/v1/targets/", register_body(named_server, ZONE, bake_max_seconds=900),
                                      format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["bake_max_seconds"] == 900
    target = Target.objects.get(pk=response.json()["id"])
    assert target.bake_max_seconds == 900
    target_update_policy(actor=operator, target=target, bake_max_seconds=120)
    grant(staff, "auditor", target)
    assert client_for(staff).get(f"/api/v1/targets/{target.pk}/").json()["bake_max_seconds"] == 120


@pytest.mark.parametrize(("overrides", "config", "field"), [
    ({}, {"primary": "not-an-address"}, "config.primary"),
    ({}, {"primary": "127.0.0.1:99999"}, "config.primary"),
    ({}, {"tsig_key_file": "relative.key"}, "config.tsig_key_file"),
    ({}, {"secret": "c2VjcmV0"}, "config.secret"),
    ({}, {"nameservers": ["nope"]}, "config.nameservers[0]"),
    ({"required_approvals": 0}, {}, "required_approvals"),
    ({"required_approvals": "2"}, {}, "required_approvals"),
    ({"bake_seconds": 10**40}, {}, "bake_seconds"),
    ({"bake_max_seconds": 86401}, {}, "bake_max_seconds"),
    ({"bake_max_seconds": -1}, {}, "bake_max_seconds"),
    ({"bake_max_seconds": "600"}, {}, "bake_max_seconds"),
    ({"frozen": "yes"}, {}, "frozen"),
    ({"watch_seconds": -1}, {}, "watch_seconds"),
    ({"watch_seconds": 7 * 86400 + 1}, {}, "watch_seconds"),
    ({"watch_seconds": "60"}, {}, "watch_seconds"),
    ({"watch_interval_seconds": 0}, {}, "watch_interval_seconds"),
    ({"watch_interval_seconds": None}, {}, "watch_interval_seconds"),
    ({"watch_auto_revert": "no"}, {}, "watch_auto_revert"),
    ({"change_windows": {"weekly": [{"days": ["mon"], "start": "25:00", "end": "17:00"}]}}, {},
     "change_windows.weekly[0].start"),
    ({"change_windows": {"timezone": "Mars/Olympus"}}, {}, "change_windows.timezone"),
    ({"change_windows": {"freezes": [{"start": "2026-12-20T00:00:00+00:00", "end": "2026-12-21T00:00:00+00:00"}]}},
     {}, "change_windows.freezes[0].reason"),
    ({"kind": "bgp"}, {}, "kind"),  # no such kind (nft is one now)
    ({"name": ["a"]}, {}, "name"),
    ({"health_checks": [{"type": "tcp", "host": "h", "port": 0}]}, {}, "health_checks[0].port"),
    ({"health_checks": 0}, {}, "health_checks"),
    ({"health_checks": "tcp"}, {}, "health_checks"),
    ({"colour": "blue"}, {}, "colour"),
])
def test_bad_registrations_name_the_field(client_for, staff, named_server, overrides, config, field):
    body = register_body(named_server, ZONE, **overrides)
    body["config"].update(config)
    response = client_for(staff).post("/api/v1/targets/", body, format="json")
    assert response.status_code == 400, response.json()
    assert field in fields_of(response)
    assert not Target.objects.exists()


def test_registering_an_unreachable_zone_is_a_gateway_error(client_for, staff, named_server):
    response = client_for(staff).post("/api/v1/targets/", register_body(named_server, "notserved.test"), format="json")
    assert response.status_code == 502
    assert response.json()["code"] == "target_misconfigured"


def test_live_read_goes_to_the_zone(client_for, author, outsider, demo_target):
    client = client_for(author)
    url = f"/api/v1/targets/{demo_target.name}/live/"
    response = client.get(url, {"name": "www", "type": "a"})
    assert response.status_code == 200
    assert response.json() == {"name": f"www.{demo_target.name}.", "type": "A",
                               "value": {"ttl": 300, "rdatas": ["192.0.2.10", "192.0.2.11"]}}
    assert client.get(url, {"name": "nothing-here", "type": "A"}).json()["value"] is None
    assert client.get(url, {"name": "@", "type": "MX"}).json()["value"]["rdatas"] == [f"10 mail.{demo_target.name}."]
    assert client_for(outsider).get(url, {"name": "www", "type": "A"}).status_code == 404


@pytest.mark.parametrize(("query", "fields"), [
    ({"name": "www.elsewhere.", "type": "A"}, {"name"}),
    ({"name": "www", "type": "BOGUS"}, {"type"}),
    ({"name": "www", "type": "ANY"}, {"type"}),
    ({"name": "www"}, {"type"}),
    ({}, {"name", "type"}),
    ({"name": "a..b", "type": "A"}, {"name"}),
    ({"name": "x" * 300, "type": "A"}, {"name"}),
    ({"name": "a\x00b", "type": "A"}, {"name"}),
])
def test_live_read_validates_name_and_type(client_for, author, demo_target, query, fields):
    response = client_for(author).get(f"/api/v1/targets/{demo_target.pk}/live/", query)
    assert response.status_code == 400
    assert fields_of(response) == fields


@pytest.fixture
def unreachable_target(staff, author, named_server):
    from dns_adapters.local_named import free_port

    target = target_register(actor=staff, name="down.test", check_reachable=False, config={
        "zone": "down.test", "primary": f"127.0.0.1:{free_port()}",
        "tsig_key_file": str(named_server.key_file), "timeout": 0.5})
    grant(author, "engineer", target)
    return target


def test_an_unreachable_zone_answers_503_and_stores_nothing(client_for, author, unreachable_target):
    client = client_for(author)
    before = counts()
    response = post_change(client, unreachable_target)
    assert response.status_code == 503
    assert response.json()["code"] == "target_unavailable"
    assert counts() == before
    live = client.get(f"/api/v1/targets/{unreachable_target.pk}/live/", {"name": "www", "type": "A"})
    assert live.status_code == 503


def test_a_key_file_removed_after_registration_answers_502(client_for, author, staff, named_server, tmp_path):
    key_file = tmp_path / "gone.key"
    shutil.copy(named_server.key_file, key_file)
    target = target_register(actor=staff, name=ZONE, config={
        "zone": ZONE, "primary": named_server.primary, "tsig_key_file": str(key_file), "timeout": 3})
    grant(author, "engineer", target)
    key_file.unlink()
    client = client_for(author)
    response = post_change(client, target)
    assert response.status_code == 502
    assert response.json()["code"] == "target_misconfigured"
    assert "gone.key" in response.json()["detail"]
    assert client.get(f"/api/v1/targets/{target.pk}/live/", {"name": "www", "type": "A"}).status_code == 502


# ---------------------------------------------------------------------------
# Changes: create, read, list


def test_create_answers_exactly_what_get_shows(client_for, author, dns_target):
    client = client_for(author)
    created = post_change(client, dns_target, health_checks=[{"type": "tcp", "host": "127.0.0.1", "port": 443}])
    assert created.status_code == 201
    body = created.json()
    assert set(body) == DETAIL_KEYS
    assert client.get(f"/api/v1/changes/{body['id']}/").json() == body
    assert body["target"] == {"id": dns_target.pk, "name": dns_target.name}
    assert (body["author"], body["editors"], body["state"], body["revision"]) == ("alice", [], "draft", 1)
    (step,) = body["plan"]["steps"]
    assert step == {"name": f"www.{dns_target.name}.", "type": "A",
                    "before": {"ttl": 300, "rdatas": ["192.0.2.10", "192.0.2.11"]},
                    "after": {"ttl": 300, "rdatas": ["192.0.2.99"]}}
    assert body["plan"]["zone"] == f"{dns_target.name}."
    assert len(body["fingerprint"]) == 64
    assert f"-www.{dns_target.name}. 300 IN A 192.0.2.10" in body["diff"]
    assert f"+www.{dns_target.name}. 300 IN A 192.0.2.99" in body["diff"]
    assert body["health_checks"] == [{"type": "tcp", "timeout": 2, "host": "127.0.0.1", "port": 443}]
    assert body["warnings"] == []  # nothing for the reviewer to look out for
    (event,) = body["events"]
    assert (event["action"], event["actor"], event["origin"]) == ("change_created", "alice", "api")
    assert len(event["hash"]) == 64


def test_create_by_target_name_from_a_patch_with_risk_flags(client_for, author, demo_target):
    response = post_change(client_for(author), demo_target, target=demo_target.name, items=DROP,
                           patch="= @ 300 IN MX 20 mail\n+ *.dev 172800 IN A 192.0.2.5\n")
    assert response.status_code == 201, response.json()
    flags = {f["flag"]: f["description"] for f in response.json()["risk_flags"]}
    assert set(flags) == {"mail", "wildcard", "ttl_over_day"}
    assert flags["mail"].startswith("changes mail routing")


def test_an_mx_at_an_in_zone_name_without_address_is_created_with_a_warning(client_for, author, demo_target):
    client = client_for(author)
    response = post_change(client, demo_target, items=[
        {"op": "upsert", "name": "shop", "type": "MX", "ttl": 300, "records": ["10 nohost"]}])
    assert response.status_code == 201, response.json()
    zone = f"{demo_target.name}."
    expected = f"shop.{zone} MX 10 nohost.{zone}: nohost.{zone} is in zone {zone} and has no address (A/AAAA)"
    body = response.json()
    assert body["warnings"] == [expected]
    assert client.get(f"/api/v1/changes/{body['id']}/").json()["warnings"] == [expected]
    # A warning is advice, not an error: the change is a draft like any other, with a plan.
    assert body["state"] == "draft" and len(body["plan"]["steps"]) == 1

    edited = send(client, "patch", f"/api/v1/changes/{body['id']}/", {"items": WWW})
    assert edited.status_code == 200, edited.json()
    assert edited.json()["warnings"] == []


def test_cli_user_agent_is_recorded_as_cli_origin(client_for, author, demo_target):
    response = client_for(author).post(
        "/api/v1/changes/", {"target": demo_target.pk, "title": "t", "reason": "r", "items": WWW},
        format="json", HTTP_USER_AGENT="changegate-cli/0.1.0", REMOTE_ADDR="192.0.2.200")
    assert response.json()["events"][0]["origin"] == "cli"
    event = AuditEvent.objects.get(change_id=response.json()["id"])
    assert (event.client_ip, event.user_agent) == ("192.0.2.200", "changegate-cli/0.1.0")


def test_list_filters_and_scoping(client_for, author, outsider, make_user, staff, named_server, dns_target):
    erin = make_user("erin")
    grant(erin, "engineer", dns_target)
    first = post_change(client_for(author), dns_target).json()
    second = post_change(client_for(erin), dns_target, items=[{"op": "delete", "name": "api", "type": "A"}]).json()
    client_for(author).post(f"/api/v1/changes/{first['id']}/submit/")

    def ids(**query):
        response = client_for(author).get("/api/v1/changes/", query)
        assert response.status_code == 200
        return [c["id"] for c in response.json()["results"]]

    assert ids() == [second["id"], first["id"]]
    assert ids(state="pending_approval") == [first["id"]]
    assert ids(state="draft") == [second["id"]]
    assert ids(state="cancelled") == []
    assert ids(author="erin") == [second["id"]]
    assert ids(author="nobody") == []
    assert ids(target=dns_target.name) == ids(target=str(dns_target.pk)) == [second["id"], first["id"]]
    assert ids(target="other.test") == ids(target="99999999999999999999999") == []
    assert ids(target=dns_target.name, author="alice", state="pending_approval") == [first["id"]]
    summary = client_for(author).get("/api/v1/changes/").json()["results"][0]
    assert summary["author"] == "erin" and "events" not in summary

    bad = client_for(author).get("/api/v1/changes/", {"state": "done"})
    assert bad.status_code == 400 and fields_of(bad) == {"state"}
    assert client_for(author).get("/api/v1/changes/", {"author": "a\x00"}).status_code == 400
    bad_page = client_for(author).get("/api/v1/changes/", {"page": "x"})
    assert bad_page.status_code == 400 and fields_of(bad_page) == {"page"}
    assert client_for(outsider).get("/api/v1/changes/").json()["results"] == []

    # a target the author cannot see: its changes are not listed for them
    hidden = target_register(actor=staff, name="hidden", config=dict(dns_target.config))
    grant(erin, "engineer", hidden)
    post_change(client_for(erin), hidden)
    assert len(ids()) == 2
    assert ids(target="hidden") == []


def test_outsider_gets_404_on_every_change_endpoint(client_for, author, outsider, demo_target):
    change_id = post_change(client_for(author), demo_target).json()["id"]
    client = client_for(outsider)
    assert client.get(f"/api/v1/changes/{change_id}/").status_code == 404
    assert client.patch(f"/api/v1/changes/{change_id}/", {"title": "mine"}, format="json").status_code == 404
    for action in ("plan", "submit", "cancel"):
        assert client.post(f"/api/v1/changes/{change_id}/{action}/").status_code == 404
    assert client_for(author).get("/api/v1/changes/99999999999999999999999999/").status_code == 404
    assert ChangeRequest.objects.get(pk=change_id).state == State.DRAFT


# ---------------------------------------------------------------------------
# Changes: edit and lifecycle


def test_edit_replans_and_records_the_editor(client_for, author, make_user, dns_target):
    erin = make_user("erin")
    grant(erin, "engineer", dns_target)
    created = post_change(client_for(author), dns_target).json()
    url = f"/api/v1/changes/{created['id']}/"
    response = client_for(erin).patch(url, {"patch": "- api A\n", "title": "Drop api"}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["title"], body["revision"], body["editors"]) == ("Drop api", 2, ["erin"])
    # Items are stored as validated: absolute names, canonical records.
    assert body["items"] == [{"op": "delete", "name": f"api.{dns_target.name}.", "type": "A"}]
    assert body["fingerprint"] != created["fingerprint"]
    assert [e["action"] for e in body["events"]] == ["change_created", "change_edited"]
    assert client_for(author).get(url).json() == body

    empty = client_for(author).patch(url, {}, format="json")
    assert empty.status_code == 400 and fields_of(empty) == {"body"}
    bad = client_for(author).patch(url, {"items": [{"op": "delete", "name": "x.elsewhere.", "type": "A"}]}, format="json")
    assert bad.status_code == 400 and fields_of(bad) == {"items[0].name"}
    assert ChangeRequest.objects.get(pk=created["id"]).revision == 2


def test_lifecycle_through_the_api(client_for, author, reviewer, dns_target):
    client = client_for(author)
    change_id = post_change(client, dns_target).json()["id"]
    base = f"/api/v1/changes/{change_id}"

    replanned = client.post(f"{base}/plan/")
    assert replanned.status_code == 200 and replanned.json()["events"][-1]["action"] == "change_planned"
    assert client_for(reviewer).post(f"{base}/submit/").status_code == 403

    submitted = client.post(f"{base}/submit/")
    assert submitted.status_code == 200
    assert submitted.json()["state"] == "pending_approval" and submitted.json()["submitted_at"]
    twice = client.post(f"{base}/submit/")
    assert twice.status_code == 409 and twice.json()["code"] == "invalid_state"

    assert client_for(reviewer).post(f"{base}/cancel/", {"comment": "not mine"}, format="json").status_code == 403
    cancelled = client.post(f"{base}/cancel/", {"comment": "superseded"}, format="json")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    # `comment` is the old name of the required `reason`.
    assert AuditEvent.objects.get(change_id=change_id, action="change_cancelled").payload["reason"] == "superseded"
    again = client.post(f"{base}/cancel/")
    assert again.status_code == 409 and again.json()["code"] == "invalid_state"
    assert client.patch(f"{base}/", {"title": "too late"}, format="json").status_code == 409
    assert client.post(f"{base}/plan/").status_code == 409
    assert client.post(f"{base}/cancel/", {"why": "x"}, format="json").status_code == 400
    assert [e["action"] for e in client.get(f"{base}/").json()["events"]] == [
        "change_created", "change_planned", "change_submitted", "change_cancelled"]


def test_a_change_with_nothing_to_do_is_refused_at_create_and_a_conflict_at_submit(client_for, author, demo_target,
                                                                                    dns_target, named_server):
    # Issue 15: a proposal that is already live is refused (it used to be stored as a draft).
    same = [{"op": "upsert", "name": "api", "type": "A", "ttl": 300, "records": ["192.0.2.20"]}]
    refused = post_change(client_for(author), demo_target, items=same)
    assert refused.status_code == 400 and [e["field"] for e in refused.json()["errors"]] == ["items"]
    assert not ChangeRequest.objects.exists()
    # A draft the live zone caught up with (behind changegate's back) still cannot be submitted.
    created = post_change(client_for(author), dns_target, items=WWW).json()
    update = dns.update.UpdateMessage(dns_target.name, keyring=dns.tsigkeyring.from_file(named_server.key_file))
    update.replace("www", 300, "A", "192.0.2.99")
    dns.query.tcp(update, "127.0.0.1", port=named_server.port, timeout=3)
    replanned = client_for(author).post(f"/api/v1/changes/{created['id']}/plan/").json()
    assert replanned["plan"]["steps"] == [] and replanned["diff"].count("@@") == 0
    response = client_for(author).post(f"/api/v1/changes/{created['id']}/submit/")
    assert response.status_code == 409


# ---------------------------------------------------------------------------
# Validation: every bad value is a 400 naming it, and nothing is stored


def item(**overrides):
    value = dict(WWW[0])
    value.update(overrides)
    return value


BAD_CREATES = [
    ({"items": [item(ttl=-1)]}, "items[0].ttl"),
    ({"items": [item(ttl={"a": 1})]}, "items[0].ttl"),
    ({"items": [item(ttl=2**31)]}, "items[0].ttl"),
    ({"items": [item(ttl=10**40)]}, "items[0].ttl"),
    ({"items": [item(ttl="²")]}, "items[0].ttl"),
    ({"items": [item(ttl="٣")]}, "items[0].ttl"),
    ({"items": [item(name="www.elsewhere.")]}, "items[0].name"),
    ({"items": [item(name=42)]}, "items[0].name"),
    ({"items": [item(type="BOGUS")]}, "items[0].type"),
    ({"items": [item(type="NSEC")]}, "items[0].type"),
    ({"items": [item(records=["999.0.0.1"])]}, "items[0].records[0]"),
    ({"items": [item(records=["192.0.2.1", "2001:db8::1"])]}, "items[0].records[1]"),
    ({"items": [item(records=["192.0.2.1\x00"])]}, "items[0].records[0]"),
    ({"items": [item(records="192.0.2.1")]}, "items[0].records"),
    ({"items": [item(op="replace")]}, "items[0].op"),
    ({"items": [item(colour="red")]}, "items[0].colour"),
    ({"items": [WWW[0], item(name="ok"), item(name="a..b")]}, "items[2].name"),
    ({"items": [item(type="CNAME", records=["api"])]}, "items[0].type"),  # beside live A records
    ({"items": [{"op": "upsert", "name": "@", "type": "SOA", "ttl": 60,
                 "records": ["ns1 host 2 1 1 1 1"]}]}, "items[0].type"),  # needs allow_apex
    ({"items": "upsert www"}, "items"),
    ({"items": []}, "items"),
    ({"items": [[]]}, "items[0].item"),
    ({"reason": ""}, "reason"),
    ({"reason": "   "}, "reason"),
    ({"reason": None}, "reason"),
    ({"title": ""}, "title"),
    ({"title": "x" * 201}, "title"),
    ({"title": 123}, "title"),
    ({"title": "a\x00b"}, "title"),
    ({"title": "\ud800"}, "title"),
    ({"health_checks": [{"type": "tcp", "host": "10.0.0.5", "port": 70000}]}, "health_checks[0].port"),
    ({"health_checks": [{"type": "http", "url": "ftp://x"}]}, "health_checks[0].url"),
    ({"health_checks": [{"type": "smtp"}]}, "health_checks[0].type"),
    ({"health_checks": "tcp"}, "health_checks"),
    ({"allow_apex": "yes"}, "allow_apex"),
    ({"target": "nosuch.test"}, "target"),
    ({"target": [1]}, "target"),
    ({"target": True}, "target"),
    ({"target": 10**30}, "target"),
    ({"target": ""}, "target"),
    ({"patch": "+ ok 60 A 192.0.2.1\n"}, "patch"),  # items and patch both given
    ({"items": DROP, "patch": "= www A"}, "patch"),
    ({"items": DROP, "patch": 7}, "patch"),
    ({"items": DROP}, "items"),
    ({"itemz": WWW}, "itemz"),
]


@pytest.mark.parametrize(("overrides", "field"), BAD_CREATES, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_CREATES)])
def test_bad_input_names_the_field_and_stores_nothing(client_for, author, demo_target, overrides, field):
    before = counts()
    response = post_change(client_for(author), demo_target, **overrides)
    assert response.status_code == 400, response.json()
    data = response.json()
    assert data["code"] == "invalid"
    assert field in fields_of(response), data
    assert field in data["detail"]
    assert counts() == before


def test_patch_errors_carry_the_line_number(client_for, author, demo_target):
    response = post_change(client_for(author), demo_target, items=DROP,
                           patch="# comment\n+ ok 60 A 192.0.2.1\n+ bad 60 A 999.0.0.1\n")
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error == {"index": 1, "field": "items[1].records[0]", "line": 3, "message": error["message"]}
    syntax = post_change(client_for(author), demo_target, items=DROP, patch="+ ok 60 A 192.0.2.1\nwhat\n")
    assert syntax.status_code == 400 and "line 2" in syntax.json()["errors"][0]["message"]


def test_a_target_the_author_cannot_see_is_no_such_target(client_for, author, staff, demo_target):
    hidden = target_register(actor=staff, name="hidden", config=dict(demo_target.config))
    for ref in (hidden.pk, hidden.name):
        response = post_change(client_for(author), demo_target, target=ref)
        assert response.status_code == 400
        assert response.json()["errors"] == [{"index": None, "field": "target", "message": "no such target"}]


def test_viewer_without_submit_permission_gets_403(client_for, auditor, demo_target):
    before = counts()
    response = post_change(client_for(auditor), demo_target)
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    assert counts() == before


# ---------------------------------------------------------------------------
# Malformed input never makes a 500


JUNK = [None, True, False, 0, -1, 2**63, 10**30, 1.5, -0.0, "", " ", "x", "\u2603" * 3, "٣", "²", "\x00", "\udcff",
        "\u202e\u200b", "a" * 5000, [], [None], [1, "a"], {}, {"a": 1}, {"": {}}, [[[[]]]], ["192.0.2.1"]]


def random_item(rng: random.Random):
    """A sensible item with one or two fields replaced by junk (or the item itself)."""
    value = {"op": rng.choice(["upsert", "add", "remove", "delete"]),
             "name": rng.choice(["www", "@", "*.x", "new", "alias", "a.b.c"]),
             "type": rng.choice(["A", "AAAA", "CNAME", "MX", "TXT", "NS"]),
             "ttl": rng.choice([300, 0, 86400 * 2, "300"]),
             "records": rng.choice([["192.0.2.1"], ["2001:db8::1"], ["10 mail"], ['"txt"'], ["www"]])}
    for key in rng.sample(sorted(value), rng.randint(0, 2)):
        if rng.random() < 0.2:
            del value[key]
        else:
            value[key] = rng.choice(JUNK) if key != "records" or rng.random() < 0.5 else [rng.choice(JUNK)]
    return value if rng.random() < 0.95 else rng.choice(JUNK)


def random_value(rng: random.Random, field: str):
    if field == "items" and rng.random() < 0.6:
        return [random_item(rng) for _ in range(rng.randint(1, 3))]
    if field == "patch" and rng.random() < 0.6:
        ops, names, ttls = "+-=~", ["www", "@", "x.y", "*", "\u00e9", "a" * 70], ["", "60", "99999999999"]
        types, datas = ["A", "MX", "TXT", "SOA", "TYPE99", "IN"], ["192.0.2.1", "10 mail", "", "1.2.3", '"']
        return "\n".join(" ".join(rng.choice(part) for part in (ops, names, ttls, types, datas))
                         for _ in range(rng.randint(1, 4)))
    if field == "health_checks" and rng.random() < 0.6:
        return [{"type": rng.choice(["tcp", "http", "dns_resolve", *JUNK[:4]]), "host": rng.choice(["h", *JUNK]),
                 "port": rng.choice([443, *JUNK]), "url": rng.choice(["https://x/", *JUNK]),
                 "resolver": rng.choice(["127.0.0.1:53", *JUNK]), "name": rng.choice(["www.", *JUNK]),
                 "expect": rng.choice([["192.0.2.1"], *JUNK]), "timeout": rng.choice([1, *JUNK])}]
    return rng.choice(JUNK)


def random_body(rng: random.Random, target: Target):
    """A valid body with one to three fields made wrong or removed, so that the junk
    reaches the deeper layers (item validation, planning) and not only the first check."""
    body = {"target": target.pk, "title": "t", "reason": "r",
            "items": [random_item(rng) for _ in range(rng.randint(1, 3))]}
    for field in rng.sample(["target", "title", "reason", "items", "patch", "health_checks", "allow_apex"],
                            rng.randint(1, 3)):
        if rng.random() < 0.15:
            body.pop(field, None)
        else:
            body[field] = random_value(rng, field)
    return body


RAW_BODIES = [
    b"", b"{", b"}", b"null", b"[]", b'"text"', b"42", b'{"title": NaN}', b'{"title": Infinity}',
    b'{"target": 1e999}', b"\xff\xfe\x00", b'{"title": "\\ud800"}', b"[" * 100_000, b'{"a":' * 5000,
    b'{"target": ' + b"9" * 5000 + b"}", b'{"title": "x", "title": 1}', b'{"\\u0000": 1}',
    b'{"items": [{"name": "\\ud83d"}]}', b"\xef\xbb\xbf{}",
]


def test_malformed_bodies_never_cause_a_500(client_for, author, staff, named_server, demo_target):
    rng = random.Random(20240611)
    client = client_for(author)
    change_id = post_change(client, demo_target).json()["id"]
    statuses = []
    for _ in range(60):
        body = random_body(rng, demo_target)
        statuses.append(send(client, "post", "/api/v1/changes/", body).status_code)
        patch = {k: v for k, v in body.items() if k != "target"}
        statuses.append(send(client, "patch", f"/api/v1/changes/{change_id}/", patch).status_code)
    for _ in range(30):
        body = register_body(named_server, "reg.test")
        for field in rng.sample(sorted(body), rng.randint(1, 2)):
            body[field] = random_value(rng, field)
        if rng.random() < 0.5:
            body["config"] = register_body(named_server, "reg.test")["config"]
            body["config"][rng.choice(sorted(body["config"]))] = rng.choice(JUNK)
        # a junk zone or address may be refused by named: 502, checked by CheckedClient
        send(client_for(staff), "post", "/api/v1/targets/", body)
    printable = [j for j in JUNK if j != "\udcff"]  # the test client cannot put it in a URL
    for _ in range(30):
        query = {"name": str(rng.choice([*printable, "www", "@"])), "type": str(rng.choice([*printable, "A"]))}
        statuses.append(client.get(f"/api/v1/targets/{demo_target.pk}/live/", query).status_code)
    for raw in RAW_BODIES:
        for method, url in (("post", "/api/v1/changes/"), ("patch", f"/api/v1/changes/{change_id}/"),
                            ("post", f"/api/v1/changes/{change_id}/cancel/")):
            response = getattr(client, method)(url, raw, content_type="application/json")
            statuses.append(response.status_code)
            if raw:  # an empty body is an empty object
                assert response.status_code == 400, (raw[:40], response.content[:200])
    assert client.post("/api/v1/changes/", "title=x", content_type="application/x-www-form-urlencoded").status_code == 415
    assert client.post("/api/v1/changes/", b"{}", content_type="application/json; charset=bogus").status_code == 400
    assert all(code < 500 for code in statuses)  # the zone is up: no 5xx at all
    assert 400 in statuses
    # every change that was stored is a whole one: it has its plan and its audit event
    for change in ChangeRequest.objects.all():
        assert change.plan is not None and change.events.filter(action="change_created").exists()


def test_bodies_over_the_upload_limit_are_refused(client_for, author, demo_target, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps({"target": demo_target.pk, "title": "t", "reason": "r" * 20_000, "items": WWW})
    response = client_for(author).post("/api/v1/changes/", body, content_type="application/json")
    assert response.status_code == 413 and response.json()["code"] == "too_large"


# ---------------------------------------------------------------------------
# Query strings, paths and stored values keep to the schema (issue 10 item 6)


def test_export_moments_past_the_calendar_are_a_400_naming_the_field(client_for, auditor, demo_target):
    client = client_for(auditor)
    for name, moment in (("since", "9999-12-31T23:59:59-23:59"), ("until", "0001-01-01T00:00:00+23:00")):
        response = client.get("/api/v1/audit/export/", {name: moment})
        assert response.status_code == 400, response.content[:200]
        assert fields_of(response) == {name}


@pytest.mark.parametrize("method,path", [
    ("get", "/api/v1/changes/-1/"), ("get", "/api/v1/changes/abc/"), ("post", "/api/v1/changes/-1/approve/"),
    ("get", "/api/v1/changes/1.5/evidence/"), ("get", "/api/v1/nowhere/"), ("delete", "/api/v1/nowhere"),
    ("get", "/api/v2/changes/"), ("post", "/api/v1/changes/1/nothing/"),
])
def test_unmatched_api_paths_answer_the_json_404(client_for, author, demo_target, method, path):
    response = getattr(client_for(author), method)(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "no such API endpoint", "code": "not_found"}


def test_the_api_root_answers_get_only_in_json(client_for, author):
    """`/api/v1/` is a route now (the API root): other methods are a JSON 405."""
    response = client_for(author).delete("/api/v1/")
    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == "method_not_allowed"


@pytest.mark.parametrize("query,field", [
    ("page=1&page=2", "page"), ("state=draft&state=applied", "state"), ("page=abc", "page"), ("page=0", "page"),
    ("page=2", "page"), ("page=99999999999999999999999", "page"), ("reviewable=maybe", "reviewable"),
    ("author=", "author"), ("page=", "page"), ("reviewable=", "reviewable"), ("colour=red", "colour"),
    ("reviewable=0", "reviewable"), ("reviewable=True", "reviewable"),
])
def test_bad_or_repeated_list_parameters_are_a_400_naming_them(client_for, author, demo_target, query, field):
    post_change(client_for(author), demo_target)
    for url in ("/api/v1/changes/", "/api/v1/targets/", "/api/v1/emergency-queue/"):
        if field not in ("page", "colour") and url != "/api/v1/changes/":
            continue
        response = client_for(author).get(f"{url}?{query}")
        assert response.status_code == 400, (url, response.content[:200])
        assert fields_of(response) == {field}


def test_repeated_parameters_elsewhere_are_refused_too(client_for, author, auditor, demo_target):
    live = client_for(author).get(f"/api/v1/targets/{demo_target.pk}/live/?name=www&type=A&type=MX")
    assert live.status_code == 400 and fields_of(live) == {"type"}
    export = client_for(auditor).get("/api/v1/audit/export/?format=csv&format=jsonl")
    assert export.status_code == 400 and fields_of(export) == {"format"}
    change_id = post_change(client_for(author), demo_target).json()["id"]
    detail = client_for(author).get(f"/api/v1/changes/{change_id}/?colour=red")
    assert detail.status_code == 400 and fields_of(detail) == {"colour"}


@pytest.mark.parametrize("url", ["http://exa mple.test/", "http://[::1/", "http://ex\u00e4mple.test/",
                                 "https://example.test/\u2603", "http://example.test/%zz", "http://x/\x7f"])
def test_check_urls_that_are_not_uris_are_refused(client_for, author, demo_target, url):
    before = counts()
    checks = [{"type": "http", "url": url}]
    response = post_change(client_for(author), demo_target, health_checks=checks)
    assert response.status_code == 400, response.content[:200]
    assert fields_of(response) == {"health_checks[0].url"}
    assert counts() == before


def test_a_valid_check_url_is_stored_and_shown_as_given(client_for, author, demo_target):
    url = "https://pay.example.test:8443/health?full=1&x=%41#top"
    created = post_change(client_for(author), demo_target, health_checks=[{"type": "http", "url": url}])
    assert created.status_code == 201
    assert created.json()["health_checks"][0]["url"] == url
