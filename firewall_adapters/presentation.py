"""How a firewall plan reads to a reviewer: a diff per chain in rule order with
context lines (order decides verdicts), set elements as +/- lines, the risk flags
that need another approver, and the text patch form of items."""

from __future__ import annotations

import difflib
import re
from typing import Any

from adapters import FieldError, ItemValidationError, PatchItem, Plan, RRKey, RRValue

CONTEXT_LINES = 2
ESTABLISHED = re.compile(r"\bct state\b[^#]*\b(established|related)\b.*\baccept$")
MANAGEMENT_PORT = 22  # the kind's risk rules do not see the config; see the report
BULK_DELETE = 5

RISKS = {
    "fw_drop": "adds a drop or reject rule, or sets a chain's policy to drop",
    "fw_above_established": "places a rule above the established/related accept",
    "fw_management_port": "touches a rule matching the management (SSH) port",
    "fw_broad_accept": "adds an accept matching any source and any port",
    "fw_bulk_delete": f"deletes {BULK_DELETE} or more rules or set elements",
}


def value_lines(key: RRKey, value: RRValue | None) -> list[str]:
    return [] if value is None else list(value.rdatas)


def step_diff(key: RRKey, before: RRValue | None, after: RRValue | None) -> list[str]:
    old, new = value_lines(key, before), value_lines(key, after)
    state = " (new)" if before is None else " (deleted)" if after is None else ""
    out = [f"@@ {key.rdtype} {key.name}{state} @@"]
    hunks = list(difflib.unified_diff(old, new, lineterm="", n=CONTEXT_LINES))[3:]
    out += [line if not line.startswith("@@") else "  ..." for line in hunks]
    return out


def unified_diff(plan: Plan) -> str:
    out = [f"--- {plan.zone} (live)", f"+++ {plan.zone} (planned)"]
    for step in plan.steps:
        out += step_diff(step.key, step.before, step.after)
    return "\n".join(out) + "\n"


def _rules(value: RRValue | None) -> list[str]:
    return [line for line in value_lines(RRKey("", "chain"), value)
            if not line.startswith(("type ", "flags ", "comment "))]


def _added(step: Any) -> list[tuple[int, str]]:
    before, after = _rules(step.before), _rules(step.after)
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    return [(j, after[j]) for tag, _, _, j1, j2 in matcher.get_opcodes() if tag in ("insert", "replace")
            for j in range(j1, j2)]


def _removed(step: Any) -> list[str]:
    before, after = value_lines(step.key, step.before), value_lines(step.key, step.after)
    return list(set(before) - set(after)) if step.key.rdtype == "set" else [
        before[i] for tag, i1, i2, _, _ in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes()
        if tag in ("delete", "replace") for i in range(i1, i2)]


def _management(rule: str, port: int) -> bool:
    match = re.search(r"\bdport\s+(\{[^}]*\}|\S+)", rule)
    if not match:
        return False
    return any(str(port) == part or (part.count("-") == 1 and part.split("-")[0].isdigit() and part.split("-")[1].isdigit()
               and int(part.split("-")[0]) <= port <= int(part.split("-")[1]))
               for part in re.split(r"[\s,{}]+", match.group(1)) if part)


def risk_flags(plan: Plan, *, item_count: int | None = None, management_port: int = MANAGEMENT_PORT) -> list[str]:
    flags: set[str] = set()
    removed = 0
    for step in plan.steps:
        removed += len(_removed(step))
        if step.key.rdtype != "chain":
            continue
        after = _rules(step.after)
        header = " ".join(value_lines(step.key, step.after)[:1])
        if "policy drop;" in header and "policy drop;" not in " ".join(value_lines(step.key, step.before)[:1]):
            flags.add("fw_drop")
        established = [i for i, rule in enumerate(after) if ESTABLISHED.search(rule)]
        for index, rule in _added(step):
            if re.search(r"\b(drop|reject)\b", rule):
                flags.add("fw_drop")
            if established and index < established[0]:
                flags.add("fw_above_established")
            if rule.endswith("accept") and not re.search(r"\b(saddr|daddr|dport|sport|iif|iifname|ct state)\b", rule):
                flags.add("fw_broad_accept")
        if any(_management(rule, management_port) for rule in
               [rule for _, rule in _added(step)] + [r for r in _removed(step) if not r.startswith("type ")]):
            flags.add("fw_management_port")
    if removed >= BULK_DELETE:
        flags.add("fw_bulk_delete")
    return sorted(flags)


PATCH_SYNTAX = """One change per line ('#' starts a comment):
  inet changegate input: tcp dport 8443 accept        append a rule to a chain
  inet changegate input[0]: tcp dport 8443 accept     insert at that index (0 = first)
  -inet changegate input: tcp dport 8443 accept       delete the rule (as nft prints it)
  inet changegate input policy drop                   set a base chain's policy
  inet changegate partners_v4 += 192.0.2.10, 198.51.100.0/24   add set elements
  inet changegate partners_v4 -= 192.0.2.10                     delete set elements"""

RULE_LINE = re.compile(r"^(?P<minus>-)?(?P<family>\S+) (?P<table>\S+) (?P<chain>[\w\-]+)(\[(?P<pos>\d+)\])?:\s*(?P<rule>.+)$")
POLICY_LINE = re.compile(r"^(?P<family>\S+) (?P<table>\S+) (?P<chain>[\w\-]+) policy (?P<policy>\w+)$")
SET_LINE = re.compile(r"^(?P<family>\S+) (?P<table>\S+) (?P<set>[\w\-]+) (?P<verb>\+=|-=)\s*(?P<elements>.+)$")


def parse_patch(text: str) -> list[PatchItem]:
    """Patch lines -> raw items (validated later like JSON items)."""
    if not isinstance(text, str):
        raise ItemValidationError([FieldError(None, "patch", "patch must be text")])
    found: list[PatchItem] = []
    errors: list[FieldError] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if match := SET_LINE.match(line):
            op = "add_element" if match["verb"] == "+=" else "delete_element"
            found.append(PatchItem(number, {"op": op, "table": f"{match['family']} {match['table']}",
                                            "set": match["set"], "elements": [
                                                e.strip() for e in match["elements"].split(",") if e.strip()]}))
        elif match := POLICY_LINE.match(line):
            found.append(PatchItem(number, {"op": "policy", "table": f"{match['family']} {match['table']}",
                                            "chain": match["chain"], "policy": match["policy"]}))
        elif match := RULE_LINE.match(line):
            item: dict[str, Any] = {"table": f"{match['family']} {match['table']}", "chain": match["chain"],
                                    "rule": match["rule"].strip()}
            if match["minus"]:
                item["op"] = "delete"
            elif match["pos"] is not None:
                item.update(op="insert", position=int(match["pos"]))
            else:
                item["op"] = "append"
            found.append(PatchItem(number, item))
        else:
            errors.append(FieldError(None, "patch", f"line {number}: not a firewall patch line (see the syntax)"))
    if errors:
        raise ItemValidationError(errors)
    return found
