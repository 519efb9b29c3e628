"""The CLI as the single file docs/cli.md tells people without the server's
dependencies to build: a zipapp of `changegate_cli` with its `__main__.py` at the
root. Its exit codes are the contract scripts rely on, so they must survive the
packaging (zipapp's own `-m` entry point would drop them: it ignores main()'s return)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import changegate_cli

PACKAGE = Path(changegate_cli.__file__).parent


@pytest.fixture(scope="module")
def single_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The steps of docs/cli.md "Install", with this interpreter for python3.
    build = tmp_path_factory.mktemp("cg")
    shutil.copytree(PACKAGE, build / "changegate_cli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PACKAGE / "__main__.py", build / "__main__.py")
    out = build.parent / "changegate"
    subprocess.run([sys.executable, "-m", "zipapp", str(build), "-p", "/usr/bin/env python3", "-o", str(out)],
                   check=True, capture_output=True, timeout=60)
    return out


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on exit: nothing listens there


def run(single_file: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(single_file), *argv], capture_output=True, text=True, timeout=60,
                          check=False, env={"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": str(single_file.parent)})


def test_the_single_file_keeps_the_exit_codes(single_file):
    version = run(single_file, "--version")
    assert (version.returncode, version.stdout.strip()) == (0, "changegate-cli 0.1")

    usage = run(single_file, "targets")  # no URL configured
    assert usage.returncode == 2 and "no server URL" in usage.stderr

    unreachable = run(single_file, "--url", f"http://127.0.0.1:{closed_port()}", "--token", "t", "targets")
    assert unreachable.returncode == 3, unreachable.stderr
    assert "connection refused" in unreachable.stderr


def test_python_dash_m_runs_the_package():
    done = subprocess.run([sys.executable, "-m", "changegate_cli", "targets"], capture_output=True, text=True,
                          timeout=60, check=False, env={"PATH": "/usr/bin:/bin", "XDG_CONFIG_HOME": "/nonexistent"})
    assert done.returncode == 2 and "no server URL" in done.stderr
