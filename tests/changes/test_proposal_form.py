"""Issue 15, the engineers' part: warnings before submit (a name made relative, a
dangling target), the no-op proposal refused by the service, health checks in the
admin's proposal form, and the admin's "Edit draft" page, which calls the service
the API's PATCH calls. Through the admin form posts and the API, against a real named."""

from __future__ import annotations

import pytest
from django.urls import reverse

from changes.admin.proposal import check_lines, parse_check_lines
from changes.models import AuditEvent, ChangeRequest, Origin
from changes.services import change_cancel, change_create
from pipeline.check_specs import validate_health_checks
from tests.changes.test_admin import ADD_CHANGE, ENGINEER_PERMS, change_url, propose, staff_with
from tests.factories import WWW, api_client

pytestmark = [pytest.mark.django_db, pytest.mark.named]


@pytest.fixture
def fresh_zone(module_zone: str) -> str:
    """Plans only, never writes: one zone for the module (the database is reset per test)."""
    return module_zone


def edit_url(change: ChangeRequest) -> str:
    return reverse("admin:changes_changerequest_edit", args=[change.pk])


def api_create(user, target, items) -> object:
    return api_client(user).post("/api/v1/changes/", {"target": target.pk, "title": "t", "reason": "r",
                                                      "items": items}, format="json")


# -- warnings ------------------------------------------------------------------------------


def test_a_name_made_relative_is_a_warning_on_the_change_page_and_in_the_api(client, author, dns_target):
    zone = dns_target.name
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    response = propose(client, dns_target, "= cdn.example.com 300 IN A 192.0.2.50\n")
    assert response.status_code == 302, response.content.decode()
    change = ChangeRequest.objects.get()
    (warning,) = change.plan_warnings
    assert warning.startswith(f"cdn.example.com.{zone}. A: the name cdn.example.com.{zone}. looks like "
                              "cdn.example.com. written without its trailing dot")
    assert "write it with the trailing dot" in warning
    html = client.get(change_url(change)).content.decode()
    assert "Warnings for the reviewer" in html and f"cdn.example.com.{zone}." in html

    created = api_create(author, dns_target, [{"op": "upsert", "name": "www.demo.test", "type": "A", "ttl": 300,
                                               "records": ["192.0.2.51"]}])
    assert created.status_code == 201, created.json()
    assert any(f"www.demo.test.{zone}." in w and "trailing dot" in w for w in created.json()["warnings"])


def test_an_ordinary_new_name_and_a_deleted_relative_name_do_not_warn(author, dns_target):
    change = change_create(actor=author, target=dns_target, title="t", reason="r",
                           items=[{"op": "upsert", "name": "shop.eu-west", "type": "A", "ttl": 300,
                                   "records": ["192.0.2.52"]}])
    assert change.plan_warnings == []


def test_a_dangling_ns_or_cname_target_in_the_zone_warns_but_glue_below_a_delegation_does_not(author, dns_target):
    zone = dns_target.name
    response = api_create(author, dns_target, [
        {"op": "upsert", "name": "lab", "type": "NS", "ttl": 300, "records": ["ns1.nowhere"]},
        {"op": "upsert", "name": "old", "type": "CNAME", "ttl": 300, "records": ["gone"]},
        {"op": "upsert", "name": "sub", "type": "NS", "ttl": 300, "records": ["ns.sub"]},
    ])
    assert response.status_code == 201, response.json()
    warnings = response.json()["warnings"]
    assert f"lab.{zone}. NS ns1.nowhere.{zone}.: ns1.nowhere.{zone}. is in zone {zone}. and has no address (A/AAAA)" \
        in warnings
    assert any(w.startswith(f"old.{zone}. CNAME gone.{zone}.: gone.{zone}. is in zone") for w in warnings)
    assert not any(f"ns.sub.{zone}." in w for w in warnings)  # glue: a read there is a referral
    assert len(warnings) == 2


# -- the no-op proposal ----------------------------------------------------------------------

ALREADY_LIVE = "= www 300 IN A 192.0.2.10\n= www 300 IN A 192.0.2.11\n"


