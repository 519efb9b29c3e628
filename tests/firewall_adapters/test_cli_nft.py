"""The `changegate` CLI on a firewall target: pytest-django's live_server with a real
DRF token, an nftables target registered through the service on a real firewall
host (a network namespace). The CLI runs in process (`main(argv)`)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest

from changegate_cli import main as cli
from changegate_cli import patch as cli_patch
from tests.conftest import grant

from .firewall_host import FirewallHost

LIVE = pytest.mark.django_db(transaction=True)


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def run(monkeypatch, tmp_path, capsys):
    for var in ("CHANGEGATE_URL", "CHANGEGATE_TOKEN", "CHANGEGATE_USER", "CHANGEGATE_PROFILE", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))

    def run(*argv: str) -> Run:
        capsys.readouterr()
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def fw_target(fw_host: FirewallHost, author):
    from audit.chain import RequestOrigin
    from changes.models import Origin
    from changes.services import target_register

    target = target_register(actor=None, name="fw1", kind="nft", config=fw_host.config(), bake_seconds=0,
                             origin=RequestOrigin(kind=Origin.CLI))
    grant(author, "engineer", target)
    return target


@pytest.fixture
def server(live_server, author, monkeypatch, run):
    from rest_framework.authtoken.models import Token

    monkeypatch.setenv("CHANGEGATE_URL", live_server.url)
    monkeypatch.setenv("CHANGEGATE_TOKEN", Token.objects.create(user=author).key)
    return live_server


@LIVE
def test_propose_append_and_add_element_becomes_a_firewall_plan(server, fw_target, fw_host, run):
    from changes.models import ChangeRequest

    result = run("propose", "--target", "fw1", "--reason", "open 8443 to a new partner",
                 "--append", "inet changegate input: tcp dport 9443 accept",
                 "--add-element", "inet changegate partners_v4 203.0.113.7")
    assert result.code == 0, result.err
    change = ChangeRequest.objects.get()
    assert [(i["op"], i.get("chain") or i.get("set")) for i in change.items] == [
        ("append", "input"), ("add_element", "partners_v4")]
    added = [line for line in result.out.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert any(line.rstrip().endswith("tcp dport 9443 accept") for line in added), result.out
    assert any("203.0.113.7" in line for line in added), result.out
    assert "tcp dport 9443 accept" not in fw_host.nft("list", "chain", "inet", "changegate", "input")  # only planned

    shown = run("show", str(change.pk))
    assert shown.code == 0 and "tcp dport 9443 accept" in shown.out


@LIVE
def test_live_prints_a_chain_with_rule_indexes_and_a_set(server, fw_target, run):
    chain = run("live", "fw1", "--chain", "input")
    assert chain.code == 0, chain.err
    lines = chain.out.splitlines()
    assert lines[0] == "chain inet changegate input {" and lines[-1] == "}"
    assert "  [0] ct state established,related accept" in lines
    assert "  [1] tcp dport 22 accept" in lines
    assert chain.out == run("live", "--target", str(fw_target.pk), "--chain", "inet changegate input").out

    elements = run("live", "--target", "fw1", "--set", "partners_v4")
    assert elements.code == 0 and "192.0.2.10" in elements.out and "198.51.100.0/24" in elements.out
    as_json = json.loads(run("--json", "live", "fw1", "--chain", "input").out)
    assert as_json["type"] == "chain" and as_json["value"]["rdatas"]

    missing = run("live", "fw1", "--chain", "inet other input")
    assert missing.code == 1 and "not managed by this target" in missing.err


@LIVE
def test_a_rule_nft_refuses_exits_1_naming_the_item_and_stores_nothing(server, fw_target, run):
    from changes.models import ChangeRequest

    result = run("propose", "--target", "fw1", "--reason", "typo", "--append", "inet changegate input: tcp dport 99999 accept")
    assert result.code == 1
    assert "error: the server refused" in result.err and "rule" in result.err
    foreign = run("propose", "--target", "fw1", "--reason", "x", "--append", "inet filter input: tcp dport 1 accept")
    assert foreign.code == 1 and "table" in foreign.err
    assert not ChangeRequest.objects.exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--append", "inet changegate input tcp dport 1 accept"], "--append takes"),
    (["--append", "inet changegate input[0]: tcp dport 1 accept"], "--append takes"),
    (["--insert", "inet changegate input: tcp dport 1 accept"], "--insert takes"),
    (["--add-element", "inet changegate partners_v4"], "--add-element takes"),
    (["--policy", "inet changegate input"], "--policy takes"),
])
def test_malformed_firewall_flags_exit_2_before_anything_is_sent(run, argv, message):
    result = run("--url", "http://127.0.0.1:1", "--token", "t", "propose", "--target", "fw1", "--reason", "r", *argv)
    assert result.code == 2 and message in result.err


def test_firewall_flags_become_patch_lines_in_command_line_order():
    args = cli.build_parser().parse_args([
        "propose", "--target", "fw1", "--reason", "r",
        "--append", "inet changegate input: tcp dport 8443 accept",
        "--insert", "inet changegate input[0]: ip saddr 192.0.2.1 drop",
        "--delete-rule", "inet changegate input: tcp dport 22 accept",
        "--add-element", "inet changegate partners_v4 192.0.2.1, 10.0.0.0/8",
        "--delete-element", "inet changegate partners_v4 192.0.2.10",
        "--policy", "inet changegate input drop"])
    assert cli_patch.build_patch(args).splitlines() == [
        "inet changegate input: tcp dport 8443 accept",
        "inet changegate input[0]: ip saddr 192.0.2.1 drop",
        "-inet changegate input: tcp dport 22 accept",
        "inet changegate partners_v4 += 192.0.2.1, 10.0.0.0/8",
        "inet changegate partners_v4 -= 192.0.2.10",
        "inet changegate input policy drop",
    ]


def test_the_inlined_firewall_patch_syntax_matches_the_server():
    from firewall_adapters.presentation import PATCH_SYNTAX

    assert cli_patch.NFT_PATCH_SYNTAX == PATCH_SYNTAX


def test_the_cli_imports_no_firewall_server_code():
    code = ("import sys, changegate_cli.main; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('firewall_adapters', 'adapters', 'pipeline', 'drift', 'django')); print(bad); sys.exit(bool(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
