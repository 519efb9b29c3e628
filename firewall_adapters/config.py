"""An nftables target's config: which host (netns or SSH), which tables changegate
owns there, where the host-side state lives, and how long a revert waits for a confirm.

The SSH private key is a file reference inside the deployment's key directory, like
DNS's tsig_key_file; the key itself is never part of a config."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from adapters import FieldError, ItemValidationError

from .items import TABLE

DEFAULTS: dict[str, Any] = {
    "transport": "netns", "netns": "", "ssh_host": "", "ssh_port": 22, "ssh_user": "", "ssh_key_file": "",
    "known_hosts_file": "", "helper": "changegate-nft-helper", "tables": [], "state_dir": "/var/lib/changegate-nft",
    "revert_seconds": 120, "timeout": 30, "management_port": 22,
}
SECRET_FIELDS = frozenset({"ssh_key_file"})
HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-:]{0,252}$")
NETNS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
USER = re.compile(r"^[a-z_][a-z0-9_\-]{0,31}$")
MAX_REVERT_SECONDS = 3600


def key_file_outside(path: Any, key_dir: str | os.PathLike[str]) -> bool:
    """True unless `path` resolves (symlinks followed) to somewhere inside `key_dir`.
    The message never says whether a path outside exists."""
    if not isinstance(path, str) or not os.path.isabs(path):
        return True
    base, resolved = os.path.realpath(key_dir), os.path.realpath(path)
    return resolved == base or os.path.commonpath([base, resolved]) != base


def _int(config: Mapping[str, Any], field: str, low: int, high: int, bad: Any) -> int:
    value = config.get(field, DEFAULTS[field])
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        bad(field, f"{field} must be a whole number from {low} to {high}")
        return int(DEFAULTS[field])
    return value


def normalize_config(config: Any, *, key_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The normalized config (every field present) or ItemValidationError naming fields."""
    if not isinstance(config, Mapping):
        raise ItemValidationError([FieldError(None, "config", "must be an object")])
    errors: list[FieldError] = []
    bad = lambda field, message: errors.append(FieldError(None, field, message))
    for extra in sorted(set(config) - set(DEFAULTS)):
        bad(extra, "unknown field")
    out = {**DEFAULTS, **{k: v for k, v in config.items() if k in DEFAULTS}}
    tables = out["tables"]
    if not isinstance(tables, list) or not tables:
        bad("tables", "name at least one table changegate owns, e.g. 'inet changegate'")
    else:
        out["tables"] = [" ".join(str(t).split()) for t in tables]
        for table in out["tables"]:
            if not TABLE.match(table):
                bad("tables", f"{table!r} is not 'family name'")
        if len(set(out["tables"])) != len(out["tables"]):
            bad("tables", "a table is named twice")
    if out["transport"] == "netns":
        if not isinstance(out["netns"], str) or not NETNS.match(out["netns"]):
            bad("netns", "netns must name a network namespace")
    elif out["transport"] == "ssh":
        if not isinstance(out["ssh_host"], str) or not HOST.match(out["ssh_host"]):
            bad("ssh_host", "ssh_host must be a host name or address")
        if not isinstance(out["ssh_user"], str) or not USER.match(out["ssh_user"]):
            bad("ssh_user", "ssh_user must be a user name")
        if not isinstance(out["known_hosts_file"], str) or not os.path.isabs(out["known_hosts_file"]):
            bad("known_hosts_file", "known_hosts_file must be an absolute path")
        if not out["ssh_key_file"]:
            bad("ssh_key_file", "ssh_key_file is required for the ssh transport")
        if not isinstance(out["helper"], str) or not re.match(r"^[\w./\-]+$", out["helper"]):
            bad("helper", "helper must be the helper's command on the host")
    else:
        bad("transport", "transport must be netns or ssh")
    if out["ssh_key_file"] and key_file_outside(out["ssh_key_file"], key_dir):
        bad("ssh_key_file", f"ssh_key_file must be a file inside the key directory {os.fspath(key_dir)}")
    if not isinstance(out["state_dir"], str) or not os.path.isabs(out["state_dir"]):
        bad("state_dir", "state_dir must be an absolute path on the firewall host")
    out["ssh_port"] = _int(config, "ssh_port", 1, 65535, bad)
    out["management_port"] = _int(config, "management_port", 1, 65535, bad)
    out["revert_seconds"] = _int(config, "revert_seconds", 0, MAX_REVERT_SECONDS, bad)
    timeout = out["timeout"]
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 600:
        bad("timeout", "timeout must be seconds, more than 0 and at most 600")
    if errors:
        raise ItemValidationError(errors)
    return out
