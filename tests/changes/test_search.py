"""Finding changes by what they touch (issue 15): the change list's search (a number,
an author, a record name in any of its forms, a value, the title), the history of one
record, and the list's columns (times to the second, a colour per state, a mark only on
emergency changes). Searches only narrow what the user may see.

The changes are written with the ORM, as the services store them (absolute names) and
as older or generated rows hold them (names relative to the zone): no DNS needed."""

from __future__ import annotations

import base64
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from changes.models import ChangeRequest, Target
from changes.search import changes_search, changes_touching
from changes.selectors import changes_visible
from changes.services import target_register
from dns_adapters.local_named import write_key_file
from tests.changes.test_admin import staff_with
from tests.conftest import grant
from tests.factories import api_client

pytestmark = [pytest.mark.django_db]
State = ChangeRequest.State

CHANGELIST = "admin:changes_changerequest_changelist"
HISTORY = "admin:changes_changerequest_history"
CHANGES = "/api/v1/changes/"


def a_record(name: str, *, before: list[str] | None, after: list[str] | None, rdtype: str = "A") -> dict:
    return {"name": name, "type": rdtype, "before": {"ttl": 300, "rdatas": before} if before else None,
            "after": {"ttl": 300, "rdatas": after} if after else None}


def change(target: Target, author, title: str, *, items: list, steps: list | None = None, zone: str = "demo.test.",
           state: str = State.APPLIED, **extra) -> ChangeRequest:
    plan = {"zone": zone, "steps": steps, "guards": []} if steps is not None else None
    return ChangeRequest.objects.create(target=target, author=author, title=title, reason="test", items=items,
                                        plan=plan, state=state, **extra)


@pytest.fixture
def demo(tmp_path, make_user, author, reviewer, second_reviewer, outsider):
    """demo.test (alice engineer, bob reviewer, carol engineer), a firewall where bob
    reviews too, and other.test where only olivia works; the changes below on them."""
    key_file = tmp_path / "search.key"
    write_key_file(key_file, "search-key", base64.b64encode(b"k" * 32).decode())
    config = {"primary": "127.0.0.1:1", "tsig_key_file": str(key_file)}
    target = target_register(actor=None, name="demo.test", check_reachable=False,
                             config={"zone": "demo.test", **config})
    other = target_register(actor=None, name="other.test", check_reachable=False,
                            config={"zone": "other.test", **config})
    firewall = Target.objects.create(name="edge-fw", kind="nft", config={"tables": ["inet changegate"]})
    olivia = make_user("olivia")
    grant(author, "engineer", target)
    grant(second_reviewer, "engineer", target)
    grant(reviewer, "reviewer", target)
    grant(reviewer, "reviewer", firewall)
    grant(olivia, "engineer", other)
    www = "www.demo.test."
    changes = {
        # Relative item (as generated rows hold them), absolute plan step.
        "pay": change(target, author, "Payment endpoint", items=[
            {"op": "upsert", "name": "pay", "type": "A", "ttl": 300, "records": ["192.0.2.31"]}],
            steps=[a_record("pay.demo.test.", before=None, after=["192.0.2.31"])]),
        # Absolute item, as the services store it.
        "www": change(target, second_reviewer, "Move the front page", items=[
            {"op": "upsert", "name": www, "type": "A", "ttl": 300, "records": ["192.0.2.10"]}],
            steps=[a_record(www, before=["192.0.2.9"], after=["192.0.2.10"])], state=State.PENDING_APPROVAL),
        # A draft with no plan and a relative name: the zone comes from the target.
        "www-draft": change(target, second_reviewer, "Try another front page", items=[
            {"op": "upsert", "name": "www", "type": "A", "ttl": 60, "records": ["192.0.2.11"]}], state=State.DRAFT),
        # Same name, other type: not the A record's history.
        "www-aaaa": change(target, second_reviewer, "AAAA for the front page", items=[
            {"op": "upsert", "name": www, "type": "AAAA", "ttl": 300, "records": ["2001:db8::10"]}],
            steps=[a_record(www, before=None, after=["2001:db8::10"], rdtype="AAAA")], state=State.APPLY_FAILED),
        "fw": change(firewall, second_reviewer, "Let the office in", zone="inet changegate", items=[
            {"op": "append", "table": "inet changegate", "chain": "input", "rule": "ip saddr 198.51.100.7 accept"}],
            steps=[{"name": "inet changegate input", "type": "chain", "before": {"ttl": 0, "rdatas": []},
                    "after": {"ttl": 0, "rdatas": ["rule ip saddr 198.51.100.7 accept"]}}], emergency=True),
        # On a target the demo users cannot see: olivia's.
        "hidden": change(other, olivia, "Olivia's pay record", zone="other.test.", items=[
            {"op": "upsert", "name": "pay.demo.test.", "type": "A", "ttl": 300, "records": ["192.0.2.31"]}],
            steps=[a_record("pay.demo.test.", before=None, after=["192.0.2.31"])]),
    }
    # Text JSON stores escaped (quotes; non-ASCII on SQLite): found without the raw-text prefilter.
    changes["txt"] = change(other, olivia, "SPF for the café", zone="other.test.", items=[
        {"op": "upsert", "name": "other.test.", "type": "TXT", "ttl": 300, "records": ['"v=spf1 -all"', '"café"']}],
        steps=[a_record("other.test.", before=None, after=['"v=spf1 -all"', '"café"'], rdtype="TXT")])
    return {"target": target, "firewall": firewall, "other": other, "olivia": olivia, **changes}


