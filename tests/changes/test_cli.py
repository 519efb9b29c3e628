"""The `changegate` CLI against the real API: pytest-django's live_server, a real
DRF token, a real named behind it. Most tests call `changegate_cli.main.main(argv)` in
process; one runs the installed console script as a subprocess."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from changegate_cli import client as cli_client
from changegate_cli import config as cli_config
from changegate_cli import errors as cli_errors
from changegate_cli import main as cli
from changegate_cli import patch as cli_patch
from changegate_cli import render as cli_render
from tests.conftest import ZONE

ANSI = re.compile(r"\x1b\[")
SCRIPT = Path(sys.executable).parent / "changegate"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


# Real commits: the live_server thread serves the API through its own database
# connection, so it sees only committed rows.
LIVE = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fresh_zone(named_server) -> str:
    """Overrides the conftest fixture under `dns_target`. Nothing here is approved,
    so nothing is ever applied: these tests only read DNS and can share the
    session's demo zone instead of using up the spare zones that writers need."""
    return ZONE


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No CHANGEGATE_* from the developer's shell, no real ~/.config file."""
    for var in ("CHANGEGATE_URL", "CHANGEGATE_TOKEN", "CHANGEGATE_USER", "CHANGEGATE_PROFILE", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "changegate" / "config.ini"


@pytest.fixture
def run(clean_env, capsys):
    def run(*argv: str) -> Run:
        capsys.readouterr()
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def token(author):
    from rest_framework.authtoken.models import Token

    return Token.objects.create(user=author).key


@pytest.fixture
def server(live_server, token, monkeypatch, run):
    """Environment pointing at the live server as alice (the author persona)."""
    monkeypatch.setenv("CHANGEGATE_URL", live_server.url)
    monkeypatch.setenv("CHANGEGATE_TOKEN", token)
    return live_server


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def change_id(out: str) -> int:
    match = re.search(r"change #(\d+)", out)
    assert match, out
    return int(match.group(1))


def diff_lines(out: str) -> set[str]:
    """Diff lines with the owner name cut off (relative or absolute, it is the server's choice)."""
    return {line[0] + " ".join(line[1:].split()[1:]) for line in out.splitlines()
            if line[:1] in ("+", "-") and not line.startswith(("+++", "---"))}


# ---------------------------------------------------------------------------
# Against the live server


@LIVE
@pytest.mark.named
def test_targets_reads_url_and_token_from_the_config_profile(live_server, token, dns_target, clean_env, run):
    clean_env.parent.mkdir(parents=True)
    clean_env.write_text(f"[default]\nurl = http://127.0.0.1:1\ntoken = wrong\n\n"
                         f"[staging]\nurl = {live_server.url}\ntoken = {token}\n")
    clean_env.chmod(0o600)

    result = run("--profile", "staging", "targets")
    assert result.code == 0, result.err
    header, row = result.out.splitlines()
    assert header.split() == ["ID", "NAME", "ZONE", "APPROVALS", "FROZEN"]
    assert row.split() == [str(dns_target.pk), dns_target.name, dns_target.name, "1", "no"]
    assert result.err == ""

    as_json = run("targets", "--profile", "staging", "--json").json()
    assert as_json["count"] == 1
    assert as_json["results"][0]["name"] == dns_target.name


@LIVE
@pytest.mark.named
def test_propose_builds_the_patch_from_flags_and_file_and_submits(server, dns_target, run, tmp_path):
    from changes.models import AuditEvent, ChangeRequest

    patch = tmp_path / "patch.txt"
    patch.write_text("# from a file\n+ new 300 A 192.0.2.50\n")
    result = run("propose", "--target", dns_target.name, "--title", "Move www", "--reason", "new load balancer",
                 "--reference", "CHG0012345", "--upsert", "www 300 A 192.0.2.99", "--delete", "api A", "--file", str(patch),
                 "--check-tcp", "127.0.0.1:443", "--submit")

    assert result.code == 0, result.err
    change = ChangeRequest.objects.get(pk=change_id(result.out))
    assert change.state == ChangeRequest.State.PENDING_APPROVAL and change.reference == "CHG0012345"
    assert "pending_approval" in result.out
    assert change.fingerprint in result.out
    assert {"-300 IN A 192.0.2.10", "-300 IN A 192.0.2.11", "+300 IN A 192.0.2.99",
            "-300 IN A 192.0.2.20", "+300 IN A 192.0.2.50"} <= diff_lines(result.out)
    assert [(i["op"], i["name"].split(".")[0]) for i in change.items] == [("upsert", "www"), ("delete", "api"), ("add", "new")]
    assert change.health_checks == [{"type": "tcp", "host": "127.0.0.1", "port": 443, "timeout": 2}]
    # The server tells CLI from plain API calls by our User-Agent.
    origins = set(AuditEvent.objects.filter(change=change).values_list("origin", "user_agent"))
    assert origins == {("cli", cli_client.USER_AGENT)}


@LIVE
@pytest.mark.named
def test_a_draft_shows_its_diff_risk_flags_and_events_without_ansi(server, dns_target, run):
    proposed = run("propose", "--target", str(dns_target.pk), "--reason", "Route mail via the new relay\nticket 42",
                   "--upsert", "@ 300 MX 20 mail")
    assert proposed.code == 0, proposed.err
    number = change_id(proposed.out)
    assert "draft" in proposed.out
    assert "mail:" in proposed.out  # risk flag with its description
    assert f"changegate submit {number}" in proposed.out

    shown = run("show", str(number))
    assert shown.code == 0, shown.err
    assert "Route mail via the new relay" in shown.out.splitlines()[0]  # title defaults to the reason's first line
    assert "ticket 42" in shown.out
    changed = sorted(diff_lines(shown.out))  # the server writes rdata names absolute: "10 mail.<zone>."
    assert [line.split(".")[0] for line in changed] == ["+300 IN MX 20 mail", "-300 IN MX 10 mail"]
    assert "@@" in shown.out
    assert not ANSI.search(shown.out)  # captured stdout is not a TTY
    assert re.search(r"change_created\s+alice \(cli\)", shown.out)

    as_json = run("--json", "show", str(number)).json()
    assert as_json["id"] == number and as_json["state"] == "draft"
    assert as_json["diff"].startswith("---")

    replanned = run("plan", str(number))
    assert replanned.code == 0, replanned.err
    assert "plan unchanged" in replanned.out


@LIVE
@pytest.mark.named
def test_propose_and_show_print_the_reviewer_warnings_before_the_diff(server, dns_target, run):
    proposed = run("propose", "--target", dns_target.name, "--reason", "mail for the shop",
                   "--upsert", "shop 300 MX 10 nohost")
    assert proposed.code == 0, proposed.err
    zone = f"{dns_target.name}."
    warning = (f"warning: shop.{zone} MX 10 nohost.{zone}: nohost.{zone} is in zone {zone} "
               "and has no address (A/AAAA)")
    for out in (proposed.out, run("show", str(change_id(proposed.out))).out):
        lines = out.splitlines()
        assert lines.count(warning) == 1, out
        first_diff_line = next(i for i, line in enumerate(lines) if line.startswith("---"))
        assert lines.index(warning) < first_diff_line

    clean = run("propose", "--target", dns_target.name, "--reason", "new lb", "--upsert", "www 300 A 192.0.2.99")
    assert clean.code == 0, clean.err
    assert "warning:" not in clean.out


@LIVE
@pytest.mark.named
def test_list_filters_and_submit_and_cancel_move_changes(server, dns_target, run, monkeypatch):
    from rest_framework.pagination import PageNumberPagination

    from changes.models import AuditEvent

    monkeypatch.setattr(PageNumberPagination, "page_size", 1)  # every list below spans pages

    first = change_id(run("propose", "--target", dns_target.name, "--reason", "one", "--add", "a1 300 A 192.0.2.1").out)
    second = change_id(run("propose", "--target", dns_target.name, "--reason", "two", "--add", "a2 300 A 192.0.2.2").out)

    submitted = run("submit", str(first))
    assert (submitted.code, submitted.out.strip()) == (0, f"change #{first} is now pending_approval")

    drafts = run("list", "--state", "draft", "--target", dns_target.name)
    assert drafts.code == 0, drafts.err
    assert [line.split()[0] for line in drafts.out.splitlines()[1:]] == [str(second)]

    everything = run("list")
    assert [line.split()[0] for line in everything.out.splitlines()[1:]] == [str(second), str(first)]
    mine = run("list", "--mine", "--user", "alice", "--json").json()
    assert (mine["count"], mine["next"]) == (2, None)
    assert sorted(c["id"] for c in mine["results"]) == [first, second]
    monkeypatch.setenv("CHANGEGATE_USER", "bob")
    assert run("list", "--mine").err == "no matching changes\n"

    cancelled = run("cancel", str(first), "-m", "wrong subnet")
    assert (cancelled.code, cancelled.out.strip()) == (0, f"change #{first} is now cancelled")
    assert AuditEvent.objects.get(change_id=first, action="change_cancelled").payload["reason"] == "wrong subnet"

    again = run("cancel", str(first), "-m", "again")
    assert again.code == 1
    assert again.err.startswith("error: ") and "cancelled" in again.err


@LIVE
@pytest.mark.named
def test_live_prints_the_records_of_a_name(server, dns_target, run):
    result = run("live", "--target", dns_target.name, "www", "a")
    assert result.code == 0, result.err
    assert sorted(line.split()[-1] for line in result.out.splitlines()) == ["192.0.2.10", "192.0.2.11"]
    assert all(" 300 IN A " in line for line in result.out.splitlines())

    assert run("--json", "live", "--target", str(dns_target.pk), "www", "A").json()


@LIVE
@pytest.mark.named
def test_a_bad_record_exits_1_naming_the_item_field(server, dns_target, run):
    from changes.models import ChangeRequest

    result = run("propose", "--target", dns_target.name, "--reason", "typo", "--upsert", "www 300 A 999.1.1.1")
    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith("error: the server refused 1 field:\n")
    assert re.search(r"^  items\[0\]\.records\[0\]: .+\(line 1\)$", result.err, re.M), result.err
    assert not ChangeRequest.objects.exists()


@LIVE
def test_an_unknown_change_exits_1_with_the_server_detail(server, run):
    result = run("show", "999999")
    assert result.code == 1
    assert result.err.startswith("error: ")
    assert "Traceback" not in result.err


@LIVE
def test_a_wrong_token_or_base_url_exits_1_saying_so(server, run):
    result = run("--token", "0" * 40, "targets")
    assert (result.code, result.err) == (1, "error: Invalid token.\n")

    wrong = f"{server.url}/changegate"
    result = run("--url", wrong, "targets")  # an HTML 404 page, not the API: name the URL tried
    assert (result.code, result.err) == (1, f"error: HTTP 404 Not Found (GET {wrong}/api/v1/targets/)\n")


@LIVE
@pytest.mark.named
def test_the_console_script_proposes_from_stdin(server, dns_target, token, tmp_path):
    from changes.models import ChangeRequest

    script = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "changegate_cli"]
    env = {**os.environ, "CHANGEGATE_URL": server.url, "CHANGEGATE_TOKEN": token, "NO_COLOR": "1",
           "XDG_CONFIG_HOME": str(tmp_path)}
    done = subprocess.run([*script, "--json", "propose", "--target", dns_target.name, "--reason", "from a pipe",
                           "--file", "-"], input="= www 300 IN A 192.0.2.77\n", env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    change = json.loads(done.stdout)
    assert ChangeRequest.objects.get(pk=change["id"]).items[0]["records"] == ["192.0.2.77"]

    missing_reason = subprocess.run([*script, "propose", "--target", dns_target.name], env=env,
                                    capture_output=True, text=True, timeout=60, check=False)
    assert missing_reason.returncode == 2
    assert "--reason" in missing_reason.stderr


@pytest.fixture
def writable_target(named_server, operator, author, reviewer):
    """A target on a spare zone of its own, for the tests that apply a change (the
    demo zone the rest of this module shares is never written). No bake: an applied
    change is verified at once. alice also holds the emergency role here."""
    from changes.services import target_register
    from tests.conftest import grant, spare_zone

    zone = spare_zone()
    target = target_register(actor=operator, name=zone, bake_seconds=0, bake_max_seconds=0, config={
        "zone": zone, "primary": named_server.primary, "tsig_key_file": str(named_server.key_file), "timeout": 3})
    grant(author, "engineer", target)
    grant(reviewer, "reviewer", target)
    grant(author, "emergency", target)
    return target


def own_note(change) -> str:
    from approvals.policy import approvals_required

    needed = approvals_required(change)
    return "note: you cannot approve your own change: it needs " + (
        "1 approval from someone else" if needed == 1 else f"{needed} approvals from other people")


def first_diff_line(out: str) -> int:
    return next(i for i, line in enumerate(out.splitlines()) if line.startswith("---"))


@LIVE
@pytest.mark.named
def test_propose_declares_http_and_dns_checks_in_flag_order(server, dns_target, run):
    from changes.models import ChangeRequest

    result = run("propose", "--target", dns_target.name, "--reason", "new lb", "--upsert", "www 300 A 192.0.2.99",
                 "--check-http", "https://www.demo.test/health?a=1,b,expect=204,contains=ok, up,timeout=1.5",
                 "--check-tcp", "[2001:db8::1]:443",
                 "--check-dns", "www.demo.test,resolver=127.0.0.1:5399,type=a,expect=192.0.2.99",
                 "--check-dns", "mail.demo.test,resolver=[::1]:53,type=MX,expect=10 mx1.demo.test.,"
                                "expect=20 mx2.demo.test.",
                 "--check-dns", "old.demo.test,resolver=127.0.0.1:5399,absent", "--check-http", "http://127.0.0.1/")
    assert result.code == 0, result.err
    change = ChangeRequest.objects.get(pk=change_id(result.out))
    assert change.health_checks == [
        {"type": "http", "url": "https://www.demo.test/health?a=1,b", "expect_status": 204, "contains": "ok, up",
         "timeout": 1.5},
        {"type": "tcp", "host": "2001:db8::1", "port": 443, "timeout": 2},
        {"type": "dns_resolve", "name": "www.demo.test", "rdtype": "A", "resolver": "127.0.0.1:5399",
         "expect": ["192.0.2.99"], "timeout": 2},
        {"type": "dns_resolve", "name": "mail.demo.test", "rdtype": "MX", "resolver": "[::1]:53",
         "expect": ["10 mx1.demo.test.", "20 mx2.demo.test."], "timeout": 2},
        {"type": "dns_resolve", "name": "old.demo.test", "rdtype": "A", "resolver": "127.0.0.1:5399", "expect": [],
         "timeout": 2},
        {"type": "http", "url": "http://127.0.0.1/", "expect_status": 200, "timeout": 2},
    ]
    shown = run("show", str(change.pk))
    assert "    http https://www.demo.test/health?a=1,b -> 204" in shown.out.splitlines()


@LIVE
@pytest.mark.named
def test_the_author_is_told_before_the_diff_that_others_must_approve(server, dns_target, run):
    from changes.models import ChangeRequest

    for extra in ([], ["--submit"]):
        result = run("propose", "--target", dns_target.name, "--reason", "new lb", "--upsert", "www 300 A 192.0.2.99",
                     *extra)
        assert result.code == 0, result.err
        change = ChangeRequest.objects.get(pk=change_id(result.out))
        lines = result.out.splitlines()
        assert lines.count(own_note(change)) == 1, result.out
        assert lines.index(own_note(change)) < first_diff_line(result.out)
    # A risk flag (mail) needs one approval more, and the note says so.
    flagged = run("propose", "--target", dns_target.name, "--reason", "relay", "--upsert", "@ 300 MX 20 mail")
    change = ChangeRequest.objects.get(pk=change_id(flagged.out))
    assert "note: you cannot approve your own change: it needs 2 approvals from other people" in flagged.out

    # show and plan say it when --user/CHANGEGATE_USER names the author, and only then.
    assert own_note(change) in run("show", str(change.pk), "--user", "alice").out
    assert own_note(change) in run("plan", str(change.pk), "--user", "alice").out
    assert "note:" not in run("show", str(change.pk), "--user", "bob").out
    assert "note:" not in run("show", str(change.pk)).out
    assert "note:" not in run("--json", "propose", "--target", dns_target.name, "--reason", "x",
                              "--add", "n1 300 A 192.0.2.1").out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@LIVE
@pytest.mark.named
def test_approve_tells_the_author_before_the_diff_when_it_knows_who_asks(server, dns_target, run, monkeypatch):
    from changes.models import ChangeRequest

    number = change_id(run("propose", "--target", dns_target.name, "--reason", "new lb", "--submit",
                           "--upsert", "www 300 A 192.0.2.99").out)
    monkeypatch.setattr(sys, "stdin", _Terminal("n\n"))
    result = run("approve", str(number), "--user", "alice")
    assert result.code == 1 and "not approved: nothing was sent" in result.err
    note = own_note(ChangeRequest.objects.get(pk=number))
    assert result.out.splitlines().index(note) < first_diff_line(result.out)


@LIVE
@pytest.mark.named
@pytest.mark.parametrize("flag, value, message", [
    ("--check-http", "ftp://www.demo.test/", "http:// or https://"),
    ("--check-http", "https://www.demo.test/,expect=99", "expect must be an HTTP status"),
    ("--check-http", "https://www.demo.test/,expext=404", "unknown option 'expext'"),
    ("--check-http", "https://www.demo.test/,timeout=0", "timeout must be"),
    ("--check-dns", "www.demo.test,expect=192.0.2.1", "resolver=IP:PORT is required"),
    ("--check-dns", "www.demo.test,resolver=ns1.demo.test:53,expect=192.0.2.1", "resolver must be IP:PORT"),
    ("--check-dns", "www.demo.test,resolver=127.0.0.1:53", "expect=VALUE"),
    ("--check-dns", "www.demo.test,resolver=127.0.0.1:53,absent,expect=192.0.2.1", "not both"),
    ("--check-dns", "www.demo.test,resolver=127.0.0.1:53,type=A 1,absent", "type must be"),
    ("--check-tcp", "www.demo.test", "HOST:PORT"),
])
def test_a_bad_check_flag_exits_2_naming_the_flag_and_creates_nothing(server, dns_target, run, flag, value,
                                                                       message):
    from changes.models import AuditEvent, ChangeRequest

    events = AuditEvent.objects.count()
    result = run("propose", "--target", dns_target.name, "--reason", "r", "--upsert", "www 300 A 192.0.2.99",
                 "--check-tcp", "127.0.0.1:443", flag, value, "--submit")
    assert result.code == 2, result.err
    assert result.out == ""
    assert f"changegate propose: error: {flag} takes " in result.err and message in result.err, result.err
    assert not ChangeRequest.objects.exists()
    assert AuditEvent.objects.count() == events


@LIVE
@pytest.mark.named
def test_a_check_the_server_refuses_names_the_field_and_the_flag(server, dns_target, run):
    from changes.models import ChangeRequest

    result = run("propose", "--target", dns_target.name, "--reason", "r", "--upsert", "www 300 A 192.0.2.99",
                 "--check-tcp", "127.0.0.1:443", "--check-dns", "www.demo.test,resolver=127.0.0.1:53,timeout=9999,"
                                                                "expect=192.0.2.99")
    assert result.code == 1
    line = next(line for line in result.err.splitlines() if "health_checks[1].timeout" in line)
    assert line.endswith("(--check-dns 'www.demo.test,resolver=127.0.0.1:53,timeout=9999,expect=192.0.2.99')")
    assert not ChangeRequest.objects.exists()


@LIVE
@pytest.mark.named
def test_rollback_proposes_a_draft_undoing_an_applied_change(server, writable_target, author, reviewer, run):
    from changes.models import ChangeRequest
    from tests.factories import approved
    from tests.factories import run as apply

    applied = approved(author, reviewer, writable_target)
    assert apply(applied) == ChangeRequest.State.APPLIED

    result = run("rollback", str(applied.pk), "--reason", "pay.example answers 502")
    assert result.code == 0, result.err
    undo = ChangeRequest.objects.get(pk=change_id(result.out))
    assert undo.pk != applied.pk and undo.state == ChangeRequest.State.DRAFT
    assert undo.reason == f"Rollback of change #{applied.pk}. pay.example answers 502"
    lines = result.out.splitlines()
    assert lines[0].startswith(f"change #{undo.pk}  draft  Roll back #{applied.pk}")
    assert lines.index(own_note(undo)) < first_diff_line(result.out)
    assert {"-300 IN A 192.0.2.99", "+300 IN A 192.0.2.10", "+300 IN A 192.0.2.11"} <= diff_lines(result.out)
    assert lines[-2:] == [f"change #{undo.pk} is a draft that rolls back #{applied.pk}: nothing is applied until "
                          "it is submitted and approved", f"submit it for review with: changegate submit {undo.pk}"]

    submitted = run("rollback", str(applied.pk), "-m", "again, for review", "--submit")
    assert submitted.code == 0, submitted.err
    again = ChangeRequest.objects.get(pk=change_id(submitted.out))
    assert again.state == ChangeRequest.State.PENDING_APPROVAL
    assert submitted.out.splitlines()[-2:] == [
        f"change #{again.pk} rolls back #{applied.pk} and is now pending_approval: "
        f"{own_note(again).removeprefix('note: ')}", f"follow it with: changegate wait {again.pk}"]

    # API errors as the CLI shows them: the field named, or the server's detail.
    too_long = run("rollback", str(applied.pk), "--reason", "x" * 4001)
    assert too_long.code == 1
    assert too_long.err.startswith("error: the server refused 1 field:\n  reason: "), too_long.err
    not_applied = run("rollback", str(undo.pk), "--reason", "undo the undo")
    assert (not_applied.code, not_applied.out) == (1, "")
    assert not_applied.err == f"error: change #{undo.pk} is draft; only applied changes can be rolled back\n"
    assert ChangeRequest.objects.count() == 3


@LIVE
@pytest.mark.named
def test_emergency_approves_alone_and_says_what_happens_next(server, writable_target, run, monkeypatch):
    from changes.models import AuditEvent, ChangeRequest, Execution

    draft = change_id(run("propose", "--target", writable_target.name, "--reason", "outage",
                          "--upsert", "www 300 A 192.0.2.99").out)
    result = run("emergency", str(draft), "--reason", "card payments failing since 10:02")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        f"change #{draft} is now approved as an EMERGENCY change (break-glass by alice)",
        "it is queued to apply without a second approval; the target's reviewers were alerted and one of them "
        "must review it after the fact (the emergency review queue)",
        f"follow it with: changegate wait {draft}",
    ]
    change = ChangeRequest.objects.get(pk=draft)
    assert (change.state, change.emergency_reason) == ("approved", "card payments failing since 10:02")
    assert Execution.objects.filter(change=change).exists()
    assert AuditEvent.objects.filter(change=change, action="change_emergency_approved", origin="cli").exists()

    again = run("emergency", str(draft), "--reason", "twice")
    assert (again.code, again.out) == (1, "")
    assert again.err == f"error: change #{draft} is approved; only draft or pending changes can be forced\n"
    as_json = run("--json", "emergency", str(draft), "--reason", "twice")
    assert as_json.code == 1 and as_json.json()["code"]


