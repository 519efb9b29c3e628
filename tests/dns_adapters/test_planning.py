"""Unit tests of item validation and plan building: no server, no Django."""

from __future__ import annotations

import pytest

from dns_adapters.base import ANY, Guard, ItemValidationError, Plan, RRKey, RRValue, Step
from dns_adapters.planning import LiveRead, NameInfo, build_plan, validate_items
from dns_adapters.presentation import RISKS, risk_flags

ZONE = "example.test"


def errors_of(items, **kwargs):
    with pytest.raises(ItemValidationError) as info:
        validate_items(items, zone=ZONE, **kwargs)
    return [(e.index, e.field) for e in info.value.errors]


def item(**overrides):
    base = {"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": ["192.0.2.1"]}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (item(op="replace"), "op"),
        (item(name="www.other.test."), "name"),
        (item(name=""), "name"),
        (item(name="a..b"), "name"),
        (item(name="x" * 64), "name"),
        (item(type="BOGUS"), "type"),
        (item(type="TYPE65280"), "type"),
        (item(type="RRSIG", records=["A 8 2 300 20300101000000 20200101000000 1 example.test. AAAA"]), "type"),
        (item(type="ANY"), "type"),
        (item(ttl=-1), "ttl"),
        (item(ttl=2147483648), "ttl"),
        (item(ttl="soon"), "ttl"),
        (item(ttl=True), "ttl"),
        (item(ttl=...), "ttl"),
        (item(records=["999.1.1.1"]), "records[0]"),
        (item(records=["192.0.2.1", "not-an-ip"]), "records[1]"),
        (item(type="AAAA", records=["192.0.2.1"]), "records[0]"),
        (item(type="MX", records=["mail"]), "records[0]"),
        (item(records=[]), "records"),
        (item(records="192.0.2.1"), "records"),
        (item(records=["192.0.2.1\n192.0.2.2"]), "records[0]"),
        (item(op="delete", records=["192.0.2.1"]), "records"),
        (item(name="@", type="CNAME", records=["www"]), "type"),
        (item(name="x", type="CNAME", records=["a", "b"]), "records"),
        (item(name="@", type="SOA", records=["ns1 host 2 3600 600 604800 300"]), "type"),
        (item(name="www", type="SOA", records=["ns1 host 2 3600 600 604800 300"]), "type"),
        (item(op="delete", name="@", type="NS", ttl=..., records=...), "type"),
        (item(name="@", type="NS", ttl=3600, records=["ns1", "ns.evil.example."]), "type"),
        (item(op="add", name="@", type="NS", ttl=..., records=["ns.evil.example."]), "type"),
        (item(op="remove", name="@", type="NS", ttl=..., records=["ns1"]), "type"),
        (item(colour="red"), "colour"),
        ("www A 192.0.2.1", "item"),
    ],
)
def test_bad_item_is_rejected_naming_its_field(bad, field):
    assert errors_of([bad]) == [(0, field)]


def test_every_bad_item_is_named_not_only_the_first():
    assert errors_of([item(), item(ttl=-5), item(), item(type="NOPE")]) == [(1, "ttl"), (3, "type")]


@pytest.mark.parametrize("items", [[], "x", None, {"op": "upsert"}])
def test_items_must_be_a_non_empty_list(items):
    assert errors_of(items) == [(None, "items")]


def test_names_are_made_absolute_lower_case_and_idn_is_accepted():
    (a, b, c, d) = validate_items(
        [item(name="WWW"), item(name="Www.Example.Test."), item(name="bücher"), item(name="@", type="TXT", records=["x"])],
        zone=ZONE,
    )
    assert a.name == b.name == "www.example.test."
    assert c.name == "xn--bcher-kva.example.test."
    assert d.name == "example.test."


def test_rdata_is_canonical_so_equal_data_compares_equal():
    (a,) = validate_items([item(type="AAAA", records=["2001:DB8:0:0::1", "2001:db8::1"])], zone=ZONE)
    assert a.rdatas == ("2001:db8::1",)
    (mx,) = validate_items([item(type="MX", records=["10 MAIL"])], zone=ZONE)
    assert mx.rdatas == ("10 mail.example.test.",)