def found(user, text: str) -> set[int]:
    return set(changes_search(within=changes_visible(user=user), text=text).values_list("pk", flat=True))


def ids(demo, *names: str) -> set[int]:
    return {demo[name].pk for name in names}


# ---------------------------------------------------------------------------
# The selector


@pytest.mark.parametrize("text, expected", [
    ("pay.demo.test", {"pay"}),  # the absolute form of a relative item
    ("pay.demo.test.", {"pay"}),
    ("PAY.Demo.Test", {"pay"}),
    ("pay", {"pay"}),  # relative, as typed
    ("www.demo.test", {"www", "www-draft", "www-aaaa"}),
    ("www", {"www", "www-draft", "www-aaaa"}),
    ("192.0.2.31", {"pay"}),  # a value
    ("2001:db8::10", {"www-aaaa"}),
    ("198.51.100.7", {"fw"}),  # inside a firewall rule
    ("input", {"fw"}),  # a chain by its own name
    ('"inet changegate input"', {"fw"}),
    ("alice", {"pay"}),  # author, exact
    ("car", {"www", "www-draft", "www-aaaa", "fw"}),  # author, beginning
    ("front page", {"www", "www-draft", "www-aaaa"}),  # title words
    ("www 192.0.2.10", {"www"}),  # every term must match
    ("nothing.demo.test", set()),
])
def test_search_finds_changes_by_name_value_author_and_title(demo, reviewer, text, expected):
    assert found(reviewer, text) == ids(demo, *expected)


def test_search_by_number(demo, reviewer):
    olivia, hidden = demo["olivia"], demo["hidden"].pk  # "42" and "#42" when it is change 42
    assert found(olivia, str(hidden)) == found(olivia, f"#{hidden}") == {hidden}
    www = demo["www"].pk
    assert found(reviewer, f"#{www}") == found(reviewer, str(www)) == {www}
    assert found(olivia, f"#{www}") == set()  # not hers to see
    assert found(reviewer, "#99999999999999999999999") == found(reviewer, "99999999999999999999999") == set()


@pytest.mark.parametrize("text", ["v=spf1", """'"v=spf1 -all"'""", "CAFÉ", '"v=spf1'])
def test_search_finds_values_json_stores_escaped(demo, text):
    assert found(demo["olivia"], text) == ids(demo, "txt")


