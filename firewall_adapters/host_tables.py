"""The whole-table half of changegate's nftables host helper (standard library only),
installed beside host_helper.py, which imports it for these operations: `plan` (and
validation) against a copy, `probe`, `dump` (the snapshot) and `persist`.

A forked child enters a fresh, empty network namespace (unshare(CLONE_NEWNET)), loads a
copy of the owned tables, applies the change items one by one with the host's own nft
(a rule is accepted exactly when the target's nft accepts it) and reports the touched
chains and sets as nft prints them afterwards. The child refuses to run over a
non-empty ruleset, so it can never touch a live one.

The copy is cheap first: the owned tables' chains without rules and sets without
elements (cost grows with the number of chains, not rules), plus the touched chains'
rules and touched sets' elements as just read. If that does not load (a rule naming an
object the skeleton lacks: a map, a named counter, a flowtable), the whole tables are
copied instead."""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import re
import subprocess

from host_helper import (
    HostLock,
    Refused,
    generation,
    lines_of,
    nft,
    parse_blocks,
    read_key,
    read_keys,
    split_chain,
    write_text,
)

CLONE_NEWNET = 0x40000000


def item_commands(item: dict) -> list[str]:
    """The nft commands one validated item means, resolved against the current state
    of the (throwaway) ruleset: positions and rules become handles here."""
    op, table = item["op"], item["table"]
    obj = item.get("chain") or item.get("set")
    where = f"{table} {obj}"
    kind = "set" if "set" in item else "chain"
    live = read_key(where, kind)
    if live is None and op != "set_chain":
        raise Refused("item", f"{kind} {obj} does not exist in table {table}", field=kind)
    if op == "append":
        return [f"add rule {where} {item['rule']}"]
    if op in ("insert", "delete"):
        header, rules = split_chain(live["lines"])
        handles = live["handles"][len(header):]
        if op == "delete":
            if item["rule"] not in rules:
                raise Refused("item", "no such rule in the chain (give the rule as nft prints it)", field="rule")
            return [f"delete rule {where} handle {handles[rules.index(item['rule'])]}"]
        position = item["position"]
        if position > len(rules):
            raise Refused("item", f"position {position} is past the end of the chain ({len(rules)} rules)",
                          field="position")
        if position == len(rules):
            return [f"add rule {where} {item['rule']}"]
        return [f"insert rule {where} position {handles[position]} {item['rule']}"]
    if op == "set_chain":
        start = [f"add chain {where}"] if live is None else [f"flush chain {where}"]
        return start + [f"add rule {where} {rule}" for rule in item["rules"]]
    if op == "delete_chain":
        return [f"delete chain {where}"]
    if op == "policy":
        return [f"chain {where} {{ policy {item['policy']}; }}"]
    check_elements(live["lines"], item["elements"])
    verb = "add" if op == "add_element" else "delete"
    return [f"{verb} element {where} {{ {', '.join(item['elements'])} }}"]


def check_elements(set_lines: list[str], elements: list[str]) -> None:
    """Address sets take addresses only: nft would resolve a hostname at load time."""
    family = {"type ipv4_addr": 4, "type ipv6_addr": 6}.get(set_lines[0] if set_lines else "")
    for element in elements if family else ():
        try:
            for part in element.split("-"):
                if ipaddress.ip_network(part.strip(), strict=False).version != family:
                    raise ValueError(part)
        except ValueError:
            raise Refused("item", f"{element!r} is not an ipv{family} address, prefix or range",
                          field="elements") from None


ITEM_FIELDS = {"append": "rule", "insert": "rule", "delete": "rule", "set_chain": "rules", "delete_chain": "chain",
               "policy": "policy", "add_element": "elements", "delete_element": "elements"}


def op_sandbox(request: dict) -> dict:
    """Inside `unshare -n`: load the copy, apply the items one by one (nft's own parser
    and checks decide), read the keys back as nft prints them."""
    if nft(["list", "ruleset"]).stdout.strip():  # only ever in a fresh namespace, never over a live ruleset
        raise Refused("request", "the sandbox runs only in an empty network namespace")
    for number, name in enumerate(request.get("interfaces", ())):  # `iif`/`oif` resolve names at load
        # A dummy where the kernel has the module, else a veth with a throwaway peer.
        for kind in (["dummy"], ["veth", "peer", "name", f"cg-sbx-{number}"]):
            if subprocess.run(["ip", "link", "add", "name", name, "type", *kind], check=False,
                              capture_output=True).returncode == 0:
                break
    if nft(["-f", "-"], request["copy"], check=False).returncode != 0:
        raise Refused("copy", "the copy of the owned tables did not load")
    for index, item in enumerate(request["items"]):
        try:
            nft(["-f", "-"], "\n".join(item_commands(item)) + "\n")
        except Refused as exc:
            field = exc.extra.get("field", ITEM_FIELDS.get(item["op"], "op"))
            raise Refused("item", exc.message, index=index, field=field) from None
    return {"after": lines_of(read_keys(request["keys"]))}