def test_a_proposal_that_changes_nothing_is_refused_in_the_admin_and_stores_nothing(client, author, dns_target):
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    response = propose(client, dns_target, ALREADY_LIVE)
    assert response.status_code == 200
    errors = response.context["form"].errors["patch"]
    assert errors == [f"this change changes nothing: www.{dns_target.name}. A is already live as proposed"]
    assert not ChangeRequest.objects.exists()
    # Deleting what does not exist changes nothing either.
    response = propose(client, dns_target, "- nothing-here A\n")
    assert "this change changes nothing" in response.context["form"].errors["patch"][0]
    assert not ChangeRequest.objects.exists()


def test_a_proposal_or_an_edit_that_changes_nothing_is_a_400_naming_items_in_the_api(author, dns_target):
    body = [{"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": ["192.0.2.10", "192.0.2.11"]}]
    response = api_create(author, dns_target, body)
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["field"] == "items" and error["message"].startswith("this change changes nothing:")
    assert not ChangeRequest.objects.exists()

    change = change_create(actor=author, target=dns_target, title="t", reason="r", items=WWW)
    edited = api_client(author).patch(f"/api/v1/changes/{change.pk}/", {"items": body}, format="json")
    assert edited.status_code == 400 and edited.json()["errors"][0]["field"] == "items"
    change.refresh_from_db()
    assert change.revision == 1 and change.items[0]["records"] == ["192.0.2.99"]


# -- health checks in the form -----------------------------------------------------------------

CHECK_TEXT = ("tcp www.example.net:443\n"
              "# a comment\n"
              "http https://www.example.net/health,expect=204\n"
              "dns www.example.net,resolver=127.0.0.1:5353,expect=192.0.2.99\n")


def test_health_checks_written_one_per_line_are_stored_as_the_api_would(client, author, dns_target):
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    response = propose(client, dns_target, "= www 300 IN A 192.0.2.99\n", health_checks=CHECK_TEXT)
    assert response.status_code == 302, response.content.decode()
    change = ChangeRequest.objects.get()
    by_api = api_create(author, dns_target, WWW)
    assert by_api.status_code == 201
    expected = api_client(author).patch(f"/api/v1/changes/{by_api.json()['id']}/",
                                        {"health_checks": parse_check_lines(CHECK_TEXT)}, format="json")
    assert change.health_checks == expected.json()["health_checks"]
    assert [c["type"] for c in change.health_checks] == ["tcp", "http", "dns_resolve"]
    assert change.health_checks[1]["expect_status"] == 204


def test_bad_check_lines_are_form_errors_naming_each_line_and_store_nothing(client, author, dns_target):
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    response = propose(client, dns_target, "= www 300 IN A 192.0.2.99\n",
                       health_checks="tcp www.example.net\nping www\nhttp ftp://x/\n")
    errors = response.context["form"].errors["health_checks"]
    assert errors[0].startswith("line 1: tcp takes HOST:PORT")
    assert errors[1] == "line 2: start with tcp, http or dns, got 'ping'"
    assert errors[2].startswith("line 3: http takes URL")
    assert not ChangeRequest.objects.exists()
    # The service's own refusal (a timeout above the round) lands on the same field.
    response = propose(client, dns_target, "= www 300 IN A 192.0.2.99\n",
                       health_checks="http https://x.example.net/,timeout=100000\n")
    assert "timeout must be seconds" in response.context["form"].errors["health_checks"][0]
    assert not ChangeRequest.objects.exists()


def test_stored_checks_read_back_to_the_same_lines():
    stored = validate_health_checks(parse_check_lines(CHECK_TEXT))  # as the service keeps them
    assert validate_health_checks(parse_check_lines(check_lines(stored))) == stored


# -- the edit page ---------------------------------------------------------------------------------