@LIVE
@pytest.mark.named
def test_show_and_wait_say_which_check_failed_in_which_round_and_what_was_put_back(
        server, writable_target, author, reviewer, run):
    from changes.models import AuditEvent, ChangeRequest
    from dns_adapters.local_named import free_port
    from tests.factories import approved
    from tests.factories import run as apply

    dead = {"type": "tcp", "host": "127.0.0.1", "port": free_port(), "timeout": 0.5}
    change = approved(author, reviewer, writable_target, health_checks=[dead])
    assert apply(change) == ChangeRequest.State.ROLLED_BACK
    event = AuditEvent.objects.get(change=change, action="change_rolled_back")
    (check,) = event.payload["because"]["failed_checks"]
    why = [f"  why it ended rolled_back (event {event.seq}):",
           f"    rolled back because health check failed in round {event.payload['because']['round']}:",
           f"      tcp 127.0.0.1:{dead['port']}: {check['detail']} ({check['duration_ms']:g} ms)",
           "    put back (each key from the change's after to its before):",
           f"      www.{writable_target.name}. A: 192.0.2.99 (ttl 300) -> 192.0.2.10, 192.0.2.11 (ttl 300)"]

    shown = run("show", str(change.pk))
    assert shown.code == 0, shown.err
    assert shown.out.splitlines()[1:6] == why  # right after the state line
    waited = run("wait", str(change.pk), "--timeout", "5")
    assert waited.code == 1  # anything but applied
    assert waited.out.splitlines() == [f"change #{change.pk} ended rolled_back", *why]
    assert run("--json", "wait", str(change.pk)).json()["state"] == "rolled_back"  # --json: the detail as it was


