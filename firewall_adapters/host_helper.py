#!/usr/bin/env python3
"""changegate's host-side step for nftables targets: one standalone script (standard
library only) that changegate runs on the firewall host, as
`ip netns exec NS python3 host_helper.py` (netns transport) or through SSH (a forced
command may run it: the operation then comes from SSH_ORIGINAL_COMMAND). Request and
answer are one JSON object each, on stdin and stdout.

Everything that must happen without a network round trip in the middle runs here
(with host_tables.py, installed beside it, for planning against a copy):
read the owned chains and sets, compare with what changegate approved and send one
`nft -f` batch under a host lock, and the commit-confirmed revert watchdog, which must
outlive the worker, the SSH connection and changegate's database.

Values are the lines nft prints inside a chain or set block, so what a reviewer sees
is what the kernel holds: a chain is its header (base chains) and its rules in order;
a set is its type/flags lines and one sorted `element X` line per element.
"""

from __future__ import annotations

import difflib
import fcntl
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time

NFT = os.environ.get("CHANGEGATE_NFT", "nft")
HANDLE = re.compile(r"^(.*?)\s*# handle (\d+)$")


class Refused(Exception):
    """The request cannot be done; `kind` tells changegate how to classify it."""

    def __init__(self, kind: str, message: str, **extra: object) -> None:
        super().__init__(message)
        self.kind, self.message, self.extra = kind, message, extra


