"""The firewall half of `make run` (scripts/devrun.py): a network namespace
`cgdemo-fw` playing an nftables host. It holds the owned table `inet changegate`
(chain input, set partners_v4) and a small TCP service, and is joined to this
machine by a veth pair on a benchmarking address (RFC 2544, 198.18.0.0/15) so the
worker's health checks can reach the service. `demo_setup` registers it as the
target `fw.demo` (through the service, like the DNS demo zone).

Needs root (`ip netns add`) and nft; `skip_reason()` says why not otherwise. Nothing
touches this machine's own ruleset: the only thing added to its namespace is the host
end of the veth pair, which disappears with the namespace at `stop()`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from firewall_adapters.local_host import RULESET, SERVICE

NETNS = "cgdemo-fw"
TARGET = "fw.demo"
HOST_LINK, FW_LINK = "cgdemo0", "cgdemo1"
HOST_ADDRESS, FW_ADDRESS = "198.18.77.1", "198.18.77.2"
SERVICE_PORT, PARTNER_PORT = 8080, 8443
# The owned table and the service are the tests' own (firewall_adapters/local_host.py).


def skip_reason() -> str | None:
    """Why the firewall demo cannot run here, or None."""
    missing = [tool for tool in ("nft", "ip") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (apt-get install nftables iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root (run make run as root for the firewall demo)"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


class FirewallDemo:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir  # the helper's locks, revert records and boot file

    def start(self) -> None:
        """(Re)create the namespace with the demo ruleset; the service is the caller's
        to spawn (`service_command`) so its supervisor watches and stops it."""
        self.stop()  # a namespace left by a SIGKILLed run
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _ip("netns", "add", NETNS)
        _ip("link", "add", "name", HOST_LINK, "type", "veth", "peer", "name", FW_LINK, "netns", NETNS)
        _ip("addr", "add", f"{HOST_ADDRESS}/30", "dev", HOST_LINK)
        _ip("link", "set", "dev", HOST_LINK, "up")
        for args in (("addr", "add", f"{FW_ADDRESS}/30", "dev", FW_LINK), ("link", "set", "dev", FW_LINK, "up"),
                     ("link", "set", "dev", "lo", "up")):
            _ip("-n", NETNS, *args)
        done = subprocess.run(["ip", "netns", "exec", NETNS, "nft", "-f", "-"], input=RULESET, capture_output=True,
                              text=True, check=False, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"nft refused the demo ruleset: {done.stderr.strip()}")

    def service_command(self) -> list[str]:
        return ["ip", "netns", "exec", NETNS, sys.executable, "-c", SERVICE, FW_ADDRESS, str(SERVICE_PORT),
                str(PARTNER_PORT)]

    def wait_for_service(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((FW_ADDRESS, SERVICE_PORT), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the demo service did not answer on {FW_ADDRESS}:{SERVICE_PORT}") from None
                time.sleep(0.1)  # readiness poll

    def env(self) -> dict[str, str]:
        """What `demo_setup` needs to register fw.demo."""
        return {"CHANGEGATE_DEMO_FW_NETNS": NETNS, "CHANGEGATE_DEMO_FW_STATE_DIR": str(self.state_dir),
                "CHANGEGATE_DEMO_FW_CHECK": f"{FW_ADDRESS}:{SERVICE_PORT}"}

    def stop(self) -> None:
        """Disarm this demo's pending reverts (their watchdogs would act on a namespace
        that is gone) and delete the namespace (the veth pair goes with it)."""
        for record in self.state_dir.glob("reverts/*/pid.json"):
            try:
                pid = int(json.loads(record.read_text())["pid"])
                # Only a watchdog of this state dir: a recorded pid may since name another process.
                if str(self.state_dir) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, ValueError, KeyError, OSError):
                pass
        if os.path.exists(f"/run/netns/{NETNS}"):
            _ip("netns", "del", NETNS, check=False)
        _ip("link", "del", "dev", HOST_LINK, check=False)

    def banner_lines(self) -> str:
        return (f"  Firewall:  target {TARGET}: namespace {NETNS}, table inet changegate (chain input, set partners_v4)\n"
                f"             service {FW_ADDRESS}:{SERVICE_PORT} (health check), partners port {PARTNER_PORT}\n"
                f"             ip netns exec {NETNS} nft list table inet changegate\n"
                f"             changegate live {TARGET} --chain input")
