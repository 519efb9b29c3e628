"""The patch a proposal sends, built from the DNS flags (--upsert/--add/--remove/
--delete), the firewall flags (--append/--insert/--delete-rule/--add-element/
--delete-element/--policy) and --file, and the title derived from --reason (the
health checks are built in `checks`). The server parses the patch in the target's own
syntax: the CLI only writes lines, it validates nothing a server would."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import UsageError

TITLE_FROM_REASON_MAX = 80

# Kept in sync with the DNS kind's PATCH_SYNTAX (its presentation module) by a test; copied
# rather than imported so the CLI stays free of server code.
PATCH_SYNTAX = """\
One change per line; '#' starts a comment.
  = NAME TTL [IN] TYPE RDATA   upsert: the RRset becomes exactly the '=' lines given for NAME/TYPE
  + NAME [TTL] [IN] TYPE RDATA add one record (TTL needed when the RRset does not exist yet)
  - NAME [TTL] [IN] TYPE RDATA remove one record
  - NAME [IN] TYPE             delete the whole RRset
NAME is relative to the zone unless it ends in '.'; '@' is the apex."""

# Likewise kept in sync with the nftables kind's PATCH_SYNTAX by a test.
NFT_PATCH_SYNTAX = """One change per line ('#' starts a comment):
  inet changegate input: tcp dport 8443 accept        append a rule to a chain
  inet changegate input[0]: tcp dport 8443 accept     insert at that index (0 = first)
  -inet changegate input: tcp dport 8443 accept       delete the rule (as nft prints it)
  inet changegate input policy drop                   set a base chain's policy
  inet changegate partners_v4 += 192.0.2.10, 198.51.100.0/24   add set elements
  inet changegate partners_v4 -= 192.0.2.10                     delete set elements"""


def build_patch(args: argparse.Namespace) -> str:
    """Patch text from --upsert/--add/--remove/--delete/--file, in command-line order."""
    lines: list[str] = []
    for op, value in args.patch_parts or []:
        if op == "file":
            lines += _read_patch_file(value).splitlines()
            continue
        value = value.strip()
        if not value:
            raise UsageError(f"--{op} needs a record, e.g. --{op} {_EXAMPLES[op]!r}")
        if "\n" in value or "\r" in value:
            raise UsageError(f"--{op} takes one record; use --file for several lines")
        if op == "delete":
            words = value.split()
            if not (len(words) == 2 or (len(words) == 3 and words[1].upper() == "IN")):
                raise UsageError(f"--delete takes 'NAME TYPE' (the whole RRset), got {value!r}; "
                                 "use --remove 'NAME TYPE RDATA' to remove one record")
        lines.append(_FIREWALL_LINES[op](value) if op in _FIREWALL_LINES else f"{_PATCH_OPS[op]} {value}")
    return "\n".join(lines) + ("\n" if lines else "")


def _chain_rule(op: str, value: str, *, position: bool) -> str:
    """'FAMILY TABLE CHAIN: RULE' (with [N] after CHAIN for --insert), checked only
    for its shape: the rule itself is the target's nft to judge."""
    head, colon, rule = value.partition(":")
    words = head.split()
    if not colon or not rule.strip() or len(words) != 3 or ("[" in words[2]) != position:
        raise UsageError(f"--{op} takes {_EXAMPLES[op]!r}, got {value!r}")
    return value


def _set_elements(op: str, value: str) -> str:
    words = value.split(None, 3)
    if len(words) != 4:
        raise UsageError(f"--{op} takes {_EXAMPLES[op]!r}, got {value!r}")
    family, table, name, elements = words
    return f"{family} {table} {name} {'+=' if op == 'add-element' else '-='} {elements}"


def _policy(value: str) -> str:
    words = value.split()
    if len(words) != 4:
        raise UsageError(f"--policy takes {_EXAMPLES['policy']!r}, got {value!r}")
    return f"{' '.join(words[:3])} policy {words[3]}"


_PATCH_OPS = {"upsert": "=", "add": "+", "remove": "-", "delete": "-"}
_FIREWALL_LINES = {
    "append": lambda v: _chain_rule("append", v, position=False),
    "insert": lambda v: _chain_rule("insert", v, position=True),
    "delete-rule": lambda v: "-" + _chain_rule("delete-rule", v, position=False),
    "add-element": lambda v: _set_elements("add-element", v),
    "delete-element": lambda v: _set_elements("delete-element", v),
    "policy": _policy,
}
_EXAMPLES = {"upsert": "www 300 A 192.0.2.10", "add": "www 300 A 192.0.2.11",
             "remove": "www A 192.0.2.11", "delete": "old A",
             "append": "inet changegate input: tcp dport 8443 accept",
             "insert": "inet changegate input[0]: tcp dport 8443 accept",
             "delete-rule": "inet changegate input: tcp dport 8443 accept",
             "add-element": "inet changegate partners_v4 192.0.2.10, 198.51.100.0/24",
             "delete-element": "inet changegate partners_v4 192.0.2.10",
             "policy": "inet changegate input drop"}


def _read_patch_file(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read patch file {path}: {exc.strerror}") from None


def title_from_reason(reason: str) -> str:
    first = next((line.strip() for line in reason.splitlines() if line.strip()), "")
    if len(first) <= TITLE_FROM_REASON_MAX:
        return first
    return first[: TITLE_FROM_REASON_MAX - 3].rstrip() + "..."