def nft(args: list[str], stdin: str | None = None, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run([NFT, *args], input=stdin, check=False, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise Refused("config", "nft is not installed on the firewall host") from None
    if check and done.returncode != 0:
        raise Refused("nft", done.stderr.strip() or f"nft exited {done.returncode}")
    return done


def generation() -> int:
    """The kernel's ruleset generation id of this network namespace (NFT_MSG_GETGEN over
    netlink): +1 per committed transaction, unchanged by reads. nft does not print it."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
    try:
        payload = struct.pack("=BBH", socket.AF_UNSPEC, 0, 0)  # struct nfgenmsg
        msg_type = (10 << 8) | 16  # NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN
        sock.send(struct.pack("=IHHII", 16 + len(payload), msg_type, 1, 1, 0) + payload)  # NLM_F_REQUEST
        data = sock.recv(65536)
    finally:
        sock.close()
    length = struct.unpack_from("=I", data)[0]
    offset = 20
    while offset + 4 <= length:
        attr_len, attr_type = struct.unpack_from("=HH", data, offset)
        if attr_type & 0x7FFF == 1 and attr_len >= 8:  # NFTA_GEN_ID, big endian
            return struct.unpack_from(">I", data, offset + 4)[0]
        offset += (max(attr_len, 4) + 3) & ~3
    raise Refused("nft", "the kernel did not report a ruleset generation")


# --- reading ----------------------------------------------------------------------


def parse_blocks(text: str) -> dict[tuple[str, str], dict]:
    """{(key name, "chain"|"set"): {"lines", "handles", "handle"}} from nft's text output
    (`-a` adds the handles). The key name is "family table object"."""
    found: dict[tuple[str, str], dict] = {}
    table = current = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        match = re.match(r"^table (\S+) (\S+) \{", line)
        if match:
            table = f"{match.group(1)} {match.group(2)}"
            continue
        match = re.match(r"^(chain|set) (\S+) \{(?:\s*# handle (\d+))?$", line)
        if match and table and current is None:
            current = {"lines": [], "handles": [], "handle": int(match.group(3) or 0)}
            found[(f"{table} {match.group(2)}", match.group(1))] = current
            continue
        if current is None:
            continue
        if pending or line.startswith("elements = {"):
            pending += " " + line
            if line.endswith("}"):
                body = pending.strip()[len("elements = {"):-1]
                current["lines"].extend(f"element {e.strip()}" for e in body.split(",") if e.strip())
                pending = ""
            continue
        if line == "}":
            current = None
            continue
        handled = HANDLE.match(line)
        current["lines"].append(handled.group(1) if handled else line)
        current["handles"].append(int(handled.group(2)) if handled else None)
    for (_, kind), value in found.items():
        if kind == "set":  # elements are a set: sorted, after the type/flags lines
            head = [line for line in value["lines"] if not line.startswith("element ")]
            value["lines"] = head + sorted(line for line in value["lines"] if line.startswith("element "))
    return found


def read_key(name: str, kind: str) -> dict | None:
    family, table, obj = split_name(name)
    done = nft(["-a", "list", kind, family, table, obj], check=False)
    if done.returncode != 0:
        if "No such file or directory" in done.stderr:
            return None
        raise Refused("nft", done.stderr.strip())
    return parse_blocks(done.stdout).get((name, kind))


def split_name(name: str) -> tuple[str, str, str]:
    if len(name.split()) != 3:
        raise Refused("request", f"bad key name {name!r}")
    return tuple(name.split())  # type: ignore[return-value]


def read_keys(keys: list[list[str]]) -> list[dict | None]:
    return [read_key(name, kind) for name, kind in keys]


def lines_of(values: list[dict | None]) -> list[list[str] | None]:
    return [None if value is None else value["lines"] for value in values]


# --- batches addressed by handles ---------------------------------------------------


def is_header(line: str) -> bool:
    return line.startswith(("type ", "comment ", "flags "))


def split_chain(lines: list[str]) -> tuple[list[str], list[str]]:
    count = 0
    while count < len(lines) and is_header(lines[count]):
        count += 1
    return lines[:count], lines[count:]


def chain_batch(name: str, live: dict | None, after: list[str] | None) -> list[str]:
    family, table, chain = split_name(name)
    where = f"{family} {table} {chain}"
    if live is None:
        assert after is not None
        header, rules = split_chain(after)
        body = f" {{ {' '.join(header)} }}" if header else ""
        return [f"add chain {where}{body}"] + [f"add rule {where} {rule}" for rule in rules]
    handles = [h for h in live["handles"] if h is not None]
    if after is None:
        return [f"delete rule {where} handle {h}" for h in handles] + [
            f"delete chain {family} {table} handle {live['handle']}"]
    old_header, old_rules = split_chain(live["lines"])
    new_header, new_rules = split_chain(after)
    batch: list[str] = []
    if old_header != new_header:
        old_policy = [re.sub(r"policy \w+;", "", h) for h in old_header]
        if old_policy != [re.sub(r"policy \w+;", "", h) for h in new_header]:
            raise Refused("request", f"chain {where}: only the policy of a chain can change")
        policy = re.search(r"policy (\w+);", " ".join(new_header))
        batch.append(f"chain {where} {{ policy {policy.group(1) if policy else 'accept'}; }}")
    matcher = difflib.SequenceMatcher(a=old_rules, b=new_rules, autojunk=False)
    kept = set()
    for tag, i1, i2, _, _ in matcher.get_opcodes():
        if tag == "equal":
            kept.update(range(i1, i2))
    batch += [f"delete rule {where} handle {handles[i]}" for i in range(len(old_rules)) if i not in kept]
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("insert", "replace"):
            anchor = next((i for i in range(i2, len(old_rules)) if i in kept), None)
            for rule in new_rules[j1:j2]:
                # insert ... position H puts the rule just before H: in order, before the next kept rule.
                batch.append(f"insert rule {where} position {handles[anchor]} {rule}" if anchor is not None
                             else f"add rule {where} {rule}")
    return batch


def set_batch(name: str, live: dict | None, after: list[str] | None) -> list[str]:
    family, table, obj = split_name(name)
    if live is None or after is None:
        raise Refused("request", f"set {name}: sets are changed element by element, never created or deleted")
    old = [line for line in live["lines"] if not line.startswith("element ")]
    if old != [line for line in after if not line.startswith("element ")]:
        raise Refused("request", f"set {name}: only its elements can change")
    before_elements = {line[8:] for line in live["lines"] if line.startswith("element ")}
    after_elements = {line[8:] for line in after if line.startswith("element ")}
    batch = []
    # delete fails on a missing element and create on an existing one: the whole batch is refused.
    if before_elements - after_elements:
        batch.append(f"delete element {family} {table} {obj} {{ {', '.join(sorted(before_elements - after_elements))} }}")
    if after_elements - before_elements:
        batch.append(f"create element {family} {table} {obj} {{ {', '.join(sorted(after_elements - before_elements))} }}")
    return batch


def batch_for(steps: list[dict], live: list[dict | None], *, inverse: bool = False) -> str:
    commands: list[str] = []
    for step, value in zip(steps, live):
        target = step["before"] if inverse else step["after"]
        build = chain_batch if step["type"] == "chain" else set_batch
        commands += build(step["name"], value, target)
    return "\n".join(commands) + "\n"


# --- the lock, apply and the revert watchdog -------------------------------------------


class HostLock:
    """flock on the per-target state dir: changegate's applies, confirms and the revert
    watchdog on this host take it, so they never interleave (outside writers do not)."""

    def __init__(self, state_dir: str) -> None:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(state_dir, "lock")

    def __enter__(self) -> HostLock:  # noqa: PYI034 - Python 3.9 hosts have no typing.Self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def child_env() -> dict[str, str]:
    # A child's operation comes from its argv, never from the SSH client's words.
    env = {k: v for k, v in os.environ.items() if k != "SSH_ORIGINAL_COMMAND"}
    return {**env, "CHANGEGATE_NFT": NFT}


def write_json(path: str, data: object) -> None:
    write_text(path, json.dumps(data))


def write_text(path: str, text: str) -> None:
    """Atomically (rename): a reader never sees half a record."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def read_json(path: str) -> dict | None:
    try:
        with open(path) as source:
            return json.load(source)
    except FileNotFoundError:
        return None


def revert_dir(state_dir: str, revert_id: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{8,64}", revert_id):
        raise Refused("request", "bad revert id")
    return os.path.join(state_dir, "reverts", revert_id)


def arm(state_dir: str, revert_id: str, steps: list[dict], seconds: float) -> dict:
    """Write everything the watchdog needs, then start it detached (own session, no
    inherited descriptors), so it survives this process, the SSH session and the worker."""
    where = revert_dir(state_dir, revert_id)
    if os.path.isdir(where):  # the same plan armed again (a retry): keep the old record beside it
        os.replace(where, f"{where}.{int(time.time() * 1000)}")
    os.makedirs(where, mode=0o700)
    record = {"id": revert_id, "steps": steps, "deadline": time.time() + seconds, "armed_at": time.time()}
    write_json(os.path.join(where, "revert.json"), record)
    log = open(os.path.join(where, "watchdog.log"), "ab")  # noqa: SIM115 - handed to the child, closed below
    process = subprocess.Popen([sys.executable, "-I", "-S", os.path.realpath(__file__), "watchdog", state_dir, revert_id],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                               close_fds=True, env=child_env())
    log.close()
    write_json(os.path.join(where, "pid.json"), {"pid": process.pid})
    return {"id": revert_id, "deadline": record["deadline"], "pid": process.pid}


def watchdog(state_dir: str, revert_id: str) -> None:
    where = revert_dir(state_dir, revert_id)
    record = read_json(os.path.join(where, "revert.json"))
    assert record is not None
    while time.time() < record["deadline"]:
        time.sleep(min(record["deadline"] - time.time(), 1.0) + 0.001)
    with HostLock(state_dir):
        if read_json(os.path.join(where, "result.json")) is not None:
            return
        result = decide(record, os.path.exists(os.path.join(where, "confirmed")))
        result["at"] = time.time()
        write_json(os.path.join(where, "result.json"), result)


def decide(record: dict, confirmed: bool) -> dict:
    """At the deadline, under the lock: the revert fires only over exactly `after`."""
    if confirmed:
        return {"status": "confirmed", "detail": "confirmed before the deadline"}
    steps = record["steps"]
    live = read_keys([[s["name"], s["type"]] for s in steps])
    now = lines_of(live)
    if now == [s["before"] for s in steps]:
        return {"status": "not_needed", "detail": "live already equals before"}
    if now != [s["after"] for s in steps]:
        return {"status": "refused", "detail": "live is neither before nor after: someone changed it; not reverted",
                "live": now}
    generation_before = generation()
    done = nft(["-f", "-"], batch_for(steps, live, inverse=True), check=False)
    if done.returncode != 0:
        return {"status": "failed", "detail": done.stderr.strip()}
    return {"status": "reverted", "detail": "restored before", "generation": [generation_before, generation()]}


def op_apply(request: dict) -> dict:
    """Under the host lock: re-read, compare with `before`, arm the revert (if asked),
    one `nft -f` batch addressed by handles, read back."""
    steps = request["steps"]
    keys = [[s["name"], s["type"]] for s in steps]
    with HostLock(request["state_dir"]):
        read_at = generation()
        live = read_keys(keys)
        now = lines_of(live)
        if now == [s["after"] for s in steps]:
            return {"applied": False, "generation": generation(), "live": now}
        moved = [i for i, s in enumerate(steps) if now[i] != s["before"]]
        if moved:
            raise Refused("drift", "live no longer equals before", moved=moved, live=now)
        batch = batch_for(steps, live)
        revert = None
        if request.get("revert_seconds"):
            revert = arm(request["state_dir"], request["revert_id"], steps, float(request["revert_seconds"]))
        nft(["-f", "-"], batch)
        committed = generation()
        # One commit since the re-read, ours: live is `after` with no read-back. More than
        # one: an outside commit landed in the window; read back and report what is live.
        back = [s["after"] for s in steps] if committed == read_at + 1 else lines_of(read_keys(keys))
    return {"applied": True, "live": back, "generation": [read_at, committed], "revert": revert,
            "batch_lines": batch.count("\n")}


def op_confirm(request: dict) -> dict:
    where = revert_dir(request["state_dir"], request["revert_id"])
    with HostLock(request["state_dir"]):
        result = read_json(os.path.join(where, "result.json"))
        if result is not None:
            return result
        if read_json(os.path.join(where, "revert.json")) is None:
            raise Refused("request", "no revert armed with that id")
        with open(os.path.join(where, "confirmed"), "w") as marker:
            marker.write(str(time.time()))
    return {"status": "confirmed", "detail": "confirmed before the deadline"}


def op_revert_status(request: dict) -> dict:
    where = revert_dir(request["state_dir"], request["revert_id"])
    result = read_json(os.path.join(where, "result.json"))
    if result is not None:  # the watchdog's own record: it has finished
        return {**result, "final": True}
    record = read_json(os.path.join(where, "revert.json"))
    if record is None:
        raise Refused("request", "no revert armed with that id")
    confirmed = os.path.exists(os.path.join(where, "confirmed"))
    return {"status": "confirmed" if confirmed else "armed", "deadline": record["deadline"], "final": False}


# --- whole-table operations (plan against a copy, probe, dump, persist): host_tables.py ---


def tables_op(name: str) -> object:
    sys.modules.setdefault("host_helper", sys.modules[__name__])  # one Refused class, whoever runs us
    sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
    import host_tables

    return getattr(host_tables, name)


OPS = {"read": lambda r: {"values": lines_of(read_keys(r["keys"])), "generation": generation()},
       "generation": lambda r: {"generation": generation()}, "apply": op_apply, "confirm": op_confirm,
       "revert_status": op_revert_status, **{op: lambda r, op=op: tables_op(f"op_{op}")(r)
                                              for op in ("probe", "dump", "plan", "persist")}}


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[1] == "watchdog":
        watchdog(argv[2], argv[3])
        return 0
    # A forced command gets the client's words in SSH_ORIGINAL_COMMAND; only the op (last word) is
    # taken. `--state-dir DIR` in the forced command pins where state lives, whatever the client says.
    pinned = argv[argv.index("--state-dir") + 1] if "--state-dir" in argv[:-1] else None
    words = os.environ.get("SSH_ORIGINAL_COMMAND", "").split() or argv[1:]
    op = words[-1] if words else ""
    handler = OPS.get(op)
    try:
        if handler is None:
            raise Refused("request", f"unknown operation {op!r}")
        request = json.load(sys.stdin)
        if pinned and "state_dir" in request:
            request["state_dir"] = pinned
        answer = {"ok": True, "result": handler(request)}
    except Refused as exc:
        answer = {"ok": False, "error": exc.kind, "message": exc.message, **exc.extra}
    except Exception as exc:  # noqa: BLE001 - one JSON answer whatever happens
        answer = {"ok": False, "error": "internal", "message": f"helper error: {type(exc).__name__}: {exc}"}
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
