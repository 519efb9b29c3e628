"""The nftables adapter: keyed state is the managed chains and named sets of the tables
changegate owns on a firewall host; everything runs through the host-side helper.

Keys: ("family table chain", "chain") and ("family table set", "set"). Values: ttl 0 and
the lines nft prints inside the block, in order for a chain (its header, then its
rules: order decides verdicts), sorted `element X` lines after the type/flags for a set.

What apply guarantees (handles mode, the only one shipped; see FIREWALL.md): under the
host lock the helper reads the generation, re-reads the keys and compares them with
`before`, then sends one `nft -f` batch whose deletes and positions name rule handles
(never a flush). An outside delete between the re-read and the commit fails the whole
batch (nothing changes: DriftError). An outside add or in-place replace in that window
is not prevented, but it is detected right after: the generation moved by more than one,
so the helper reads back and the result says the read-back differs; the outside rule
survives (verify then fails and the rollback, conditional on `after`, refuses to
clobber it). When the generation moved by exactly one, the commit was the only one
since the re-read and live is exactly `after` without a read-back. Changes made by
others before the re-read are never overwritten: DriftError.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
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
    TargetReverted,
    TransientError,
    VerifyReport,
)

from .config import key_file_outside, normalize_config
from .items import NftItem, parse_item
from .transport import HelperRefused, NetnsTransport, SshTransport, Transport


def value_of(lines: list[str] | None) -> RRValue | None:
    return None if lines is None else RRValue(0, tuple(lines))


def lines_of(value: RRValue | None) -> list[str] | None:
    return None if value is None else list(value.rdatas)




class NftAdapter(Adapter):
    """One firewall host's owned tables, reached over `netns` or `ssh`."""

    def __init__(self, config: Mapping[str, Any], *, key_dir: str | os.PathLike[str]) -> None:
        self.config = dict(config)
        self.tables: list[str] = list(config["tables"])
        self.zone = ", ".join(self.tables)
        self.state_dir: str = config["state_dir"]
        self.revert_seconds: int = int(config.get("revert_seconds", 0))
        self.last_revert: dict[str, Any] | None = None
        timeout = float(config.get("timeout", 30))
        if config.get("transport", "netns") == "ssh":
            if key_file_outside(config["ssh_key_file"], key_dir):  # a config that skipped validate_config
                raise ConfigError(f"ssh_key_file must be a file inside the key directory {os.fspath(key_dir)}")
            self.transport: Transport = SshTransport(
                host=config["ssh_host"], port=int(config["ssh_port"]), user=config["ssh_user"],
                key_file=config["ssh_key_file"], known_hosts=config["known_hosts_file"], helper=config["helper"],
                timeout=timeout)
        else:
            self.transport = NetnsTransport(config["netns"], timeout=timeout)

    def __repr__(self) -> str:
        return f"NftAdapter({self.transport.label!r}, {self.zone!r})"

    @classmethod
    def validate_config(cls, config: Mapping[str, Any], *, key_dir: str | os.PathLike[str]) -> dict[str, Any]:
        return normalize_config(config, key_dir=key_dir)

    def _call(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.transport.call(op, request)
        except HelperRefused as exc:
            raise self._refused(exc) from None

    def _refused(self, exc: HelperRefused) -> Exception:
        if exc.kind == "transient":
            return TransientError(f"{self.transport.label}: {exc.message}")
        return ConfigError(f"{self.transport.label}: {exc.message}")

    def check_reachable(self, *, prepare: bool = False) -> int:
        """The host runs the helper and nft, and every owned table exists (created empty
        when `prepare`); returns the ruleset generation id."""
        result = self._call("probe", {"tables": self.tables, "create": prepare})
        if result["missing"]:
            raise ConfigError(f"{self.transport.label}: table(s) {', '.join(result['missing'])} do not exist")
        return int(result["generation"])

    def version(self) -> int | None:
        return self.generation()

    def generation(self) -> int:
        """The kernel's ruleset generation (cheap: no ruleset read; in-process for a netns
        target): it moves on every commit in the namespace, changegate's own included,
        so an out-of-band poll reads the tables only when it moved."""
        if isinstance(self.transport, NetnsTransport):
            if not os.path.exists(f"/run/netns/{self.transport.netns}"):
                raise ConfigError(f"{self.transport.label}: no network namespace of that name on this machine")
            fast = self.transport.generation()
            if fast is not None:
                return fast
        return int(self._call("generation", {})["generation"])

    def validate_items(self, items: Sequence[Mapping[str, Any]], *, options: Options | None = None) -> list[Any]:
        """Local checks first (owned tables, one rule per item, no hostnames), then the
        target's own nft applies the items to a copy of the owned tables in a
        throwaway namespace: what it refuses is named by item index and field."""
        if not isinstance(items, list) or not items:
            raise ItemValidationError([FieldError(None, "items", "give at least one item")])
        parsed: list[NftItem] = []
        errors: list[FieldError] = []
        for index, raw in enumerate(items):
            item, item_errors = parse_item(index, raw, self.tables)
            errors += item_errors
            if item is not None:
                parsed.append(item)
        if errors:
            raise ItemValidationError(errors)
        self._sandbox(parsed)
        return parsed

    def _sandbox(self, items: Sequence[NftItem]) -> tuple[list[RRKey], dict[str, Any]]:
        keys = list(dict.fromkeys(item.key for item in items))
        request = {"keys": [list(key) for key in keys], "items": [item.to_json() for item in items],
                   "tables": sorted({item.table for item in items})}
        try:
            return keys, self.transport.call("plan", request)
        except HelperRefused as exc:
            if exc.kind == "item":
                index = int(exc.extra.get("index", 0))
                raise ItemValidationError([FieldError(index, str(exc.extra.get("field", "rule")),
                                                      exc.message)]) from None
            raise ConfigError(f"{self.transport.label}: {exc.message}") from None

    def read(self, keys: Iterable[RRKey]) -> dict[RRKey, RRValue | None]:
        wanted = list(keys)
        values = self._call("read", {"keys": [list(key) for key in wanted]})["values"]
        return {key: value_of(lines) for key, lines in zip(wanted, values)}

    def read_zone(self) -> MappingSnapshot:
        result = self._call("dump", {"tables": self.tables})
        values = {RRKey(*text.split("\t")): RRValue(0, tuple(lines)) for text, lines in result["values"].items()}
        return MappingSnapshot(self.zone, int(result["generation"]), values)

    def plan(self, items: Sequence[Any], *, options: Options | None = None) -> Plan:
        """`before` is read live; `after` is what nft prints after applying the items
        to a copy of the owned tables. Keys whose value does not change are left out."""
        keys, result = self._sandbox(items)
        steps = tuple(Step(key, value_of(before), value_of(after))
                      for key, before, after in zip(keys, result["before"], result["after"]) if before != after)
        return Plan(zone=self.zone, steps=steps)

    def apply(self, plan: Plan) -> ApplyResult:
        """One nft transaction, conditional on `before`, armed with the host-side revert
        when the config asks for one (revert_seconds > 0). DriftError when live moved."""
        return self._apply(plan, revert=self.revert_seconds > 0)

    def rollback(self, plan: Plan) -> ApplyResult:
        """The inverse plan, conditional on `after`; never armed (a revert of a rollback
        would re-apply the change). The boot configuration follows, so a reboot does
        not resurrect the rolled-back change."""
        result = self._apply(plan.inverse(), revert=False)
        self.persist()
        return result

    def confirm(self, plan: Plan) -> dict[str, Any] | None:
        """After the bake: disarm the revert armed for `plan` (if the config arms one),
        then write the boot configuration. TargetReverted when the watchdog's deadline
        came first and it put `before` back; ConfigError when it found the tables in
        neither state and refused (a human must look)."""
        account: dict[str, Any] = {}
        if self.revert_seconds > 0:
            record = self.confirm_revert(revert_id(plan))
            status = record.get("status")
            if status == "reverted":
                raise TargetReverted(f"{self.transport.label}: the host reverted the change itself: "
                                     f"its confirmation deadline ({self.revert_seconds}s) passed first")
            if status != "confirmed":
                raise ConfigError(f"{self.transport.label}: the revert watchdog ended {status}: "
                                  f"{record.get('detail', 'see its record on the host')}")
            account["revert"] = {"id": revert_id(plan), "status": status}
        account["persisted"] = self.persist().get("path", True)
        return account

    def reverted(self, plan: Plan) -> str | None:
        """The watchdog's record for `plan`'s revert, when it fired; None when it did not
        (yet), or when no revert was ever armed for `plan` (asked by a worker taking over
        an attempt whose send may never have happened)."""
        if self.revert_seconds <= 0:
            return None
        try:
            record = self.transport.call("revert_status", {"state_dir": self.state_dir, "revert_id": revert_id(plan)})
        except HelperRefused as exc:
            if exc.kind == "request":  # nothing armed: a worker that died before its send reached the host
                return None
            raise self._refused(exc) from None
        if record.get("status") != "reverted":
            return None
        at = record.get("at")
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)) if isinstance(at, int | float) else "its deadline"
        return (f"{self.transport.label}: the host reverted the change itself at {when}: nobody confirmed it in "
                "time (the worker or its connection to the host was lost)")

    def _apply(self, plan: Plan, *, revert: bool) -> ApplyResult:
        if plan.is_empty:
            return ApplyResult(applied=False, rcode="OK", detail="empty plan")
        steps = [{"name": s.key.name, "type": s.key.rdtype, "before": lines_of(s.before), "after": lines_of(s.after)}
                 for s in plan.steps]
        request: dict[str, Any] = {"state_dir": self.state_dir, "steps": steps}
        if revert:
            request.update(revert_seconds=self.revert_seconds, revert_id=revert_id(plan))
        try:
            result = self.transport.call("apply", request)
        except HelperRefused as exc:
            raise self._apply_error(plan, exc) from None
        if not result["applied"]:
            return ApplyResult(applied=False, rcode="OK", detail="already live", serial=result["generation"])
        self.last_revert = result.get("revert")
        low, high = result["generation"]
        detail = f"{len(plan.steps)} keys in one nft transaction ({result['batch_lines']} commands)"
        if result["live"] != [step["after"] for step in steps] or high - low > 1:
            # An outside add/replace landed inside the window: not prevented in handles
            # mode, reported here; verify will fail and the rollback refuses to clobber it.
            detail += "; WARNING: the read-back differs from the plan (an outside commit in the apply window)"
        if self.last_revert:
            detail += f"; revert {self.last_revert['id']} armed"
        return ApplyResult(applied=True, rcode="OK", detail=detail, serial=high)

    def _apply_error(self, plan: Plan, exc: HelperRefused) -> Exception:
        if exc.kind == "drift":
            moved = [plan.steps[i].key for i in exc.extra["moved"]]
            live = {plan.steps[i].key: value_of(exc.extra["live"][i]) for i in exc.extra["moved"]}
            return DriftError(f"{len(moved)} chain(s)/set(s) moved since the plan was read", keys=moved, live=live)
        if exc.kind == "nft":
            # A handle that vanished between the re-read and the commit (an outside delete)
            # fails the whole batch: nothing changed. Tell drift from a real nft refusal.
            live = self.read(plan.keys())
            moved = [step.key for step in plan.steps if live[step.key] != step.before]
            if moved:
                return DriftError("the ruleset moved during the apply; nothing was changed", keys=moved,
                                  live={key: live[key] for key in moved})
        if exc.kind == "transient":
            return TransientError(f"{self.transport.label}: {exc.message}")
        return ConfigError(f"{self.transport.label}: nft refused the change: {exc.message}")

    def confirm_revert(self, revert: str) -> dict[str, Any]:
        """Disarm the armed revert (after the bake passed). Returns the watchdog's record:
        status "confirmed", or what it already did if the deadline passed first."""
        return self._call("confirm", {"state_dir": self.state_dir, "revert_id": revert})

    def revert_status(self, revert: str) -> dict[str, Any]:
        """What the watchdog recorded: armed, confirmed, reverted, not_needed, refused, failed."""
        return self._call("revert_status", {"state_dir": self.state_dir, "revert_id": revert})

    def persist(self) -> dict[str, Any]:
        """Write the owned tables as live now to `<state_dir>/ruleset.nft` on the host, the
        file its boot configuration includes (after the bake passed, and after a rollback)."""
        return self._call("persist", {"state_dir": self.state_dir, "tables": self.tables})

    def verify(self, plan: Plan) -> VerifyReport:
        live = self.read(plan.keys())
        return VerifyReport(tuple(ServerCheck(server=self.transport.label, key=step.key,
                                              ok=live[step.key] == step.after, answer=live[step.key])
                                  for step in plan.steps))


def revert_id(plan: Plan) -> str:
    """The revert's name on the host: the plan's fingerprint, so the pipeline can confirm
    (or read back) the revert of an approved plan knowing nothing else."""
    return plan.fingerprint[:32]
