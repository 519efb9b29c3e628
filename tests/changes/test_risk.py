"""Risk flags read what a change means, not how it is spelled: every way found to
move mail authentication, delegate a name or replace the apex NS set without the
second approver a risky change needs. Through the API, against a real named."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from changes.models import ChangeRequest

pytestmark = [pytest.mark.django_db, pytest.mark.named]


def propose(user, target, items, **extra):
    client = APIClient()
    client.force_authenticate(user)
    body = {"target": target.pk, "title": "t", "reason": "r", "items": items, **extra}
    return client.post("/api/v1/changes/", body, format="json")


def upsert(name: str, rdtype: str, *records: str, ttl: int = 300) -> dict:
    return {"op": "upsert", "name": name, "type": rdtype, "ttl": ttl, "records": list(records)}


def flags_and_approvals(response) -> tuple[set[str], int]:
    assert response.status_code == 201, response.json()
    body = response.json()
    return {f["flag"] for f in body["risk_flags"]}, body["approvals_required"]


@pytest.mark.parametrize(("items", "flag"), [
    # SPF split over two character-strings: receivers join them (RFC 7208 section 3.3).
    ([upsert("spf", "TXT", '"v=sp" "f1 include:evil.example -all"')], "mail"),
    ([upsert("@", "TXT", '"V=SPF1 include:evil.example -all"')], "mail"),
    ([upsert("policy", "TXT", '"v=DMAR" "C1; p=none"')], "mail"),
    # A DKIM key need not say v=DKIM1 (RFC 6376 section 3.6.1): its p= tag is what counts.
    ([upsert("keys", "TXT", '"k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC"')], "mail"),
    # DMARC and DKIM by a CNAME: any type at those names is mail authentication.
    ([upsert("_dmarc", "CNAME", "x.evil.example.")], "mail"),
    ([upsert("sel._domainkey", "CNAME", "x.evil.example.")], "mail"),
    ([upsert("_domainkey", "NS", "ns.evil.example.")], "mail"),
    ([upsert("@", "SPF", '"v=spf1 -all"')], "mail"),
    # A sub-delegation hands the name (and everything below) to other servers.
    ([upsert("pay", "NS", "ns.evil.example.")], "delegation"),
    ([upsert("old", "DNAME", "evil.example.")], "dname"),
])
def test_a_risky_change_however_spelled_is_flagged_and_needs_one_more_approval(author, dns_target, items, flag):
    flags, required = flags_and_approvals(propose(author, dns_target, items))
    assert flag in flags
    assert required == dns_target.required_approvals + 1


def test_an_ordinary_txt_record_is_not_flagged(author, dns_target):
    flags, required = flags_and_approvals(
        propose(author, dns_target, [upsert("verify", "TXT", '"site-verification=abc123" "p"')]))
    assert flags == set() and required == dns_target.required_approvals


def test_replacing_the_apex_ns_set_needs_allow_apex(author, dns_target):
    zone = dns_target.name
    items = [upsert("@", "NS", f"ns1.{zone}.", "ns.evil.example.", ttl=3600)]
    refused = propose(author, dns_target, items)
    assert refused.status_code == 400, refused.json()
    assert [(e["index"], e["field"]) for e in refused.json()["errors"]] == [(0, "items[0].type")]
    assert "allow_apex" in refused.json()["errors"][0]["message"]
    add_one = propose(author, dns_target, [{"op": "add", "name": "@", "type": "NS", "records": ["ns.evil.example."]}])
    assert add_one.status_code == 400
    assert not ChangeRequest.objects.exists()

    flags, required = flags_and_approvals(propose(author, dns_target, items, allow_apex=True))
    assert "apex_ns_soa" in flags and required == dns_target.required_approvals + 1
