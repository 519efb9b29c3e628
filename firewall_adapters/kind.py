"""The nftables target kind: the one object through which generic code uses this
package (registered by changes/kinds.py)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any

from adapters.kind import CheckKind, TargetKind
from adapters.plan import Plan, RRKey

from .adapter import NftAdapter
from .config import SECRET_FIELDS
from .items import NftItem, key_for
from .presentation import (
    PATCH_SYNTAX,
    RISKS,
    parse_patch,
    risk_flags,
    unified_diff,
    value_lines,
)


def item_json(item: NftItem) -> dict[str, Any]:
    return item.to_json()


def parse_key(config: Mapping[str, Any], name: Any, kind: Any) -> tuple[RRKey | None, list[tuple[str, str]]]:
    """A live read's key: `name` is "family table object" or just the object in the
    first owned table; `kind` is chain or set."""
    errors = []
    if kind not in ("chain", "set"):
        errors.append(("type", "type must be chain or set"))
    words = str(name or "").split()
    if len(words) == 1 and config.get("tables"):
        words = [*config["tables"][0].split(), words[0]]
    if len(words) != 3:
        errors.append(("name", "name must be 'family table chain' or a chain/set of the first owned table"))
    elif " ".join(words[:2]) not in config.get("tables", []):
        errors.append(("name", "that table is not managed by this target"))
    if errors:
        return None, errors
    return key_for(" ".join(words[:2]), words[2], str(kind)), []


def rollback_items(plan: Plan) -> list[dict[str, Any]]:
    """Items that put every chain and set of an applied plan back to its `before`."""
    items: list[dict[str, Any]] = []
    for step in plan.steps:
        family, table, name = step.key.name.split()
        where = {"table": f"{family} {table}"}
        if step.key.rdtype == "set":
            before = {line[8:] for line in value_lines(step.key, step.before) if line.startswith("element ")}
            after = {line[8:] for line in value_lines(step.key, step.after) if line.startswith("element ")}
            if after - before:
                items.append({"op": "delete_element", **where, "set": name, "elements": sorted(after - before)})
            if before - after:
                items.append({"op": "add_element", **where, "set": name, "elements": sorted(before - after)})
            continue
        if step.before is None:
            items.append({"op": "delete_chain", **where, "chain": name})
            continue
        lines = list(step.before.rdatas)
        header = [line for line in lines if line.startswith("type ")]
        items.append({"op": "set_chain", **where, "chain": name, "rules": lines[len(header):]})
        if header and step.after is not None and header[0] != step.after.rdatas[0] and "policy " in header[0]:
            policy = header[0].split("policy ")[1].rstrip(";").strip()
            items.append({"op": "policy", **where, "chain": name, "policy": policy})
    return items


def _validate_closed(check: Mapping[str, Any], bad: Callable[[str, str], None]) -> dict[str, Any]:
    host, port, timeout = check.get("host"), check.get("port"), check.get("timeout", 1)
    if not isinstance(host, str) or not host:
        bad("host", "host is required")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        bad("port", "port must be 1-65535")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 30:
        bad("timeout", "timeout must be more than 0 and at most 30 seconds")
    return {"type": "tcp_closed", "host": host, "port": port, "timeout": timeout}


def _run_closed(check: Mapping[str, Any]) -> tuple[bool, str]:
    """A block rule works when a connect is refused or times out (filtered)."""
    try:
        with socket.create_connection((check["host"], check["port"]), timeout=float(check["timeout"])):
            return False, "connected: the port is open"
    except ConnectionRefusedError:
        return True, "refused"
    except TimeoutError:
        return True, "filtered (no answer)"
    except OSError as exc:
        return True, f"unreachable ({exc.strerror or exc})"


TCP_CLOSED = CheckKind(name="tcp_closed", fields=frozenset({"host", "port", "timeout"}), validate=_validate_closed,
                       run=_run_closed, describe=lambda c: f"tcp {c['host']}:{c['port']} refused or filtered")

NFT = TargetKind(
    name="nft",
    label="nftables firewall",
    adapter_class=NftAdapter,
    # Where the SSH private key lives on the gateway: never in errors; the key itself
    # is never part of a config (ssh reads the file).
    secret_fields=SECRET_FIELDS,
    item_ops=("append", "insert", "delete", "set_chain", "delete_chain", "add_element", "delete_element", "policy"),
    patch_syntax=PATCH_SYNTAX,
    parse_patch=parse_patch,
    item_json=item_json,
    parse_key=parse_key,
    value_lines=value_lines,
    diff=unified_diff,
    risks=RISKS,
    # The management port comes from the target's config: a rule matching it can cut
    # changegate (and people) off the host.
    risk_flags=lambda plan, *, item_count=None, config=None: risk_flags(
        plan, item_count=item_count, management_port=int((config or {}).get("management_port", 22))),
    rollback_items=rollback_items,
    check_kinds=(TCP_CLOSED,),
)
