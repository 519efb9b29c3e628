"""`changegate approve / reject / pending` against the real API (pytest-django's
live_server, a real DRF token, a real named behind it), in process."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import partial

import pytest
from rest_framework.authtoken.models import Token

from approvals.models import Approval
from approvals.policy import change_approve
from changegate_cli import main as cli
from changes.models import AuditEvent, ChangeRequest
from changes.services import change_create, change_update, target_update_policy
from tests import conftest
from tests.factories import WWW, submitted

# Real commits: every test drives the CLI against live_server, whose thread reads the
# database through its own connection.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.named]
State = ChangeRequest.State
API = [{"op": "upsert", "name": "api", "type": "A", "ttl": 300, "records": ["192.0.2.98"]}]


@pytest.fixture
def fresh_zone(module_zone: str) -> str:
    """One spare zone for the module: approving applies nothing, so these tests only
    read the zone (the database, with the target row, is flushed per test)."""
    return module_zone


@dataclass
class Run:
    code: int
    out: str
    err: str


class Terminal(io.StringIO):
    """Typed answers on a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def run(monkeypatch, tmp_path, capsys):
    for var in ("CHANGEGATE_URL", "CHANGEGATE_TOKEN", "CHANGEGATE_USER", "CHANGEGATE_PROFILE", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))

    def run(*argv: str, stdin: io.StringIO | None = None) -> Run:
        monkeypatch.setattr("sys.stdin", stdin if stdin is not None else io.StringIO(""))
        capsys.readouterr()
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def as_user(live_server, monkeypatch):
    """Point the CLI at the live server with `user`'s token."""

    def use(user) -> None:
        monkeypatch.setenv("CHANGEGATE_URL", live_server.url)
        monkeypatch.setenv("CHANGEGATE_TOKEN", Token.objects.get_or_create(user=user)[0].key)

    return use


pending = partial(submitted, title="Move www", reason="new lb")


def test_approve_with_yes_and_the_reviewed_fingerprint(author, reviewer, dns_target, as_user, run):
    change = pending(author, dns_target)
    as_user(reviewer)
    result = run("approve", str(change.pk), "--yes", "--fingerprint", change.fingerprint, "-m", "checked")
    assert (result.code, result.out.strip()) == (0, f"change #{change.pk} is now approved"), result.err
    approval = Approval.objects.get(change=change)
    assert (approval.approver, approval.fingerprint, approval.comment) == (reviewer, change.fingerprint, "checked")
    assert AuditEvent.objects.get(change=change, action="approval_given").origin == "cli"


def test_approve_with_yes_but_no_fingerprint_is_a_usage_error_and_sends_nothing(
        author, reviewer, dns_target, as_user, run):
    change = pending(author, dns_target)
    as_user(reviewer)
    result = run("approve", str(change.pk), "--yes")
    assert result.code == 2 and "--yes needs --fingerprint" in result.err
    assert not Approval.objects.exists()


def test_approve_without_a_terminal_or_yes_is_a_usage_error(author, reviewer, dns_target, as_user, run):
    change = pending(author, dns_target)
    as_user(reviewer)
    result = run("approve", str(change.pk))
    assert result.code == 2 and "--yes --fingerprint" in result.err
    assert not Approval.objects.exists()


def test_approve_interactively_shows_the_diff_and_sends_the_fingerprint_shown(
        author, reviewer, dns_target, as_user, run):
    change = pending(author, dns_target)
    as_user(reviewer)
    result = run("approve", str(change.pk), stdin=Terminal("y\n"))
    assert result.code == 0, result.err
    assert f"+www.{dns_target.name}. 300 IN A 192.0.2.99" in result.out
    assert change.fingerprint in result.out and "0 of 1 approvals so far" in result.out
    assert "approve this plan? [y/N] " in result.err
    assert result.out.strip().endswith(f"change #{change.pk} is now approved")
    assert Approval.objects.get(change=change).fingerprint == change.fingerprint


@pytest.mark.parametrize("answer", ["n\n", "\n", "", "maybe\n"])
def test_anything_but_yes_at_the_prompt_approves_nothing(answer, author, reviewer, dns_target, as_user, run):
    change = pending(author, dns_target)
    as_user(reviewer)
    result = run("approve", str(change.pk), stdin=Terminal(answer))
    assert result.code == 1 and "not approved: nothing was sent" in result.err
    assert not Approval.objects.exists()
    assert ChangeRequest.objects.get(pk=change.pk).state == State.PENDING_APPROVAL