def test_a_search_never_reveals_what_the_user_cannot_see(demo, reviewer, outsider):
    hidden = demo["hidden"].pk
    assert hidden not in found(reviewer, "pay.demo.test") and not found(reviewer, f"#{hidden}")
    assert found(outsider, "pay.demo.test") == found(outsider, "192.0.2.31") == set()
    assert found(demo["olivia"], "pay.demo.test") == found(demo["olivia"], "192.0.2.31") == {hidden}


def test_history_by_record_lists_exactly_the_changes_touching_it(demo, reviewer):
    visible = changes_visible(user=reviewer)
    for name in ("www", "www.demo.test", "www.demo.test.", "WWW.demo.test."):
        touching = changes_touching(within=visible, target=demo["target"], name=name, rdtype="a")
        assert list(touching.values_list("pk", flat=True)) == [demo["www-draft"].pk, demo["www"].pk]  # newest first
    firewall = changes_touching(within=visible, target=demo["firewall"], name="inet changegate input", rdtype="chain")
    assert set(firewall.values_list("pk", flat=True)) == ids(demo, "fw")
    # Olivia's change names pay.demo.test. too, but on her own target: not demo.test's pay.
    pay = changes_touching(within=changes_visible(user=demo["olivia"]), target=demo["target"], name="pay",
                           rdtype="A")
    assert not pay.exists()


# ---------------------------------------------------------------------------
# The admin: search box, history page, columns


def test_the_admin_search_box_uses_the_selector_and_an_empty_result_is_a_page(client, demo, reviewer):
    client.force_login(staff_with(reviewer, "view_changerequest"))
    for text, expected in [("pay.demo.test", {"pay"}), ("192.0.2.31", {"pay"}), ("alice", {"pay"}),
                           (f"#{demo['www'].pk}", {"www"}), (str(demo["www"].pk), {"www"})]:
        page = client.get(reverse(CHANGELIST), {"q": text})
        assert page.status_code == 200
        assert {change.pk for change in page.context["cl"].result_list} == ids(demo, *expected), text
    page = client.get(reverse(CHANGELIST), {"q": "nothing-matches-this"})
    assert page.status_code == 200 and page.context["cl"].result_count == 0
    page = client.get(reverse(CHANGELIST), {"q": str(demo["hidden"].pk)})  # olivia's: not there for bob
    assert page.status_code == 200 and page.context["cl"].result_count == 0


def test_an_outsider_searching_the_admin_finds_nothing(client, demo, outsider):
    client.force_login(staff_with(outsider, "view_changerequest"))
    for text in ("pay.demo.test", "192.0.2.31", "alice", str(demo["pay"].pk), f"#{demo['hidden'].pk}"):
        page = client.get(reverse(CHANGELIST), {"q": text})
        assert page.status_code == 200 and page.context["cl"].result_count == 0, text


def test_the_history_page_lists_the_changes_that_touched_the_record(client, demo, reviewer):
    client.force_login(staff_with(reviewer, "view_changerequest"))
    listing = client.get(reverse(CHANGELIST)).content.decode()
    assert reverse(HISTORY) in listing  # reachable from the list
    page = client.get(reverse(HISTORY), {"target": demo["target"].pk, "name": "www.demo.test.", "type": "A"})
    assert page.status_code == 200
    assert [row["change"].pk for row in page.context["rows"]] == [demo["www-draft"].pk, demo["www"].pk]
    html = page.content.decode()
    assert "Changes that touched www.demo.test. A" in html
    assert reverse("admin:changes_changerequest_change", args=[demo["www"].pk]) in html
    assert "192.0.2.9 \u2192 192.0.2.10" in html and "upsert 192.0.2.11" in html
    assert 'class="cg-state cg-state-pending_approval"' in html and "carol" in html
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", html)
    firewall = client.get(reverse(HISTORY), {"target": demo["firewall"].pk, "name": "inet changegate input",
                                              "type": "chain"})
    assert [row["change"].pk for row in firewall.context["rows"]] == [demo["fw"].pk]
    assert "rule ip saddr 198.51.100.7 accept" in firewall.content.decode()