def test_the_author_edits_a_draft_in_the_admin_through_the_apis_service(client, author, dns_target):
    change = change_create(actor=author, target=dns_target, title="Move www", reason="lb", items=WWW,
                           health_checks=[{"type": "tcp", "host": "www.example.net", "port": 443}])
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    page = client.get(edit_url(change))
    assert page.status_code == 200
    form = page.context["form"]
    assert "target" not in form.fields
    assert form.initial["patch"] == "= www 300 IN A 192.0.2.99"
    assert form.initial["health_checks"] == "tcp www.example.net:443"

    response = client.post(edit_url(change), {
        "title": "Move www again", "reason": "lb", "patch": "= www 300 IN A 192.0.2.98\n",
        "health_checks": "http https://www.example.net/,expect=200\n",
    })
    assert response.status_code == 302 and response["Location"] == change_url(change)
    change.refresh_from_db()
    assert change.title == "Move www again" and change.revision == 2
    assert change.items[0]["records"] == ["192.0.2.98"]
    assert [c["type"] for c in change.health_checks] == ["http"]
    event = AuditEvent.objects.filter(change=change, action="change_edited").get()
    assert event.origin == Origin.ADMIN and event.actor == author

    # An edit that changes nothing is refused like a proposal.
    response = client.post(edit_url(change), {"title": "t", "reason": "r", "patch": ALREADY_LIVE})
    assert "this change changes nothing" in response.context["form"].errors["patch"][0]
    change.refresh_from_db()
    assert change.revision == 2


def test_only_the_author_set_edits_and_only_while_editable(client, author, dns_target, olivia, reviewer):
    change = change_create(actor=author, target=dns_target, title="t", reason="r", items=WWW)
    client.force_login(staff_with(reviewer, *ENGINEER_PERMS))
    assert client.get(edit_url(change)).status_code == 403
    assert client.post(edit_url(change), {"title": "x", "reason": "x", "patch": ""}).status_code == 403
    client.force_login(staff_with(olivia, *ENGINEER_PERMS))  # cannot see the target at all
    assert client.get(edit_url(change)).status_code == 404

    client.force_login(staff_with(author, *ENGINEER_PERMS))
    assert client.get(edit_url(change)).status_code == 200
    change = change_cancel(actor=author, change=change, reason="not needed")
    assert client.get(edit_url(change)).status_code == 403


def test_an_edit_with_an_empty_patch_keeps_the_items(client, author, dns_target):
    change = change_create(actor=author, target=dns_target, title="t", reason="r", items=WWW)
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    response = client.post(edit_url(change), {"title": "t2", "reason": "r", "patch": ""})
    assert response.status_code == 302
    change.refresh_from_db()
    assert change.title == "t2" and change.items[0]["records"] == ["192.0.2.99"]


def test_the_add_page_offers_health_checks(client, author, dns_target):
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    page = client.get(reverse(ADD_CHANGE)).content.decode()
    assert 'name="health_checks"' in page and "tcp HOST:PORT" in page


# -- the record editor ---------------------------------------------------------------------------

RECORDS = "admin:changes_changerequest_records"


def table_post(target, name: str, rows: list[dict]) -> dict:
    data = {"target": target.pk, "name": name, "rr-TOTAL_FORMS": len(rows), "rr-INITIAL_FORMS": 0,
            "rr-MIN_NUM_FORMS": 0, "rr-MAX_NUM_FORMS": 1000}
    for i, row in enumerate(rows):
        data.update({f"rr-{i}-{field}": value for field, value in row.items()})
    return data