@LIVE
@pytest.mark.named
def test_show_names_the_drifted_key_with_the_approved_before_and_the_live_value(
        server, writable_target, author, reviewer, named_server, run):
    import dns.query
    import dns.tsigkeyring
    import dns.update

    from changes.models import ChangeRequest
    from tests.factories import approved
    from tests.factories import run as apply

    change = approved(author, reviewer, writable_target)
    update = dns.update.UpdateMessage(writable_target.name, keyring=dns.tsigkeyring.from_file(named_server.key_file))
    update.replace("www", 300, "A", "203.0.113.50")  # someone else, between approval and apply
    dns.query.tcp(update, "127.0.0.1", port=named_server.port, timeout=3)
    assert apply(change) == ChangeRequest.State.DRIFTED

    shown = run("show", str(change.pk))
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    assert lines[2:5] == [
        "    1 key changed outside changegate since the plan was approved (approved before -> live now); the "
        "approvals no longer count:",
        f"      www.{writable_target.name}. A: 192.0.2.10, 192.0.2.11 (ttl 300) -> 203.0.113.50 (ttl 300)",
        f"    re-plan it against the live zone with: changegate plan {change.pk}"]
    assert lines[1].startswith("  why it ended drifted (event ")


# ---------------------------------------------------------------------------
# Without a server: usage, connection and output helpers