def test_the_history_page_of_a_target_the_user_cannot_see_is_a_form_error(client, demo, reviewer):
    client.force_login(staff_with(reviewer, "view_changerequest"))
    page = client.get(reverse(HISTORY), {"target": demo["other"].pk, "name": "pay.demo.test.", "type": "A"})
    assert page.status_code == 200 and page.context["rows"] is None and "target" in page.context["form"].errors
    assert "Olivia" not in page.content.decode()
    bad = client.get(reverse(HISTORY), {"target": demo["target"].pk, "name": "www", "type": "NOTATYPE"})
    assert bad.status_code == 200 and bad.context["rows"] is None and "type" in bad.context["form"].errors
    empty = client.get(reverse(HISTORY))
    assert empty.status_code == 200 and not empty.context["form"].is_bound


def test_the_list_shows_times_to_the_second_a_colour_per_state_and_marks_only_emergencies(client, demo, reviewer):
    client.force_login(staff_with(reviewer, "view_changerequest"))
    page = client.get(reverse(CHANGELIST))
    html = page.content.decode()
    rows = re.findall(r'<tr[^>]*>.*?</tr>', html, flags=re.S)
    body = [row for row in rows if 'class="action-checkbox"' in row or "field-title" in row]
    assert len(body) == 5  # pay, www, www-draft, www-aaaa, fw
    for state in ("applied", "pending_approval", "draft", "apply_failed"):
        assert f'class="cg-state cg-state-{state}"' in html
    assert "change_states.css" in html
    # Only the emergency change carries a mark; no icon on the others (it was a red ✖ on each).
    marked = [row for row in body if "cg-emergency-mark" in row]
    assert len(marked) == 1 and "Let the office in" in marked[0]
    assert "icon-no.svg" not in html and "icon-yes.svg" not in html
    created = demo["pay"].created_at
    assert timezone.localtime(created).strftime("%Y-%m-%d %H:%M:%S") in html


# ---------------------------------------------------------------------------
# The API: GET /api/v1/changes/?q= (the same selector)


def test_the_api_searches_with_q_within_what_the_user_may_see(demo, reviewer, outsider):
    client = api_client(reviewer)
    for text, expected in [("pay.demo.test", {"pay"}), ("192.0.2.31", {"pay"}), ("alice", {"pay"}),
                           (f"#{demo['www'].pk}", {"www"}), ("www 192.0.2.10", {"www"})]:
        response = client.get(CHANGES, {"q": text})
        assert response.status_code == 200, response.content
        assert {row["id"] for row in response.json()["results"]} == ids(demo, *expected), text
    nothing = client.get(CHANGES, {"q": "no-such-record.demo.test."})
    assert nothing.status_code == 200 and nothing.json()["count"] == 0
    narrowed = client.get(CHANGES, {"q": "www", "state": "draft"})
    assert {row["id"] for row in narrowed.json()["results"]} == ids(demo, "www-draft")
    assert api_client(outsider).get(CHANGES, {"q": "pay.demo.test"}).json()["count"] == 0
    assert api_client(demo["olivia"]).get(CHANGES, {"q": "192.0.2.31"}).json()["count"] == 1


@pytest.mark.parametrize("query", [{"q": ""}, {"q": "   "}, {"q": "x" * 201}, {"q": "a\x00b"}],
                         ids=["empty", "blank", "too-long", "nul"])
def test_a_bad_q_is_a_400_naming_it(demo, reviewer, query):
    response = api_client(reviewer).get(CHANGES, query)
    assert response.status_code == 400 and {e["field"] for e in response.json()["errors"]} == {"q"}, response.content