def test_the_record_editor_shows_the_live_rrsets_at_a_name_and_its_table_becomes_the_same_items(
        client, author, dns_target):
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    page = client.get(reverse(RECORDS), {"target": dns_target.pk, "name": "www"})
    assert page.status_code == 200
    assert [(f.initial["type"], f.initial["ttl"], f.initial["value"]) for f in page.context["formset"]
            if f.initial] == [("A", 300, "192.0.2.10"), ("A", 300, "192.0.2.11")]

    response = client.post(reverse(RECORDS), table_post(dns_target, f"www.{dns_target.name}.", [
        {"type": "A", "ttl": 300, "value": "192.0.2.10"},
        {"type": "A", "ttl": 300, "value": "192.0.2.11", "delete": "on"},
        {"type": "TXT", "ttl": 600, "value": '"hello"'},
    ]))
    assert response.status_code == 302
    add = client.get(response["Location"])
    patch = add.context["form"].initial["patch"]
    assert patch == '= www 300 IN A 192.0.2.10\n= www 600 IN TXT "hello"'
    assert str(add.context["form"].initial["target"]) == str(dns_target.pk)

    assert propose(client, dns_target, patch).status_code == 302
    by_table = ChangeRequest.objects.get()
    by_api = api_create(author, dns_target, [
        {"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": ["192.0.2.10"]},
        {"op": "upsert", "name": "www", "type": "TXT", "ttl": 600, "records": ['"hello"']}])
    assert by_api.status_code == 201
    assert by_table.items == by_api.json()["items"]


def test_the_record_editor_deletes_an_emptied_rrset_and_refuses_an_unchanged_table(client, author, dns_target):
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    response = client.post(reverse(RECORDS), table_post(dns_target, "api", [
        {"type": "A", "ttl": 300, "value": "192.0.2.20", "delete": "on"}]))
    assert response.status_code == 302
    assert client.get(response["Location"]).context["form"].initial["patch"] == "- api A"

    unchanged = client.post(reverse(RECORDS), table_post(dns_target, "api", [
        {"type": "A", "ttl": 300, "value": "192.0.2.20"}]))
    assert unchanged.status_code == 200
    assert unchanged.context["formset"].non_form_errors() == [
        "the table is what is live: there is nothing to propose"]
    bad_name = client.get(reverse(RECORDS), {"target": dns_target.pk, "name": "www.other.example."})
    assert "outside zone" in bad_name.context["name_form"].errors["name"][0] and bad_name.context["formset"] is None
    assert not ChangeRequest.objects.exists()


# -- the bake override (issue 16) ----------------------------------------------------------


def test_a_proposal_sets_its_own_bake_with_a_reason_and_the_edit_page_shows_it(client, author, dns_target):
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    page = client.get(reverse(ADD_CHANGE)).content.decode()
    assert "Bake (seconds, overrides the TTL rule)" in page and 'name="bake_override_reason"' in page
    response = propose(client, dns_target, "= www 300 IN A 192.0.2.99\n", bake_override_seconds="1200",
                       bake_override_reason="resolvers in the branch offices pin for 20 min")
    assert response.status_code == 302, response.content.decode()
    change = ChangeRequest.objects.get()
    assert (change.bake_override_seconds, change.bake_override_reason) == (
        1200, "resolvers in the branch offices pin for 20 min")
    html = client.get(change_url(change)).content.decode()
    assert "watching for 20 min: set by the change (resolvers in the branch offices pin for 20 min)" in html
    form = client.get(edit_url(change)).context["form"]
    assert form.initial["bake_override_seconds"] == 1200

    # Emptied on the edit page: back to the target's rule.
    response = client.post(edit_url(change), {"title": "Move www", "reason": "lb",
                                              "patch": "= www 300 IN A 192.0.2.98\n", "bake_override_seconds": ""})
    assert response.status_code == 302, response.content.decode()
    change.refresh_from_db()
    assert (change.bake_override_seconds, change.bake_override_reason) == (None, "")


def test_a_proposal_bake_without_its_reason_is_a_form_error_and_stores_nothing(client, author, dns_target):
    client.force_login(staff_with(author, *ENGINEER_PERMS))
    response = propose(client, dns_target, "= www 300 IN A 192.0.2.99\n", bake_override_seconds="600")
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert errors["bake_override_reason"][0].startswith("required with bake_override_seconds")
    assert "bake_override_seconds" not in errors
    response = propose(client, dns_target, "= www 300 IN A 192.0.2.99\n", bake_override_seconds="90000",
                       bake_override_reason="r")
    assert response.context["form"].errors["bake_override_seconds"] == ["must be an integer 0..86400"]
    assert not ChangeRequest.objects.exists()
    assert not AuditEvent.objects.filter(action="change_created").exists()