def test_a_missing_reason_is_a_usage_error(run):
    result = run("--url", "http://127.0.0.1:1", "--token", "t", "propose", "--target", "demo.test",
                 "--upsert", "www 300 A 192.0.2.1")
    assert result.code == 2
    assert "--reason" in result.err


def test_a_missing_token_is_a_usage_error_naming_where_to_set_it(run, monkeypatch):
    monkeypatch.setenv("CHANGEGATE_URL", "http://127.0.0.1:1")
    result = run("targets")
    assert result.code == 2
    assert "no API token" in result.err and "CHANGEGATE_TOKEN" in result.err


@pytest.mark.parametrize("argv, message", [
    (["propose", "--target", "t", "--reason", "r"], "nothing to propose"),
    (["propose", "--target", "t", "--reason", "r", "--delete", "www A 192.0.2.1"], "--remove"),
    (["propose", "--target", "t", "--reason", "r", "--upsert", "www 300 A 192.0.2.1", "--check-tcp", "host"],
     "HOST:PORT"),
    (["propose", "--target", "t", "--reason", "r", "--file", "/nonexistent/patch"], "cannot read patch file"),
    (["propose", "--target", "t", "--reason", "r", "--upsert", "www 300 A 192.0.2.1", "--check-http", "www"],
     "--check-http takes URL"),
    (["propose", "--target", "t", "--reason", "r", "--upsert", "www 300 A 192.0.2.1", "--check-dns", "www"],
     "--check-dns takes NAME,resolver=IP:PORT"),
    (["rollback", "5"], "--reason"),
    (["rollback", "5", "--reason", " "], "--reason must say why"),
    (["emergency", "5"], "--reason"),
    (["emergency", "5", "-m", ""], "--reason must say why"),
    (["list", "--mine"], "--mine needs your username"),
    (["list", "--mine", "--author", "bob"], "not allowed with"),
    (["--url", "http://", "targets"], "bad server URL"),
    (["--url", "localhost:8000", "targets"], "http://"),
    (["--profile", "nope", "targets"], "nope"),
    (["show", "abc"], "invalid int"),
    ([], "required"),
])
def test_usage_errors_exit_2_before_anything_is_sent(run, monkeypatch, argv, message):
    # An unreachable URL: had anything been sent, the exit code would be 3.
    monkeypatch.setenv("CHANGEGATE_URL", closed_port_url())
    monkeypatch.setenv("CHANGEGATE_TOKEN", "t")
    result = run(*argv)
    assert result.code == 2, result.err
    assert message in result.err


