"""Fixtures for the nftables kind: a throwaway firewall host per test."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from adapters.kind import TargetKind
from changes.kinds import REGISTRY
from firewall_adapters.adapter import NftAdapter
from firewall_adapters.kind import NFT

from .firewall_host import FirewallHost, require_netns
from .ssh_host import SshHost


@pytest.fixture
def fw_host(tmp_path: Path) -> Iterator[FirewallHost]:
    require_netns()
    host = FirewallHost(tmp_path / "fw-state")
    try:
        yield host.start()
    finally:
        host.stop()


@pytest.fixture
def ssh_host(fw_host: FirewallHost, tmp_path: Path) -> Iterator[SshHost]:
    """An sshd in the firewall host's namespace; keys inside the key directory."""
    key_dir = Path(tempfile.mkdtemp(dir=settings.CHANGEGATE_KEY_DIR, prefix="cg-ssh-"))
    host = SshHost(fw_host, key_dir)
    try:
        yield host.start()
    finally:
        host.stop()
        shutil.rmtree(key_dir, ignore_errors=True)


@pytest.fixture
def nft_registered() -> TargetKind:
    """The nftables kind as changes/kinds.py registers it."""
    return REGISTRY.get(NFT.name)


@pytest.fixture
def fw_adapter(fw_host: FirewallHost) -> Iterator[NftAdapter]:
    config = NFT.validate_config(fw_host.config(), key_dir=settings.CHANGEGATE_KEY_DIR)
    adapter = NFT.adapter(config, key_dir=settings.CHANGEGATE_KEY_DIR)
    yield adapter  # type: ignore[misc]
    adapter.close()
