"""nftables changes end to end through the real entry points: proposed and approved
through the REST API, applied by the worker's own code (`tests.factories.run`, the
task body, in this process) against a real namespace with real nft: drift between
approval and apply, a writer racing the apply window, a failed declared check, bad
items, permissions, and no SSH key material anywhere."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator

import pytest

from changes.models import AuditEvent, ChangeRequest, Target
from tests.conftest import grant
from tests.factories import api_client, run

from .firewall_host import BLOCKABLE_PORT, FirewallHost
from .fw_pipeline import (
    TABLE,
    ServiceLink,
    State,
    approve,
    chain_rules,
    nft_target,
    propose,
    rule_item,
)
from .ssh_host import SshHost

pytestmark = pytest.mark.django_db
OPEN_8443 = rule_item("tcp dport 8443 ip saddr 192.0.2.0/24 accept")


@pytest.fixture
def fw_target(fw_host, operator, author, reviewer, second_reviewer, auditor):
    return nft_target(operator, fw_host, revert_seconds=30,
                      roles=[("engineer", author), ("reviewer", reviewer), ("reviewer", second_reviewer),
                             ("auditor", auditor)])


def events(change: ChangeRequest, action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(change=change, action=action).order_by("seq"))


def test_proposed_approved_and_applied_change_is_live_and_confirmed(fw_host, fw_target, author, reviewer):
    body = propose(author, fw_target, [OPEN_8443])
    (step,) = body["plan"]["steps"]
    assert step["name"] == f"{TABLE} input" and step["type"] == "chain"
    assert step["after"]["rdatas"][-1] == "tcp dport 8443 ip saddr 192.0.2.0/24 accept"
    diff = body["diff"].splitlines()
    assert "@@ chain inet changegate input @@" in diff
    assert diff[diff.index("+tcp dport 8443 ip saddr 192.0.2.0/24 accept") - 1] == \
        " ip saddr @partners_v4 tcp dport 8443 accept"  # in rule order, with context
    assert "tcp dport 8443 ip saddr 192.0.2.0/24 accept" not in chain_rules(fw_host)  # nothing before apply
    change = approve(reviewer, body)
    assert run(change) == State.APPLIED
    assert "tcp dport 8443 ip saddr 192.0.2.0/24 accept" in chain_rules(fw_host)
    (verified,) = events(change, "change_verified")
    confirmed = verified.payload["confirmed"]
    assert confirmed["revert"]["status"] == "confirmed"
    assert confirmed["revert"]["id"] == change.fingerprint[:32]
    assert confirmed["persisted"] == str(fw_host.state_dir / "ruleset.nft")
    assert "tcp dport 8443 ip saddr 192.0.2.0/24 accept" in (fw_host.state_dir / "ruleset.nft").read_text()


def test_an_outside_rule_between_approval_and_apply_drifts_and_is_kept(fw_host, fw_target, author, reviewer):
    change = approve(reviewer, propose(author, fw_target, [OPEN_8443]))
    fw_host.nft("add", "rule", "inet", "changegate", "input", "tcp", "dport", "9999", "accept")
    assert run(change) == State.DRIFTED
    rules = chain_rules(fw_host)
    assert "tcp dport 9999 accept" in rules
    assert "tcp dport 8443 ip saddr 192.0.2.0/24 accept" not in rules
    (drifted,) = events(change, "change_drifted")
    assert drifted.payload["moved"] == [f"{TABLE} input chain"]
    assert "tcp dport 9999 accept" in drifted.payload["live"][f"{TABLE} input chain"]["rdatas"]


BURST = "sleep {offset}; for i in $(seq {first} {last}); do nft add rule inet changegate input tcp dport $((20000+i)) accept; done"
CHANGES, BURST_RULES = 8, 12
# Where the burst starts after the worker does (not a synchronisation: the spread
# over the worker's re-read, send, read-back and bake is the point).
OFFSETS = (0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2)


def test_an_outside_writer_racing_the_applies_never_loses_a_rule(fw_host, fw_target, author, reviewer):
    # Each change is approved on a quiet host; then an outside writer starts a burst of
    # commits into the same chain while the worker runs the change, each burst a bit
    # later, so bursts land before, inside and after the apply window.
    ends: dict[int, str] = {}
    for n in range(CHANGES):
        change = approve(reviewer, propose(author, fw_target, [rule_item(f"tcp dport {3000 + n} accept")]))
        burst = subprocess.Popen(["ip", "netns", "exec", fw_host.netns, "sh", "-c",
                                  BURST.format(offset=OFFSETS[n], first=n * BURST_RULES + 1, last=(n + 1) * BURST_RULES)])
        try:
            ends[3000 + n] = run(change)
        finally:
            assert burst.wait() == 0
    rules = chain_rules(fw_host)
    # Every outside commit survived, whatever the changes did meanwhile.
    assert {f"tcp dport {20000 + i} accept" for i in range(1, CHANGES * BURST_RULES + 1)} <= set(rules)
    # Each change ended in a state that says what is live: applied; drifted (live
    # moved before the send); or, when the burst landed after the send, the read-back
    # differs from `after`, the check fails, and the rollback (conditional on `after`)
    # refuses to remove the writer's rules: rollback_failed, loudly, the change's rule
    # still live. Never "applied" with someone's rule gone.
    assert set(ends.values()) <= {State.APPLIED, State.DRIFTED, State.ROLLED_BACK, State.ROLLBACK_FAILED}, ends
    for port, end in ends.items():
        live = f"tcp dport {port} accept" in rules
        assert live == (end in (State.APPLIED, State.ROLLBACK_FAILED)), (port, end, ends)


def test_outside_commits_elsewhere_in_the_namespace_do_not_stop_applies(fw_host, fw_target, author, reviewer):
    # Commits to a key no change touches move the generation in the apply window; the
    # changes must still apply (no false drift), and the outside elements survive.
    process = subprocess.Popen(["ip", "netns", "exec", fw_host.netns, "sh", "-c",
                                ("for i in $(seq 1 200); do nft add element inet changegate partners_v4 "
                                 "{ 203.0.113.$i }; done")])
    ends = []
    try:
        while process.poll() is None or not ends:
            port = 4000 + len(ends)
            ends.append(run(approve(reviewer, propose(author, fw_target, [rule_item(f"tcp dport {port} accept")]))))
    finally:
        process.wait()
    assert ends and set(ends) == {State.APPLIED}, ends
    listing = fw_host.nft("-j", "list", "set", "inet", "changegate", "partners_v4")
    assert all(f"203.0.113.{i}" in listing for i in range(1, 201))


@pytest.fixture
def service(fw_host) -> Iterator[ServiceLink]:
    link = ServiceLink(fw_host, BLOCKABLE_PORT).start()
    yield link
    link.stop()


def test_a_block_that_fails_a_declared_tcp_check_is_rolled_back(fw_host, fw_target, author, reviewer,
                                                                 second_reviewer, service):
    assert service.probe() == "open"
    check = {"type": "tcp", "host": service.address, "port": service.port, "timeout": 0.3}
    body = propose(author, fw_target, [rule_item(f"tcp dport {service.port} drop", op="insert", position=0)],
                   health_checks=[check])
    assert {flag["flag"] for flag in body["risk_flags"]} == {"fw_drop", "fw_above_established"}
    change = approve(reviewer, body, second_reviewer)  # a new drop rule: one more approver
    assert run(change) == State.ROLLED_BACK
    assert service.probe() == "open"
    assert f"tcp dport {service.port} drop" not in chain_rules(fw_host)
    (started,) = events(change, "rollback_started")
    assert [f["kind"] for f in started.payload["failed_checks"]] == ["tcp"]


# ---------------------------------------------------------------------------
# Bad items: 400 naming the item and field, nothing stored


BAD = [
    (rule_item("tcp dport 80 acept"), "items[1].rule"),
    (rule_item("ip saddr www.example.com accept"), "items[1].rule"),
    ({"op": "append", "table": "inet filter", "chain": "input", "rule": "accept"}, "items[1].table"),
    ({"op": "add_element", "table": TABLE, "set": "partners_v4", "elements": ["2001:db8::1"]}, "items[1].elements"),
]


@pytest.mark.parametrize(("item", "field"), BAD, ids=["unparseable", "hostname", "foreign-table", "element-type"])
def test_a_bad_item_is_a_400_naming_item_and_field_and_nothing_is_stored(fw_host, fw_target, author, item, field):
    counts = ChangeRequest.objects.count(), AuditEvent.objects.count()
    ruleset = fw_host.nft("list", "ruleset")
    response = api_client(author).post("/api/v1/changes/", {"target": fw_target.pk, "title": "t", "reason": "r",
                                                             "items": [OPEN_8443, item]}, format="json")
    assert response.status_code == 400, response.json()
    errors = response.json()["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [(1, field)], errors
    assert (ChangeRequest.objects.count(), AuditEvent.objects.count()) == counts
    assert fw_host.nft("list", "ruleset") == ruleset


# ---------------------------------------------------------------------------
# Permissions


def test_the_author_cannot_approve_their_own_nft_change(fw_target, author):
    body = propose(author, fw_target, [OPEN_8443])
    response = api_client(author).post(f"/api/v1/changes/{body['id']}/approve/", {"fingerprint": body["fingerprint"]},
                                       format="json")
    assert response.status_code == 403
    assert ChangeRequest.objects.get(pk=body["id"]).state == State.PENDING_APPROVAL


def test_an_outsider_cannot_see_the_nft_target_or_its_changes(fw_target, author, outsider):
    body = propose(author, fw_target, [OPEN_8443])
    client = api_client(outsider)
    for url in (f"/api/v1/targets/{fw_target.pk}/", f"/api/v1/targets/{fw_target.name}/",
                f"/api/v1/targets/{fw_target.pk}/live/?name=input&type=chain", f"/api/v1/changes/{body['id']}/",
                f"/api/v1/changes/{body['id']}/evidence/"):
        assert client.get(url).status_code == 404, url
    assert client.post(f"/api/v1/changes/{body['id']}/approve/", {"fingerprint": body["fingerprint"]},
                       format="json").status_code == 404
    assert client.get("/api/v1/targets/").json()["results"] == []


def test_a_reviewer_without_the_auditor_role_cannot_export(fw_target, reviewer):
    assert api_client(reviewer).get("/api/v1/audit/export/", {"target": fw_target.pk}).status_code == 403


def test_an_auditor_reads_the_nft_change_but_cannot_propose_or_approve_it(fw_target, author, auditor):
    body = propose(author, fw_target, [OPEN_8443])
    client = api_client(auditor)
    assert client.get(f"/api/v1/changes/{body['id']}/").json()["fingerprint"] == body["fingerprint"]
    assert client.get(f"/api/v1/targets/{fw_target.pk}/live/", {"name": "input", "type": "chain"}).status_code == 200
    assert client.post(f"/api/v1/changes/{body['id']}/approve/", {"fingerprint": body["fingerprint"]},
                       format="json").status_code == 403
    assert client.post("/api/v1/changes/", {"target": fw_target.pk, "title": "t", "reason": "r",
                                            "items": [OPEN_8443]}, format="json").status_code == 403
    assert ChangeRequest.objects.get(pk=body["id"]).state == State.PENDING_APPROVAL


def test_an_auditor_exports_the_nft_changes_events(fw_target, author, reviewer, auditor):
    change = approve(reviewer, propose(author, fw_target, [OPEN_8443]))
    run(change)
    response = api_client(auditor).get("/api/v1/audit/export/", {"target": fw_target.pk})
    assert response.status_code == 200
    lines = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    actions = [line["action"] for line in lines if line.get("change_id") == change.pk]
    assert {"change_created", "change_approved", "change_applied", "change_verified"} <= set(actions), actions
    (applied,) = [line for line in lines if line.get("action") == "change_applied"]
    assert applied["payload"]["fingerprint"] == change.fingerprint


# ---------------------------------------------------------------------------
# SSH: no key material anywhere


def test_no_ssh_key_material_in_responses_logs_events_or_exports(ssh_host: SshHost, fw_host: FirewallHost, operator,
                                                                  author, reviewer, auditor, caplog):
    caplog.set_level(logging.DEBUG)
    bodies = []
    registered = api_client(operator).post("/api/v1/targets/", {
        "name": "fw-ssh", "kind": "nft", "bake_seconds": 0, "config": ssh_host.config(revert_seconds=30)},
        format="json")
    assert registered.status_code == 201, registered.json()
    bodies.append(registered.content.decode())
    target = Target.objects.get(name="fw-ssh")
    for role, user in (("engineer", author), ("reviewer", reviewer), ("auditor", auditor)):
        grant(user, role, target)
    body = propose(author, target, [OPEN_8443])
    bodies.append(json.dumps(body))
    change = approve(reviewer, body)
    assert run(change) == State.APPLIED
    assert "tcp dport 8443 ip saddr 192.0.2.0/24 accept" in chain_rules(fw_host)
    for user, url in ((author, f"/api/v1/changes/{change.pk}/"), (author, f"/api/v1/targets/{target.pk}/"),
                      (author, f"/api/v1/targets/{target.pk}/live/?name=input&type=chain"),
                      (auditor, f"/api/v1/changes/{change.pk}/evidence/"), (author, "/api/v1/targets/")):
        response = api_client(user).get(url)
        assert response.status_code == 200, (url, response.content)
        bodies.append(response.content.decode())
    for fmt in ("jsonl", "csv"):
        export = api_client(auditor).get("/api/v1/audit/export/", {"target": target.pk, "format": fmt})
        assert export.status_code == 200
        bodies.append(b"".join(export.streaming_content).decode())
    bodies += [event.canonical_text for event in AuditEvent.objects.all()]
    bodies += [record.getMessage() for record in caplog.records]
    for secret in ssh_host.secrets:
        key_lines = [line for line in secret.splitlines() if line and not line.startswith("-----")]
        for text in bodies:
            assert not any(line in text for line in key_lines), "private key material leaked"
            assert "PRIVATE KEY" not in text