def test_an_unreachable_server_exits_3_naming_the_url(run, clean_env):
    url = closed_port_url()
    clean_env.parent.mkdir(parents=True)
    clean_env.write_text(f"[lab]\nurl = {url}\ntoken = t\n")
    clean_env.chmod(0o600)
    result = run("--profile", "lab", "targets")
    assert result.code == 3
    assert result.err.strip() == f"error: cannot connect to {url}: connection refused"


def test_flags_beat_environment_beat_the_config_file(clean_env, capsys):
    import argparse

    clean_env.parent.mkdir(parents=True)
    clean_env.write_text("[default]\nurl = http://file\ntoken = file-token\nuser = file-user\n")
    clean_env.chmod(0o644)
    args = argparse.Namespace(url=None, token=None, profile=None, user=None)
    assert cli_config.resolve_settings(args, {}) == cli_config.Settings("http://file", "file-token", "file-user")
    assert "readable by others; run: chmod 600" in capsys.readouterr().err
    env = {"CHANGEGATE_URL": "http://env/", "CHANGEGATE_TOKEN": "env-token"}
    assert cli_config.resolve_settings(args, env) == cli_config.Settings("http://env", "env-token", "file-user")
    args = argparse.Namespace(url="https://flag", token="flag-token", profile=None, user="me")
    assert cli_config.resolve_settings(args, env) == cli_config.Settings("https://flag", "flag-token", "me")