def test_interactive_approve_with_another_fingerprint_than_shown_does_not_ask(
        author, reviewer, dns_target, as_user, run):
    change = pending(author, dns_target)
    as_user(reviewer)
    result = run("approve", str(change.pk), "--fingerprint", "0" * 64, stdin=Terminal("y\n"))
    assert result.code == 1 and change.fingerprint in result.err and "[y/N]" not in result.err
    assert not Approval.objects.exists()


def test_a_stale_fingerprint_exits_1_naming_the_current_one(author, reviewer, dns_target, as_user, run):
    change = pending(author, dns_target)
    reviewed = change.fingerprint
    edited = change_update(actor=author, change=change, items=API)
    assert edited.fingerprint != reviewed
    as_user(reviewer)
    result = run("approve", str(change.pk), "--yes", "--fingerprint", reviewed)
    assert result.code == 1
    assert f"current fingerprint: {edited.fingerprint} (review it with: changegate show {change.pk})" in result.err
    assert not Approval.objects.exists()

    as_json = run("--json", "approve", str(change.pk), "--yes", "--fingerprint", reviewed)
    assert as_json.code == 1 and json.loads(as_json.out)["current_fingerprint"] == edited.fingerprint


def test_the_author_is_refused_with_exit_1(author, dns_target, as_user, run):
    change = pending(author, dns_target)
    as_user(author)
    result = run("approve", str(change.pk), "--yes", "--fingerprint", change.fingerprint)
    assert result.code == 1 and "someone else must approve it" in result.err
    assert not Approval.objects.exists()


def test_one_of_two_approvals_says_it_is_still_pending(author, reviewer, staff, dns_target, as_user, run):
    target_update_policy(actor=staff, target=dns_target, required_approvals=2)
    change = pending(author, dns_target)
    as_user(reviewer)
    result = run("approve", str(change.pk), "--yes", "--fingerprint", change.fingerprint)
    assert result.code == 0
    assert result.out.strip() == (f"change #{change.pk}: your approval is recorded (1 of 2 approvals); "
                                  "still pending_approval")


def test_reject_with_a_comment_ends_the_change(author, reviewer, dns_target, as_user, run):
    change = pending(author, dns_target)
    as_user(reviewer)
    assert run("reject", str(change.pk)).code == 2  # -m is required
    result = run("reject", str(change.pk), "-m", "wrong address")
    assert (result.code, result.out.strip()) == (0, f"change #{change.pk} is now rejected"), result.err
    assert ChangeRequest.objects.get(pk=change.pk).state == State.REJECTED
    event = AuditEvent.objects.get(change=change, action="change_rejected")
    assert (event.payload["comment"], event.origin) == ("wrong address", "cli")

    again = run("reject", str(change.pk), "-m", "again")
    assert again.code == 1 and "only pending changes can be rejected" in again.err


def test_pending_lists_only_what_waits_for_me(author, reviewer, second_reviewer, staff, dns_target, as_user, run,
                                               make_user):
    target_update_policy(actor=staff, target=dns_target, required_approvals=2)
    waiting = pending(author, dns_target, title="Waiting for bob")
    approved_by_me = pending(author, dns_target, items=API, title="Bob approved this one")
    change_approve(actor=reviewer, change=approved_by_me, fingerprint=approved_by_me.fingerprint)
    change_create(actor=author, target=dns_target, title="Still a draft", reason="r", items=WWW)
    # bob edited this one: he is in its author set.
    erin = make_user("erin")
    conftest.grant(erin, "engineer", dns_target)
    conftest.grant(reviewer, "engineer", dns_target)
    edited = pending(erin, dns_target, title="Bob edited this one")
    change_update(actor=reviewer, change=edited, title="Bob edited this one")

    as_user(reviewer)
    result = run("pending")
    assert result.code == 0, result.err
    header, *rows = result.out.splitlines()
    assert header.split() == ["ID", "TARGET", "AUTHOR", "SUBMITTED", "RISK", "TITLE"]
    assert [row.split()[:3] for row in rows] == [[str(waiting.pk), dns_target.name, "alice"]]
    assert rows[0].endswith("Waiting for bob")

    # carol has approved nothing yet: both pending changes by others wait for her.
    as_user(second_reviewer)
    listed = {c["id"] for c in json.loads(run("--json", "pending").out)["results"]}
    assert listed == {waiting.pk, approved_by_me.pk, edited.pk}

    as_user(author)
    nothing = run("pending")
    assert (nothing.code, nothing.out, nothing.err.strip()) == (0, "", "nothing waits for your review")
