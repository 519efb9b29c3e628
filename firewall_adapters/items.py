"""Firewall change items: what an engineer writes, checked locally before the target's
own nft checks them against a copy (adapter.validate_items).

The local checks are the ones nft cannot do for us: the table must be owned by the
target, a rule must be one rule (no `;`, newline or `#`, which would smuggle more
commands into the batch text), and no hostname may appear (nft resolves names when it
loads a rule, so the kernel would hold whatever DNS said at that instant)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters import FieldError, RRKey

OPS = ("append", "insert", "delete", "set_chain", "delete_chain", "add_element", "delete_element", "policy")
CHAIN_OPS = frozenset({"append", "insert", "delete", "set_chain", "delete_chain", "policy"})
FIELDS = {
    "append": {"rule"}, "insert": {"rule", "position"}, "delete": {"rule"}, "set_chain": {"rules"},
    "delete_chain": set(), "policy": {"policy"}, "add_element": {"elements"}, "delete_element": {"elements"},
}
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
TABLE = re.compile(r"^(ip|ip6|inet|arp|bridge|netdev) [A-Za-z][A-Za-z0-9_\-]{0,63}$")
MAX_RULE = 4096
# A word after an address selector that is not an address, a set (@), a variable or a brace.
ADDRESS_WORD = re.compile(r"\b(?:saddr|daddr|addr)\s+(?:!=\s*)?([A-Za-z][^\s,{}]*)")
TOKEN = re.compile(r"[A-Za-z0-9_.:/\-]+")


@dataclass(frozen=True)
class NftItem:
    """A validated item; `data` is its stored form (item_json)."""

    op: str
    table: str
    name: str
    data: tuple[tuple[str, Any], ...]

    @property
    def key(self) -> RRKey:
        return RRKey(f"{self.table} {self.name}", "chain" if self.op in CHAIN_OPS else "set")

    def to_json(self) -> dict[str, Any]:
        return {key: (list(value) if isinstance(value, tuple) else value) for key, value in self.data}


def key_for(table: str, name: str, kind: str) -> RRKey:
    return RRKey(f"{table} {name}", kind)


def _is_address(text: str) -> bool:
    try:
        for part in text.split("-"):
            ipaddress.ip_network(part, strict=False)
    except ValueError:
        return False
    return True


def hostnames_in(text: str) -> list[str]:
    """Words nft would resolve through DNS: dotted names with letters, and any bare
    word where an address belongs (`ip saddr gateway`)."""
    unquoted = re.sub(r'"[^"]*"', '""', text)
    found = [token for token in TOKEN.findall(unquoted)
             if "." in token and re.search(r"[A-Za-z]", token) and not _is_address(token.strip("."))]
    found += [word for word in ADDRESS_WORD.findall(unquoted) if not _is_address(word)]
    return list(dict.fromkeys(found))


def _rule_error(rule: Any) -> str | None:
    if not isinstance(rule, str) or not rule.strip():
        return "a rule is required, as text"
    if len(rule) > MAX_RULE:
        return f"a rule is at most {MAX_RULE} characters"
    if any(ch in rule for ch in ";\n\r#"):
        return "one rule per item: no ';', '#' or line breaks"
    names = hostnames_in(rule)
    if names:
        return f"hostnames are refused in rules (nft resolves them at load time): {', '.join(names)}"
    return None


def _element_error(element: Any) -> str | None:
    if not isinstance(element, str) or not element.strip():
        return "elements must be non-empty text"
    if any(ch in element for ch in ";\n\r#{},"):
        return f"one element per entry, no ';', '#', braces or commas: {element!r}"
    if hostnames_in(element) or (re.match(r"^[A-Za-z][\w.\-]*\.[A-Za-z]", element) and not _is_address(element)):
        return f"hostnames are refused as elements (nft resolves them at load time): {element}"
    return None


def parse_item(index: int, item: Any, tables: Sequence[str]) -> tuple[NftItem | None, list[FieldError]]:
    """One raw item -> (NftItem, []) or (None, errors naming this index and the field)."""
    if not isinstance(item, Mapping):
        return None, [FieldError(index, "op", "each item must be an object")]
    op = item.get("op")
    if op not in OPS:
        return None, [FieldError(index, "op", f"op must be one of {', '.join(OPS)}")]
    errors: list[FieldError] = []
    bad = lambda field, message: errors.append(FieldError(index, field, message))
    object_field = "chain" if op in CHAIN_OPS else "set"
    for extra in sorted(set(item) - {"op", "table", object_field} - FIELDS[op]):
        bad(extra, f"not a field of a {op} item")
    table = " ".join(str(item.get("table", "")).split())
    if not TABLE.match(table):
        bad("table", "table must be 'family name', e.g. 'inet changegate'")
    elif table not in tables:
        bad("table", f"table {table} is not managed by this target (managed: {', '.join(tables)})")
    name = item.get(object_field)
    if not isinstance(name, str) or not NAME.match(name):
        bad(object_field, f"{object_field} must be a name (letters, digits, _ and -)")
    data: dict[str, Any] = {"op": op, "table": table, object_field: name}
    if "rule" in FIELDS[op]:
        message = _rule_error(item.get("rule"))
        if message:
            bad("rule", message)
        data["rule"] = str(item.get("rule", "")).strip()
    if op == "insert":
        position = item.get("position")
        if not isinstance(position, int) or isinstance(position, bool) or position < 0:
            bad("position", "position must be an index in the chain (0 = first rule)")
        data["position"] = position
    if op == "set_chain":
        rules = item.get("rules")
        if not isinstance(rules, list):
            bad("rules", "rules must be a list of rules (may be empty)")
            rules = []
        for number, rule in enumerate(rules):
            message = _rule_error(rule)
            if message:
                bad("rules", f"rule {number}: {message}")
        data["rules"] = tuple(str(rule).strip() for rule in rules)
    if op == "policy":
        if item.get("policy") not in ("accept", "drop"):
            bad("policy", "policy must be accept or drop")
        data["policy"] = item.get("policy")
    if op in ("add_element", "delete_element"):
        elements = item.get("elements")
        if not isinstance(elements, list) or not elements:
            bad("elements", "elements must be a non-empty list")
            elements = []
        for element in elements:
            message = _element_error(element)
            if message:
                bad("elements", message)
        data["elements"] = tuple(sorted({str(e).strip() for e in elements}))
    if errors:
        return None, errors
    return NftItem(op=op, table=table, name=name, data=tuple(data.items())), []
