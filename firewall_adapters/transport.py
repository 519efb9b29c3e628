"""How changegate reaches a firewall host's helper: a local network namespace
(`ip netns exec`) or SSH. Both run the same host-side helper with the same JSON
request, so the critical window (lock, re-read, compare, commit) never spans a
network round trip; the transports differ only in how the process is started.

The SSH private key stays in its file: ssh reads it (`-i`), changegate never does, and
no message here quotes ssh's own output (which could name key paths or agent state)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from adapters import ConfigError, TransientError

from . import host_helper

HELPER = Path(__file__).with_name("host_helper.py")
CLONE_NEWNET = 0x40000000


class HelperRefused(Exception):
    """The helper answered with an error; `kind` and `extra` as it sent them."""

    def __init__(self, kind: str, message: str, extra: dict[str, Any]) -> None:
        super().__init__(message)
        self.kind, self.message, self.extra = kind, message, extra


class Transport:
    label: str
    timeout: float

    def command(self, op: str) -> list[str]:
        raise NotImplementedError

    def unreachable(self, returncode: int, stderr: str) -> Exception:
        raise NotImplementedError

    def call(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        """Run one helper operation; raise HelperRefused with the helper's own error,
        ConfigError or TransientError when the helper could not be run or answer."""
        try:
            done = subprocess.run(self.command(op), input=json.dumps(request), check=False, capture_output=True, text=True,
                                  timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise TransientError(f"{self.label}: the firewall host did not answer in {self.timeout:g} s") from None
        try:
            answer = json.loads(done.stdout)
        except ValueError:
            raise self.unreachable(done.returncode, done.stderr) from None
        if not answer.get("ok"):
            extra = {k: v for k, v in answer.items() if k not in ("ok", "error", "message")}
            raise HelperRefused(answer.get("error", "nft"), answer.get("message", ""), extra)
        return answer["result"]


class NetnsTransport(Transport):
    def __init__(self, netns: str, *, timeout: float) -> None:
        self.netns, self.timeout = netns, timeout
        self.label = f"netns:{netns}"

    def command(self, op: str) -> list[str]:
        if not os.path.exists(f"/run/netns/{self.netns}"):
            raise ConfigError(f"{self.label}: no network namespace of that name on this machine")
        return ["ip", "netns", "exec", self.netns, sys.executable, "-I", "-S", str(HELPER), op]

    def unreachable(self, returncode: int, stderr: str) -> Exception:
        return ConfigError(f"{self.label}: the helper could not run (exit {returncode}): {stderr.strip()[:300]}")


    def generation(self) -> int | None:
        """The namespace's ruleset generation read in this process, without starting the
        helper: a short-lived thread joins the namespace (setns is per thread) and asks
        the kernel over netlink. None when that is not allowed here (not root)."""
        found: dict[str, int] = {}

        def join_and_read() -> None:
            try:
                fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                        return
                finally:
                    os.close(fd)
                found["generation"] = host_helper.generation()
            except (OSError, host_helper.Refused):
                return

        thread = threading.Thread(target=join_and_read, name=f"nft-generation-{self.netns}")
        thread.start()
        thread.join()
        return found.get("generation")


class SshTransport(Transport):
    def __init__(self, *, host: str, port: int, user: str, key_file: str, known_hosts: str, helper: str,
                 timeout: float) -> None:
        self.host, self.port, self.user, self.helper, self.timeout = host, port, user, helper, timeout
        self._key_file, self._known_hosts = key_file, known_hosts
        self.label = f"ssh:{user}@{host}:{port}"

    def __repr__(self) -> str:
        return f"SshTransport({self.label!r})"

    def command(self, op: str) -> list[str]:
        return ["ssh", "-i", self._key_file, "-o", f"UserKnownHostsFile={self._known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", f"ConnectTimeout={max(1, int(self.timeout))}",
                "-F", "/dev/null", "-p", str(self.port), f"{self.user}@{self.host}", self.helper, op]

    def unreachable(self, returncode: int, stderr: str) -> Exception:
        # Fixed messages only: ssh's stderr is never passed on.
        text = stderr.lower()
        if "permission denied" in text or "load key" in text or "no such identity" in text:
            return ConfigError(f"{self.label}: the firewall host refused the SSH key")
        if "host key verification failed" in text or "host key" in text and "changed" in text:
            return ConfigError(f"{self.label}: the host key is not the one in the known_hosts file")
        if returncode == 255:
            return TransientError(f"{self.label}: cannot connect over SSH")
        return ConfigError(f"{self.label}: the helper could not run on the firewall host (exit {returncode})")
