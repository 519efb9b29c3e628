"""An sshd inside the firewall host's namespace, for the SSH transport: its own host
key, one authorized key whose forced command is the helper, and a veth link from the
test machine's namespace (the only interface the tests add there; it disappears with
the namespace). sshd runs in a private mount namespace with a tmpfs on /run, so its
privilege-separation directory is never created on the machine."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from firewall_adapters.transport import HELPER

from .firewall_host import FirewallHost, run

SSH_PORT = 2222
_numbers = itertools.count()


def keygen(path: Path) -> str:
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path))
    return path.read_text()


class SshHost:
    def __init__(self, host: FirewallHost, key_dir: Path) -> None:
        number = next(_numbers)
        self.host, self.key_dir = host, key_dir
        self.link = f"cgr{os.getpid() % 100000}x{number}"[:15]
        self.address = f"10.78.{os.getpid() % 250}.{(number * 4) % 252 + 1}"
        self.peer = f"10.78.{os.getpid() % 250}.{(number * 4) % 252 + 2}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SshHost:
        run("ip", "link", "add", "name", self.link, "type", "veth", "peer", "name", "cgs0", "netns", self.host.netns)
        run("ip", "addr", "add", f"{self.address}/30", "dev", self.link)
        run("ip", "link", "set", "dev", self.link, "up")
        run("ip", "-n", self.host.netns, "addr", "add", f"{self.peer}/30", "dev", "cgs0")
        run("ip", "-n", self.host.netns, "link", "set", "dev", "cgs0", "up")
        work = self.key_dir
        self.secrets = [keygen(work / "id_changegate"), keygen(work / "id_stranger")]
        keygen(work / "host_key")
        public = (work / "id_changegate.pub").read_text().strip()
        (work / "authorized_keys").write_text(
            f'command="{sys.executable} -I -S {HELPER}",no-pty,no-port-forwarding,no-agent-forwarding {public}\n')
        host_public = (work / "host_key.pub").read_text().split()[:2]
        (work / "known_hosts").write_text(f"[{self.peer}]:{SSH_PORT} {' '.join(host_public)}\n")
        (work / "sshd_config").write_text("\n".join([
            f"ListenAddress {self.peer}:{SSH_PORT}", f"HostKey {work / 'host_key'}",
            f"AuthorizedKeysFile {work / 'authorized_keys'}", "StrictModes no", "UsePAM no",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
            f"PidFile {work / 'sshd.pid'}", "LogLevel ERROR", ""]))
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.host.netns, "unshare", "-m", "sh", "-c",
             f"mount -t tmpfs tmpfs /run && mkdir /run/sshd && exec /usr/sbin/sshd -D -e -f {work / 'sshd_config'}"],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=open(work / "sshd.log", "wb"))  # noqa: SIM115 - the child holds it
        self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((self.peer, SSH_PORT), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline or (self.process and self.process.poll() is not None):
                    raise AssertionError(f"sshd did not start: {(self.key_dir / 'sshd.log').read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        run("ip", "link", "del", "dev", self.link, check=False)

    def config(self, **extra: object) -> dict[str, object]:
        return {**self.host.config(), "transport": "ssh", "netns": "", "ssh_host": self.peer, "ssh_port": SSH_PORT,
                "ssh_user": "root", "ssh_key_file": str(self.key_dir / "id_changegate"),
                "known_hosts_file": str(self.key_dir / "known_hosts"), "helper": "changegate-nft-helper", **extra}