def owned_blocks(text: str, tables: list[str]) -> str:
    """The top-level `table` blocks of nft output that belong to an owned table."""
    keep, out = False, []
    for line in text.splitlines():
        if line.startswith("table "):
            keep = " ".join(line.split()[1:3]) in tables
        if keep:
            out.append(line)
    return "\n".join(out) + "\n"


def fast_copy(tables: list[str], keys: list[list[str]], before: list[list[str] | None]) -> str:
    families = sorted({table.split()[0] for table in tables})
    text = "".join(owned_blocks(nft(["list", "chains", family]).stdout, tables) +
                   owned_blocks(nft(["-t", "list", "sets", family]).stdout, tables) for family in families)
    for (name, kind), lines in zip(keys, before):
        if lines is None:
            continue
        family, table, obj = name.split()
        if kind == "chain":
            text += "".join(f"add rule {name} {rule}\n" for rule in split_chain(lines)[1])
        elif any(line.startswith("element ") for line in lines):
            elements = ", ".join(line[8:] for line in lines if line.startswith("element "))
            text += f"add element {family} {table} {obj} {{ {elements} }}\n"
    return text


def full_copy(tables: list[str]) -> str:
    text = ""
    for table in tables:
        done = nft(["list", "table", *table.split()], check=False)
        if done.returncode != 0:
            raise Refused("config", f"table {table} does not exist on the firewall host")
        text += done.stdout
    return text


def interfaces_named(text: str) -> list[str]:
    """Interfaces that rules match by index (iif/oif) and that exist here: the copy gets
    a dummy of each name, or nft would refuse the rule there but not on the host."""
    named = set(re.findall(r'\b(?:iif|oif)\s+(?:!=\s*)?\\?"?([A-Za-z0-9_.\-]{1,15})', text))
    try:
        return sorted(named & set(os.listdir("/sys/class/net")))
    except OSError:
        return []


def in_fresh_netns(request: dict) -> dict:
    """op_sandbox in a forked child that has left this namespace for a new, empty one."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(reader)
        try:
            if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) != 0:
                raise Refused("config", f"cannot make a throwaway network namespace: errno {ctypes.get_errno()}")
            answer = {"ok": True, "result": op_sandbox(request)}
        except Refused as exc:
            answer = {"ok": False, "error": exc.kind, "message": exc.message, **exc.extra}
        except Exception as exc:  # noqa: BLE001 - the parent always gets one answer
            answer = {"ok": False, "error": "internal", "message": f"sandbox: {type(exc).__name__}: {exc}"}
        with os.fdopen(writer, "w") as out:
            json.dump(answer, out)
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as source:
        answer = json.loads(source.read() or "{}")
    os.waitpid(pid, 0)
    return answer


def op_plan(request: dict) -> dict:
    """`before` read live, `after` from the copy; item errors name the item and field."""
    before = lines_of(read_keys(request["keys"]))
    for copy in (lambda: fast_copy(request["tables"], request["keys"], before), lambda: full_copy(request["tables"])):
        text = copy()
        answer = in_fresh_netns({"copy": text, "items": request["items"], "keys": request["keys"],
                                 "interfaces": interfaces_named(text + json.dumps(request["items"]))})
        if answer.get("error") != "copy":
            break
    if not answer.get("ok"):
        extra = {k: v for k, v in answer.items() if k not in ("ok", "error", "message")}
        raise Refused(answer.get("error", "nft"), answer.get("message", "the sandbox failed"), **extra)
    return {"before": before, "after": answer["result"]["after"]}


def op_probe(request: dict) -> dict:
    version = nft(["--version"]).stdout.strip()
    missing = []
    for table in request["tables"]:
        family, name = table.split()
        if nft(["list", "table", family, name], check=False).returncode == 0:
            continue
        nft(["add", "table", family, name]) if request.get("create") else missing.append(table)
    return {"version": version, "missing": missing, "generation": generation()}


def op_dump(request: dict) -> dict:
    """Every chain and set of the owned tables at one generation (retried if a commit
    lands during the read)."""
    for _ in range(5):
        start = generation()
        values: dict[str, list[str]] = {}
        for table in request["tables"]:
            family, name = table.split()
            for (key, kind), value in parse_blocks(nft(["-a", "list", "table", family, name]).stdout).items():
                values[f"{key}\t{kind}"] = value["lines"]
        if generation() == start:
            return {"values": values, "generation": start}
    raise Refused("transient", "the ruleset kept changing during the read")


def op_persist(request: dict) -> dict:
    """Write the owned tables as live now to the file the host loads at boot (an
    `include` of it in /etc/nftables.conf), after the bake: a reboot then neither loses
    an approved change nor resurrects a reverted one. `table X` + `delete table X` first
    makes loading the file replace the tables whatever the boot state."""
    with HostLock(request["state_dir"]):
        text = "".join(f"table {table}\ndelete table {table}\n" + full_copy([table]) for table in request["tables"])
        path = os.path.join(request["state_dir"], "ruleset.nft")
        write_text(path, text)
    return {"path": path, "generation": generation(), "bytes": len(text)}