def test_patch_is_built_in_command_line_order():
    args = cli.build_parser().parse_args([
        "propose", "--target", "t", "--reason", "r", "--delete", "old A", "--upsert", "www 300 A 192.0.2.1",
        "--add", "www 300 A 192.0.2.2", "--remove", "api A 192.0.2.20", "--upsert", "www 300 A 192.0.2.3",
    ])
    assert cli_patch.build_patch(args) == (
        "- old A\n= www 300 A 192.0.2.1\n+ www 300 A 192.0.2.2\n- api A 192.0.2.20\n= www 300 A 192.0.2.3\n"
    )


def test_title_defaults_to_the_first_line_of_the_reason_truncated():
    assert cli_patch.title_from_reason("\n  Move www  \nbecause") == "Move www"
    long = cli_patch.title_from_reason("x" * 300)
    assert len(long) == cli_patch.TITLE_FROM_REASON_MAX and long.endswith("...")


def test_field_errors_are_printed_with_their_line(capsys):
    body = {"detail": "invalid items", "code": "invalid",
            "errors": [{"index": 0, "field": "items[0].ttl", "message": "TTL out of range", "line": 3},
                       {"index": None, "field": "title", "message": "title is required"}]}
    cli._report(cli_errors.ApiError(400, body))
    assert capsys.readouterr().err == (
        "error: the server refused 2 fields:\n  items[0].ttl: TTL out of range (line 3)\n  title: title is required\n"
    )
    cli._report(cli_errors.ApiError(409, {"detail": "change #3 is cancelled", "code": "invalid_state"}))
    assert capsys.readouterr().err == "error: change #3 is cancelled\n"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_why_block_of_an_apply_failure_and_of_a_failed_rollback_after_the_targets_revert(capsys):
    step = {"name": "www.z.test.", "type": "A", "before": None, "after": {"ttl": 60, "rdatas": ["192.0.2.9"]}}
    plan = {"zone": "z.test.", "steps": [step], "guards": []}
    cli_render.print_why({"id": 7, "state": "apply_failed", "plan": plan}, [
        {"seq": 3, "action": "apply_failed", "payload": {"error": "REFUSED by 127.0.0.1\x1b[2J"}}])
    cli_render.print_why({"id": 7, "state": "rollback_failed", "plan": plan}, [
        {"seq": 4, "action": "rollback_started", "payload": {"reverted_by_target": "commit-confirmed timer"}},
        {"seq": 5, "action": "rollback_failed", "payload": {"error": "NOTAUTH", "live": {"www.z.test. A": None}}}])
    cli_render.print_why({"id": 7, "state": "applied", "plan": plan}, [{"seq": 6, "action": "change_verified"}])
    assert capsys.readouterr().out.splitlines() == [
        "  why it ended apply_failed (event 3):",
        "    applying failed: REFUSED by 127.0.0.1\\x1b[2J",  # someone else's text: no escape sequence
        "  why it ended rollback_failed (event 5):",
        "    the rollback failed: NOTAUTH",
        "    it was rolling back because the target reverted it by itself: commit-confirmed timer",
        "    it was putting back (each key from the change's after to its before):",
        "      www.z.test. A: 192.0.2.9 (ttl 60) -> (absent)",
        "    live now:",
        "      www.z.test. A: (absent)"]


