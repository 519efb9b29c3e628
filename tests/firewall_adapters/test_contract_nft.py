"""The kind contract (tests/adapters/test_contract.py) run against a real nftables
host in a network namespace, over both transports (netns, and SSH to an sshd in the
namespace): the contract's test functions are imported here and collected with this
module's `harness`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from adapters import RRKey, RRValue
from firewall_adapters.kind import NFT
from tests.adapters import test_contract as contract
from tests.adapters.test_contract import Harness

from .firewall_host import FirewallHost
from .ssh_host import SshHost

TABLE = "inet changegate"

# Every contract test, present and future, collected here with the nft harness below.
globals().update({name: getattr(contract, name) for name in dir(contract) if name.startswith("test_")})


class NftHarness(Harness):
    def __init__(self, host: FirewallHost, ssh: SshHost | None = None) -> None:
        self.host, self.ssh = host, ssh
        self.kind = NFT
        raw = ssh.config() if ssh else host.config()
        self.config = NFT.validate_config(raw, key_dir=settings.CHANGEGATE_KEY_DIR)
        self.new_item = {"op": "set_chain", "table": TABLE, "chain": "contract", "rules": ["tcp dport 8443 accept"]}
        self.new_key = RRKey(f"{TABLE} contract", "chain")
        self.new_value = RRValue(0, ("tcp dport 8443 accept",))
        self.other_value = RRValue(0, ("tcp dport 9443 accept",))
        self.existing_key = RRKey(f"{TABLE} input", "chain")
        self.plan_zone = TABLE
        # The private keys' text (the one authorized and a stranger's) must never show.
        self.secrets: list[str] = list(ssh.secrets) if ssh else []

    def outside(self, key: RRKey, value: RRValue | None) -> None:
        where = key.name
        if value is None:
            self.host.nft("delete", "chain", *where.split())
            return
        script = [f"add chain {where}", f"flush chain {where}", *(f"add rule {where} {rule}" for rule in value.rdatas)]
        self.host.nft("-f", "-", stdin="\n".join(script) + "\n")

    def refused_config(self, tmp_path: Path) -> dict[str, Any]:
        if self.ssh:  # a key the host does not authorize
            return {**self.config, "ssh_key_file": str(self.ssh.key_dir / "id_stranger")}
        return {**self.config, "netns": f"{self.host.netns}-missing"}


@pytest.fixture(params=["netns", "ssh"])
def harness(request: pytest.FixtureRequest, fw_host: FirewallHost, nft_registered: Any) -> Harness:
    return NftHarness(fw_host, request.getfixturevalue("ssh_host") if request.param == "ssh" else None)