def test_apex_soa_and_ns_changes_pass_with_the_flag():
    items = [
        item(name="@", type="SOA", records=["ns1 host 2 3600 600 604800 300"]),
        item(op="delete", name="@", type="NS", ttl=..., records=...),
        item(name="@", type="NS", ttl=3600, records=["ns1", "ns2"]),
    ]
    assert len(validate_items(items, zone=ZONE, allow_apex=True)) == 3


def live_of(values, **names):
    return LiveRead(values=dict(values), names={k: NameInfo(**v) for k, v in names.items()})


WWW = RRKey("www.example.test.", "A")


def plan_of(items, live, **kwargs):
    return build_plan(zone=ZONE, items=validate_items(items, zone=ZONE, **kwargs), live=live, **kwargs)


def test_no_op_steps_are_dropped():
    live = live_of({WWW: RRValue(300, ("192.0.2.1",))})
    assert plan_of([item()], live).is_empty


def test_items_fold_in_order_over_the_live_value():
    live = live_of({WWW: RRValue(300, ("192.0.2.1",))})
    plan = plan_of(
        [item(op="add", ttl=..., records=["192.0.2.2"]), item(op="remove", ttl=..., records=["192.0.2.1"])], live
    )
    assert plan.steps == (Step(WWW, RRValue(300, ("192.0.2.1",)), RRValue(300, ("192.0.2.2",))),)


def test_add_to_a_missing_rrset_needs_a_ttl():
    with pytest.raises(ItemValidationError) as info:
        plan_of([item(op="add", ttl=...)], live_of({WWW: None}))
    assert [(e.index, e.field) for e in info.value.errors] == [(0, "ttl")]


def test_data_beside_an_existing_cname_is_refused():
    with pytest.raises(ItemValidationError) as info:
        plan_of([item()], live_of({WWW: None}, **{"www.example.test.": {"cname": RRValue(300, ("x.example.test.",))}}))
    assert info.value.errors[0].field == "type"


def test_cname_beside_existing_data_is_refused():
    key = RRKey("www.example.test.", "CNAME")
    live = live_of({key: None}, **{"www.example.test.": {"types": {"A": RRValue(300, ("192.0.2.1",))}}})
    with pytest.raises(ItemValidationError):
        plan_of([item(type="CNAME", records=["other"])], live)


def test_cname_replacing_data_deleted_in_the_same_plan_is_allowed():
    key = RRKey("www.example.test.", "CNAME")
    a = RRValue(300, ("192.0.2.1",))
    live = live_of({key: None, WWW: a}, **{"www.example.test.": {"types": {"A": a}}})
    plan = plan_of([item(op="delete", ttl=..., records=...), item(type="CNAME", records=["other"])], live)
    assert [s.key for s in plan.steps] == [WWW, key]


def test_new_data_is_guarded_against_a_cname_appearing_and_a_new_cname_by_name_not_in_use():
    live = live_of({WWW: None, RRKey("n.example.test.", "CNAME"): None}, **{"n.example.test.": {"exists": False}})
    plan = plan_of([item(), item(name="n", type="CNAME", records=["www"])], live)
    assert Guard(RRKey("www.example.test.", "CNAME"), None) in plan.guards
    assert Guard(RRKey("n.example.test.", ANY), None) in plan.guards


def test_emptying_the_apex_ns_by_removal_is_refused_without_the_flag():
    ns = RRKey("example.test.", "NS")
    live = live_of({ns: RRValue(300, ("ns1.example.test.",))})
    with pytest.raises(ItemValidationError):
        plan_of([item(op="remove", name="@", type="NS", ttl=..., records=["ns1"])], live)


