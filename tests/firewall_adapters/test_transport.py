"""Reaching the host: registration's live check (tables present, or created empty on
request), and how SSH failures are classified (a refused key or an unknown host key
needs a human; a host that does not answer may be retried). No message quotes ssh."""

from __future__ import annotations

import pytest
from django.conf import settings

from adapters import ConfigError, TransientError
from firewall_adapters.kind import NFT

from .firewall_host import FirewallHost
from .ssh_host import SshHost


def open_adapter(config: dict):
    return NFT.adapter(NFT.validate_config(config, key_dir=settings.CHANGEGATE_KEY_DIR),
                       key_dir=settings.CHANGEGATE_KEY_DIR)


def test_a_missing_owned_table_is_refused_unless_created_on_request(fw_host: FirewallHost) -> None:
    adapter = open_adapter(fw_host.config(tables=["inet changegate", "inet extra"]))
    with pytest.raises(ConfigError, match="inet extra"):
        adapter.check_reachable()
    generation = adapter.check_reachable(prepare=True)
    assert fw_host.nft("list", "table", "inet", "extra").startswith("table inet extra")
    assert adapter.check_reachable() == generation


def test_ssh_to_a_port_nobody_listens_on_is_transient(ssh_host: SshHost) -> None:
    adapter = open_adapter(ssh_host.config(ssh_port=2223, timeout=3))
    with pytest.raises(TransientError):
        adapter.check_reachable()


def test_an_unknown_host_key_is_a_config_error(ssh_host: SshHost) -> None:
    known_hosts = ssh_host.key_dir / "other_known_hosts"
    stranger = (ssh_host.key_dir / "id_stranger.pub").read_text().split()[:2]
    known_hosts.write_text(f"[{ssh_host.peer}]:2222 {' '.join(stranger)}\n")
    adapter = open_adapter(ssh_host.config(known_hosts_file=str(known_hosts)))
    with pytest.raises(ConfigError, match="host key"):
        adapter.check_reachable()


def test_ssh_and_netns_read_the_same_live_values(fw_host: FirewallHost, ssh_host: SshHost) -> None:
    keys = list(open_adapter(fw_host.config()).read_zone())
    assert open_adapter(ssh_host.config()).read(keys) == open_adapter(fw_host.config()).read(keys)
