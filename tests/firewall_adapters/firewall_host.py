"""A throwaway "firewall host" for the nftables tests: a network namespace holding the
owned table `inet changegate` and a small TCP service, joined by a veth pair to a
second "client" namespace from which the tests connect. Nothing touches the machine's
own namespace: the veth pair is created inside the two namespaces.

Root is needed (`ip netns add`); with CI=true a missing nft/ip or missing root is a
failure, elsewhere the tests skip with the reason."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from firewall_adapters.local_host import RULESET as BASE_RULESET
from firewall_adapters.local_host import SERVICE

FW_ADDRESS, CLIENT_ADDRESS = "10.77.0.1", "10.77.0.2"
SERVICE_PORT, BLOCKABLE_PORT = 8080, 8081
PROBE = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])):
        print("open")
except ConnectionRefusedError:
    print("refused")
except OSError:
    print("filtered")
"""
_numbers = itertools.count()


def require_netns() -> None:
    missing = [tool for tool in ("nft", "ip", "unshare") if shutil.which(tool) is None]
    reason = (f"{', '.join(missing)} not installed (apt-get install nftables iproute2)" if missing
              else None if os.geteuid() == 0 else "network namespaces need root (ip netns add)")
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"nftables tests need real namespaces under CI=true: {reason}")
        pytest.skip(reason)


def run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), input=stdin, check=False, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done


class FirewallHost:
    """The namespaces, the service and helpers to act "outside changegate"."""

    def __init__(self, state_dir: Path) -> None:
        number = next(_numbers)
        self.netns = f"cgfw-{os.getpid()}-{number}"
        self.client = f"cgcl-{os.getpid()}-{number}"
        self.state_dir = state_dir
        self.service: subprocess.Popen[str] | None = None

    def start(self) -> FirewallHost:
        run("ip", "netns", "add", self.netns)
        run("ip", "netns", "add", self.client)
        run("ip", "-n", self.netns, "link", "add", "name", "cgfw0", "type", "veth", "peer", "name", "cgcl0", "netns", self.client)
        for ns, dev, address in ((self.netns, "cgfw0", FW_ADDRESS), (self.client, "cgcl0", CLIENT_ADDRESS)):
            run("ip", "-n", ns, "addr", "add", f"{address}/30", "dev", dev)
            run("ip", "-n", ns, "link", "set", "dev", dev, "up")
            run("ip", "-n", ns, "link", "set", "dev", "lo", "up")
        self.nft("-f", "-", stdin=BASE_RULESET)
        self.service = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, "-c", SERVICE, FW_ADDRESS, str(SERVICE_PORT),
             str(BLOCKABLE_PORT)], stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.service.stdout is not None and self.service.stdout.readline().strip() == "ready"
        return self

    def stop(self) -> None:
        if self.service is not None:
            os.killpg(self.service.pid, signal.SIGKILL)
            self.service.wait()
        # Watchdogs this test armed (their pids are in the test's own state dir).
        for record in self.state_dir.glob("reverts/*/pid.json"):
            try:
                os.kill(json.loads(record.read_text())["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
        run("ip", "netns", "del", self.client, check=False)
        run("ip", "netns", "del", self.netns, check=False)

    def nft(self, *args: str, stdin: str | None = None) -> str:
        return run("ip", "netns", "exec", self.netns, "nft", *args, stdin=stdin).stdout

    def probe(self, port: int, timeout: float = 0.5) -> str:
        """From the client namespace: open, refused or filtered."""
        return run("ip", "netns", "exec", self.client, sys.executable, "-c", PROBE, FW_ADDRESS, str(port),
                   str(timeout)).stdout.strip()

    def config(self, **extra: object) -> dict[str, object]:
        return {"transport": "netns", "netns": self.netns, "tables": ["inet changegate"],
                "state_dir": str(self.state_dir), "revert_seconds": 0, "timeout": 30, **extra}
