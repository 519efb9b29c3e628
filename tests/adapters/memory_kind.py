"""A second target kind that lives in this process: keyed values in a dict, guarded
by a token read from a file (the secret). It exists to prove that the registry,
the contract suite and the generic services work for a kind that is not DNS; it is
registered only inside the tests that use it (`changes.kinds.REGISTRY.registered`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters import (
    Adapter,
    ApplyResult,
    ConfigError,
    DriftError,
    FieldError,
    ItemValidationError,
    MappingSnapshot,
    Options,
    Plan,
    RRKey,
    RRValue,
    ServerCheck,
    Step,
    TargetKind,
    VerifyReport,
)

# store name -> (token, {key: value}); what a test changes "outside" changegate.
STORES: dict[str, tuple[str, dict[RRKey, RRValue]]] = {}
SERIALS: dict[str, int] = {}


def store_create(name: str, token: str, values: Mapping[RRKey, RRValue] | None = None) -> None:
    STORES[name] = (token, dict(values or {}))
    SERIALS[name] = 1


def store_set(name: str, key: RRKey, value: RRValue | None) -> None:
    data = STORES[name][1]
    if value is None:
        data.pop(key, None)
    else:
        data[key] = value
    SERIALS[name] += 1


@dataclass(frozen=True)
class MemoryItem:
    op: str
    key: RRKey
    value: RRValue | None




class MemoryAdapter(Adapter):
    def __init__(self, config: Mapping[str, Any], *, key_dir: str | os.PathLike[str]) -> None:
        self.zone = config["store"]
        self._token_file = _inside(config["token_file"], key_dir)
        self._token = self._token_file.read_text().strip() if self._token_file.is_file() else None

    def __repr__(self) -> str:
        return f"MemoryAdapter({self.zone!r})"

    @classmethod
    def validate_config(cls, config: Mapping[str, Any], *, key_dir: str | os.PathLike[str]) -> dict[str, Any]:
        errors = []
        if not isinstance(config, Mapping):
            raise ItemValidationError([FieldError(None, "config", "must be an object")])
        for extra in sorted(set(config) - {"store", "token_file"}):
            errors.append(FieldError(None, extra, "unknown field"))
        if not isinstance(config.get("store"), str) or not config["store"]:
            errors.append(FieldError(None, "store", "store is required"))
        token_file = config.get("token_file")
        if not isinstance(token_file, str) or not token_file:
            errors.append(FieldError(None, "token_file", "token_file is required"))
        else:
            try:
                _inside(token_file, key_dir)
            except ConfigError as exc:
                errors.append(FieldError(None, "token_file", exc.message))
        if errors:
            raise ItemValidationError(errors)
        return {"store": config["store"], "token_file": token_file}

    def _data(self) -> dict[RRKey, RRValue]:
        token, data = STORES.get(self.zone, (None, None))
        if data is None:
            raise ConfigError(f"store {self.zone} does not exist")
        if self._token is None or self._token != token:
            raise ConfigError(f"store {self.zone} refused the token in {self._token_file.name}")
        return data

    def check_reachable(self, *, prepare: bool = False) -> int:
        self._data()
        return SERIALS[self.zone]

    def validate_items(self, items: Sequence[Mapping[str, Any]], *, options: Options | None = None) -> list[Any]:
        errors: list[FieldError] = []
        parsed: list[MemoryItem] = []
        if not isinstance(items, list) or not items:
            raise ItemValidationError([FieldError(None, "items", "give at least one item")])
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                errors.append(FieldError(index, "op", "each item must be an object"))
                continue
            op, name, rdtype = item.get("op"), item.get("name"), item.get("type")
            if op not in ("upsert", "delete"):
                errors.append(FieldError(index, "op", "op must be upsert or delete"))
            if not isinstance(name, str) or not name:
                errors.append(FieldError(index, "name", "name is required"))
            if not isinstance(rdtype, str) or not rdtype:
                errors.append(FieldError(index, "type", "type is required"))
            value = None
            if op == "upsert":
                ttl, records = item.get("ttl", 0), item.get("records")
                if not isinstance(records, list) or not records or not all(isinstance(r, str) for r in records):
                    errors.append(FieldError(index, "records", "records must be a list of text"))
                else:
                    value = RRValue(int(ttl), tuple(sorted(set(records))))
            parsed.append(MemoryItem(str(op), RRKey(str(name), str(rdtype)), value))
        if errors:
            raise ItemValidationError(errors)
        return parsed

    def read(self, keys: Iterable[RRKey]) -> dict[RRKey, RRValue | None]:
        data = self._data()
        return {key: data.get(key) for key in keys}

    def read_zone(self) -> MappingSnapshot:
        return MappingSnapshot(self.zone, SERIALS[self.zone], self._data())

    def plan(self, items: Sequence[Any], *, options: Options | None = None) -> Plan:
        live = self.read([item.key for item in items])
        steps = tuple(Step(item.key, live[item.key], item.value) for item in items if live[item.key] != item.value)
        return Plan(zone=self.zone, steps=steps)

    def apply(self, plan: Plan) -> ApplyResult:
        data = self._data()
        if all(data.get(step.key) == step.after for step in plan.steps):
            return ApplyResult(applied=False, rcode="NOERROR", detail="already live", serial=SERIALS[self.zone])
        moved = [step.key for step in plan.steps if data.get(step.key) != step.before]
        moved += [guard.key for guard in plan.guards if data.get(guard.key) != guard.value]
        if moved:
            raise DriftError(f"{len(moved)} keys moved since the plan was read", keys=moved,
                             live={key: data.get(key) for key in moved})
        for step in plan.steps:
            store_set(self.zone, step.key, step.after)
        return ApplyResult(applied=True, rcode="NOERROR", detail=f"{len(plan.steps)} steps",
                           serial=SERIALS[self.zone])

    def verify(self, plan: Plan) -> VerifyReport:
        data = self._data()
        return VerifyReport(tuple(ServerCheck(server="memory", key=step.key, ok=data.get(step.key) == step.after,
                                              answer=data.get(step.key)) for step in plan.steps))


def _inside(path: str, key_dir: str | os.PathLike[str]) -> Path:
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(Path(key_dir).resolve()):
        raise ConfigError("token_file must lie inside the key directory")
    return resolved


def _item_json(item: MemoryItem) -> dict[str, Any]:
    data: dict[str, Any] = {"op": item.op, "name": item.key.name, "type": item.key.rdtype}
    if item.value is not None:
        data.update(ttl=item.value.ttl, records=list(item.value.rdatas))
    return data


def _value_lines(key: RRKey, value: RRValue | None) -> list[str]:
    return [] if value is None else [f"{key.name} {key.rdtype} = {text}" for text in value.rdatas]


def _diff(plan: Plan) -> str:
    out = [f"--- {plan.zone} (live)", f"+++ {plan.zone} (planned)"]
    for step in plan.steps:
        out += ["-" + line for line in _value_lines(step.key, step.before)]
        out += ["+" + line for line in _value_lines(step.key, step.after)]
    return "\n".join(out) + "\n"


def _rollback_items(plan: Plan) -> list[dict[str, Any]]:
    return [
        {"op": "delete", "name": step.key.name, "type": step.key.rdtype} if step.before is None else
        {"op": "upsert", "name": step.key.name, "type": step.key.rdtype, "ttl": step.before.ttl,
         "records": list(step.before.rdatas)}
        for step in plan.steps
    ]


def _no_patch(text: str) -> list[Any]:
    raise ItemValidationError([FieldError(None, "patch", "the memory kind takes items only")])


MEMORY = TargetKind(
    name="memory",
    label="in-memory test store",
    adapter_class=MemoryAdapter,
    secret_fields=frozenset({"token_file"}),
    item_ops=("upsert", "delete"),
    patch_syntax="(the memory kind takes items only)",
    parse_patch=_no_patch,
    item_json=_item_json,
    parse_key=lambda config, name, rdtype: (RRKey(str(name), str(rdtype)), []),
    value_lines=_value_lines,
    diff=_diff,
    risks={"memory_wipe": "deletes every key of the store"},
    risk_flags=lambda plan, *, item_count, config=None: ["memory_wipe"] if item_count and sum(
        step.after is None for step in plan.steps) >= item_count else [],
    rollback_items=_rollback_items,
)