def test_fingerprint_is_stable_and_changes_with_any_value():
    step = Step(WWW, RRValue(300, ("192.0.2.1",)), RRValue(300, ("192.0.2.2",)))
    plan = Plan(zone="example.test.", steps=(step,))
    assert plan.fingerprint == Plan.from_json(plan.to_json()).fingerprint
    assert len(plan.fingerprint) == 64
    other = Plan(zone="example.test.", steps=(Step(WWW, step.before, RRValue(301, ("192.0.2.2",))),))
    assert other.fingerprint != plan.fingerprint


def test_inverse_swaps_before_and_after_in_reverse_order():
    a = Step(WWW, None, RRValue(1, ("192.0.2.1",)))
    b = Step(RRKey("x.example.test.", "A"), RRValue(1, ("192.0.2.2",)), None)
    inverse = Plan(zone="example.test.", steps=(a, b), guards=(Guard(WWW, None),)).inverse()
    assert inverse.steps == (b.inverse(), a.inverse())
    assert inverse.guards == ()


# ---------------------------------------------------------------------------
# Risk flags: what a change means, not how it is spelled


def step(name: str, rdtype: str, before=(), after=()) -> Step:
    key = RRKey(f"{name}.{ZONE}." if name != "@" else f"{ZONE}.", rdtype)
    return Step(key, RRValue(300, tuple(before)) if before else None, RRValue(300, tuple(after)) if after else None)


def flags_of(*steps: Step) -> list[str]:
    return risk_flags(Plan(zone=f"{ZONE}.", steps=steps), zone_rrsets=None)


@pytest.mark.parametrize(("the_step", "flag"), [
    (step("spf", "TXT", after=['"v=sp" "f1 include:evil.example -all"']), "mail"),
    (step("spf", "TXT", before=['"v=" "spf1 -all"']), "mail"),  # removing SPF counts as much as adding it
    (step("@", "TXT", after=['"  V=SPF1 -all"']), "mail"),
    (step("@", "SPF", after=['"v=spf1 -all"']), "mail"),
    (step("p", "TXT", after=['"v=DMARC1;" " p=none"']), "mail"),
    (step("k", "TXT", after=['"v=DKIM1; k=rsa; p=MIGf"']), "mail"),
    (step("k", "TXT", after=['"k=rsa; p=MIGf"']), "mail"),  # v=DKIM1 is optional (RFC 6376 3.6.1)
    (step("k", "TXT", after=['"p" "=MIGf"']), "mail"),
    (step("_dmarc", "CNAME", after=["x.evil.example."]), "mail"),
    (step("_dmarc.sub", "TXT", after=['"hello"']), "mail"),
    (step("sel._domainkey", "CNAME", after=["x.evil.example."]), "mail"),
    (step("_domainkey", "DNAME", after=["evil.example."]), "mail"),
    (step("_mta-sts", "TXT", after=['"id=1"']), "mail"),
    (step("mx", "MX", after=["10 mail.example.test."]), "mail"),
    (step("pay", "NS", after=["ns.evil.example."]), "delegation"),
    (step("pay", "NS", before=["ns.evil.example."]), "delegation"),
    (step("old", "DNAME", after=["evil.example."]), "dname"),
    (step("@", "DNAME", after=["evil.example."]), "dname"),
    (step("@", "NS", before=["ns1.example.test."], after=["ns.evil.example."]), "apex_ns_soa"),
])
def test_risk_flags_read_meaning(the_step, flag):
    assert flag in flags_of(the_step)
    assert flag in RISKS


@pytest.mark.parametrize("the_step", [
    step("www", "A", after=["192.0.2.1"]),
    step("verify", "TXT", after=['"site-verification=abc123" "p"']),
    step("note", "TXT", after=['"spf records live elsewhere"']),
    step("alias", "CNAME", after=["www.example.test."]),
])
def test_ordinary_changes_carry_no_flag(the_step):
    assert flags_of(the_step) == []


def test_apex_ns_is_not_a_delegation():
    assert flags_of(step("@", "NS", before=["ns1.example.test."], after=["ns2.example.test."])) == ["apex_ns_soa"]