def test_diff_is_coloured_only_on_a_tty_without_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(sys, "stdout", _Tty())
    assert cli_render.use_color()
    coloured = cli_render.render_diff("--- z (live)\n+++ z (planned)\n@@ www A @@\n-www 300 IN A 1\n+www 300 IN A 2\n",
                               color=True).splitlines()
    assert [line[:5] for line in coloured[2:]] == ["\x1b[36m", "\x1b[31m", "\x1b[32m"]
    monkeypatch.setenv("NO_COLOR", "1")
    assert not cli_render.use_color()
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.delenv("NO_COLOR")
    assert not cli_render.use_color()


def test_the_inlined_patch_syntax_matches_the_server():
    from dns_adapters.presentation import PATCH_SYNTAX

    assert cli_patch.PATCH_SYNTAX == PATCH_SYNTAX


def test_the_cli_imports_neither_django_nor_server_code():
    code = ("import sys, changegate_cli.main; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('django', 'rest_framework', 'dns', 'dns_adapters', 'approvals', 'config', 'changes', 'accounts', "
            "'changegate_audit')); print(bad); sys.exit(bool(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_check_the_cli_builds_is_one_the_server_accepts_unchanged():
    from changegate_cli.checks import parse_check
    from pipeline.check_specs import CHECK_FIELDS, validate_health_checks

    built = [parse_check("tcp", "192.0.2.1:443"),
             parse_check("http", "https://www.demo.test/a,b,expect=301,contains=moved,timeout=1"),
             parse_check("dns", "www.demo.test,resolver=192.0.2.53:53,type=aaaa,expect=2001:db8::1,timeout=0.5"),
             parse_check("dns", "old.demo.test,resolver=[2001:db8::53]:53,absent")]
    for check in built:
        assert set(check) <= CHECK_FIELDS[check["type"]], check
    assert [{k: v for k, v in c.items() if k != "timeout"} for c in validate_health_checks(built)] == [
        {k: v for k, v in c.items() if k != "timeout"} for c in built]


@LIVE
@pytest.mark.named
def test_propose_bake_needs_its_reason_before_anything_is_sent(server, dns_target, run):
    from changes.models import ChangeRequest

    result = run("propose", "--target", dns_target.name, "--reason", "new lb", "--upsert", "www 300 A 192.0.2.99",
                 "--bake", "1200")
    assert result.code == 2
    assert "--bake needs --bake-reason" in result.err
    alone = run("propose", "--target", dns_target.name, "--reason", "new lb", "--upsert", "www 300 A 192.0.2.99",
                "--bake-reason", "slow caches")
    assert alone.code == 2 and "--bake-reason goes with --bake" in alone.err
    assert not ChangeRequest.objects.exists()


@LIVE
@pytest.mark.named
def test_propose_with_its_own_bake_shows_it_to_reviewers(server, dns_target, run):
    from changes.models import ChangeRequest

    result = run("--json", "propose", "--target", dns_target.name, "--reason", "new lb",
                 "--upsert", "www 300 A 192.0.2.99", "--bake", "1200", "--bake-reason", "branch resolvers pin 20 min")
    assert result.code == 0, result.err
    change = json.loads(result.out)
    why = "watching for 20 min: set by the change (branch resolvers pin 20 min)"
    assert change["bake"] == {"seconds": 1200, "why": why, "override_reason": "branch resolvers pin 20 min"}
    stored = ChangeRequest.objects.get(pk=change["id"])
    assert (stored.bake_override_seconds, stored.bake_override_reason) == (1200, "branch resolvers pin 20 min")
    assert f"  bake         {why}" in run("show", str(change["id"])).out
