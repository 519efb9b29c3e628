"""Stored DNS plans keep their exact fingerprint.

An approval binds to a plan's fingerprint, so a change to the canonical form (key
order, separators, field names, escaping) would silently invalidate every stored
approval and break the evidence of every applied change. The hex strings below were
computed by the code before the kind-generic core existed; they are literals on
purpose: never regenerate them."""

from __future__ import annotations

import json

import pytest

from adapters import Guard, Plan, Step
from dns_adapters.base import Plan as DNSPlan
from dns_adapters.base import RRKey, RRValue

PLANS = {
    "create_a": Plan(zone="demo.test.", steps=(
        Step(RRKey("www.demo.test.", "A"), None, RRValue(300, ("192.0.2.1", "192.0.2.2"))),)),
    "replace_txt_guarded": Plan(
        zone="demo.test.",
        steps=(Step(RRKey("demo.test.", "TXT"), RRValue(3600, ('"v=spf1 -all"',)),
                    RRValue(600, ('"hello \\"world\\""', '"v=spf1 mx -all"'))),),
        guards=(Guard(RRKey("demo.test.", "CNAME"), None),)),
    "delete_mx_and_cname": Plan(
        zone="demo.test.",
        steps=(Step(RRKey("demo.test.", "MX"), RRValue(3600, ("10 mail.demo.test.", "20 mx2.example.")), None),
               Step(RRKey("alias.demo.test.", "CNAME"), None, RRValue(60, ("www.demo.test.",)))),
        guards=(Guard(RRKey("alias.demo.test.", "ANY"), None),
                Guard(RRKey("www.demo.test.", "A"), RRValue(300, ("192.0.2.1",))))),
    "empty": Plan(zone="xn--bcher-kva.test.", steps=()),
}

# (plan, its rollback plan)
PINNED = {
    "create_a": ("5046c431a9eafc8e390db4dcb9c67110dc6ae924e26e58292546dc73aaa6fbd9",
                 "7f586841909ff258637b2b42ccf4b10027aefe2fc282994173dba6624e50c51f"),
    "replace_txt_guarded": ("d11317beee77e1d4374f85e180eea01d838adc64305de933aa71d61d4a22112c",
                            "1d05f4ff90dcfe0e34e5367565d8fb5b47638b83ab8d591b058762f11f166009"),
    "delete_mx_and_cname": ("867fb675a847f123458532687bc4bb8554303e6738a67802010db19457ecff12",
                            "7a91cebf8aa133f1ef1db512cccb8e7e4bad33554cbca4a0302a0b72b097be94"),
    "empty": ("eb670f3eeae118ca069e75890ee98eb921c9e58545fa546e666dfd1e7e7d5d8d",
              "eb670f3eeae118ca069e75890ee98eb921c9e58545fa546e666dfd1e7e7d5d8d"),
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_fingerprint_is_pinned(name: str) -> None:
    plan = PLANS[name]
    assert (plan.fingerprint, plan.inverse().fingerprint) == PINNED[name]


@pytest.mark.parametrize("name", sorted(PINNED))
def test_stored_json_round_trips_to_the_same_fingerprint(name: str) -> None:
    # What the database holds is ChangeRequest.plan = plan.to_json(); reading it back
    # (through the DNS module's name too) must give the same fingerprint.
    stored = json.loads(json.dumps(PLANS[name].to_json()))
    assert DNSPlan.from_json(stored).fingerprint == PINNED[name][0]
    assert Plan.from_json(stored) == PLANS[name]
