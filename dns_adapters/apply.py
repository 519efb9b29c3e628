"""Apply a plan with one signed UPDATE and prove that it landed.

A NOERROR answer is not proof: RFC 2136 lets a server silently ignore parts of an
update (section 3.4.2), and servers disagree on details (issue 12). So after every
UPDATE the plan's keys are read back on the primary; anything but `after` is a
failed apply. The keys that did change are put back to `before` at once, by a
second UPDATE conditional on the values the read-back saw (so nothing written by
somebody else in between is clobbered), and `PartialApplyError` says which keys
did not land and whether the restore worked. Rollback is the inverse plan and
gets the same treatment.

Answers are classified once, here:
* prerequisite failures (NXRRSET, YXRRSET, ...) -> drift, or "already applied";
* NOTAUTH/REFUSED without a TSIG record -> ConfigError naming the key (never its secret);
* a signed REFUSED -> a probe: an UPDATE with the same key that changes nothing. If
  the server takes the probe, the refusal was about the data (BIND refuses an MX
  whose in-zone target has no address) -> DataRefusedError naming the suspect
  records; if not, the key may not update the zone -> ConfigError.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.tsig
import dns.update

from adapters.errors import DataRefusedError, PartialApplyError

from .base import (
    ApplyResult,
    ConfigError,
    FieldError,
    ItemValidationError,
    Plan,
    RRKey,
    RRValue,
    Step,
    TransientError,
)
from .connection import UnsignedRefusal
from .review_warnings import target_problems
from .update import MAX_MESSAGE, build_update, needs_exact_reread, wire_size

# Prerequisite failures (RFC 2136 section 3.2): the zone is not what the plan read.
PREREQ_RCODES = {dns.rcode.NXRRSET, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN, dns.rcode.YXDOMAIN}
CONFIG_RCODES = {dns.rcode.REFUSED, dns.rcode.NOTAUTH, dns.rcode.NOTZONE, dns.rcode.NOTIMP, dns.rcode.FORMERR}


class UpdateAdapter(Protocol):
    """The adapter as apply sees it (`rfc2136.RFC2136Adapter` is the one): its zone,
    key, reads, and one-UPDATE exchange. A protocol rather than the class, so that
    imports point one way, rfc2136 -> apply, with no circle (tests/test_layers.py)."""

    zone: str
    origin: dns.name.Name
    _key: dns.tsig.Key
    _keyring: dict[dns.name.Name, dns.tsig.Key]

    def read(self, keys: Iterable[RRKey]) -> dict[RRKey, RRValue | None]: ...

    def _send_update(self, update: dns.update.UpdateMessage) -> dns.message.Message: ...

    def _where(self, address: tuple[str, int] | None = None) -> str: ...

    def _resolve_prerequisite_failure(self, plan: Plan, rcode_text: str) -> ApplyResult: ...

    def _resolve_ambiguous(self, plan: Plan, *, reason: str) -> ApplyResult: ...


def size_error(plan: Plan, size: int) -> ItemValidationError:
    return ItemValidationError([FieldError(None, "items", (
        f"this change needs an UPDATE message of {size:,} bytes (measured, TSIG included); one DNS message "
        f"holds at most {MAX_MESSAGE:,} bytes and a change is applied as one message: split it "
        f"({len(plan.steps)} RRsets)"))])


def check_size(adapter: UpdateAdapter, plan: Plan) -> None:
    """Refuse (at plan time) a plan whose UPDATE, or whose rollback's, cannot be sent."""
    for candidate in (plan, plan.inverse()):
        size = wire_size(build_update(candidate, origin=adapter.origin, key=adapter._key))
        if size > MAX_MESSAGE:
            raise size_error(plan, size)


def apply_plan(adapter: UpdateAdapter, plan: Plan) -> ApplyResult:
    if plan.zone != adapter.origin.to_text():
        raise ConfigError(f"plan is for zone {plan.zone}, this target is {adapter.zone}")
    if plan.is_empty:
        return ApplyResult(applied=False, rcode="NOERROR", detail="empty plan: nothing to do")
    update = build_update(plan, origin=adapter.origin, key=adapter._key)
    size = wire_size(update)
    if size > MAX_MESSAGE:
        raise size_error(plan, size)
    exact = [s.key for s in plan.steps if needs_exact_reread(s.key.rdtype, s.before)]
    if exact:
        live = adapter.read(exact)
        if any(live.get(s.key) != s.before for s in plan.steps if s.key in live):
            return adapter._resolve_prerequisite_failure(plan, "exact re-read before sending")
    started = time.perf_counter()
    response, failure = send(adapter, update)
    if response is None:
        return adapter._resolve_ambiguous(plan, reason=failure)
    rcode = response.rcode()
    rcode_text = dns.rcode.to_text(rcode)
    if rcode == dns.rcode.NOERROR:
        return confirm(adapter, plan, started)
    if rcode in PREREQ_RCODES:
        return adapter._resolve_prerequisite_failure(plan, rcode_text)
    if rcode == dns.rcode.REFUSED:
        raise classify_refusal(adapter, plan)
    if rcode in CONFIG_RCODES:
        raise ConfigError(f"{adapter._where()} refused the update for {adapter.zone}: {rcode_text}")
    return adapter._resolve_ambiguous(plan, reason=f"server answered {rcode_text}")


def send(adapter: UpdateAdapter, update: dns.update.UpdateMessage) -> tuple[dns.message.Message | None, str]:
    """Send one UPDATE: (response, "") or (None, why) when the outcome is unknown
    (the zone itself will tell)."""
    try:
        return adapter._send_update(update), ""
    except UnsignedRefusal as exc:
        raise key_error(adapter, exc.rcode) from None
    except dns.tsig.PeerError as exc:
        reason = type(exc).__name__.replace("Peer", "").upper()
        raise ConfigError(f"{adapter._where()} rejected the TSIG key {adapter._key.name} ({reason})") from None
    except dns.tsig.BadSignature:
        raise ConfigError(f"{adapter._where()}: update response signature does not verify") from None
    except (OSError, EOFError, dns.exception.DNSException) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def key_error(adapter: UpdateAdapter, rcode: dns.rcode.Rcode) -> ConfigError:
    return ConfigError(
        f"{adapter._where()} answered {dns.rcode.to_text(rcode)} without a TSIG record for zone {adapter.zone}: "
        f"it does not accept the TSIG key {adapter._key.name} (unknown key name, wrong secret or algorithm)")


def confirm(adapter: UpdateAdapter, plan: Plan, started: float) -> ApplyResult:
    """Read the plan's keys back; anything but `after` is restored and raised."""
    try:
        live = adapter.read(plan.keys())
    except TransientError as exc:
        raise TransientError(f"the server answered NOERROR but the read-back failed ({exc.message}); "
                             "a retry re-reads the zone first") from None
    missing = [s.key for s in plan.steps if live.get(s.key) != s.after]
    if not missing:
        return ApplyResult(applied=True, rcode="NOERROR",
                           detail=f"applied {len(plan.steps)} step(s) in one update; read back")
    restored, after_restore, how = restore(adapter, plan, live)
    elapsed_ms = (time.perf_counter() - started) * 1000
    found = ", ".join(f"{key} is {_short(live.get(key))}" for key in missing)
    outcome = (f"every key restored to before in {elapsed_ms:.1f} ms from sending" if restored
               else f"restore FAILED ({how}); the zone now holds: "
               + ", ".join(f"{s.key} {_short(after_restore.get(s.key))}" for s in plan.steps))
    raise PartialApplyError(
        f"{adapter._where()} answered NOERROR but did not apply all of the change: {found} "
        f"(planned: {', '.join(f'{k} {_short(_after(plan, k))}' for k in missing)}); {outcome}",
        keys=missing, live=live, restored=restored, elapsed_ms=elapsed_ms)


def restore(adapter: UpdateAdapter, plan: Plan,
            live: dict[RRKey, RRValue | None]) -> tuple[bool, dict[RRKey, RRValue | None], str]:
    """Put every key that moved back to `before`, conditional on what `live` saw.
    SOA serials only move forward: an SOA is restored with a serial above the live one."""
    steps = tuple(Step(s.key, live.get(s.key), _restored_value(s, live.get(s.key)))
                  for s in plan.steps if not _same(s.key, live.get(s.key), s.before))
    how = "nothing to undo"
    if steps:
        undo = Plan(zone=plan.zone, steps=steps)
        try:
            response = adapter._send_update(build_update(undo, origin=adapter.origin, key=adapter._key))
            how = f"restore answered {dns.rcode.to_text(response.rcode())}"
        except (OSError, EOFError, dns.exception.DNSException) as exc:
            how = f"restore not sent: {type(exc).__name__}"
    try:
        after_restore = adapter.read(plan.keys())
    except TransientError as exc:
        return False, {}, f"{how}; re-read failed: {exc.message}"
    return all(_same(s.key, after_restore.get(s.key), s.before) for s in plan.steps), after_restore, how


def _soa_fields(value: RRValue | None) -> tuple[int, list[str]] | None:
    if value is None:
        return None
    fields = value.rdatas[0].split()
    return value.ttl, fields[:2] + fields[3:]


def _same(key: RRKey, live: RRValue | None, wanted: RRValue | None) -> bool:
    """Equal; for the SOA, equal but for the serial (the server moves it on every update)."""
    if key.rdtype == "SOA":
        return _soa_fields(live) == _soa_fields(wanted)
    return live == wanted


def _restored_value(step: Step, live: RRValue | None) -> RRValue | None:
    if step.key.rdtype != "SOA" or step.before is None or live is None:
        return step.before
    fields = step.before.rdatas[0].split()
    serial = (int(live.rdatas[0].split()[2]) + 1) % 2**32
    return RRValue(step.before.ttl, (" ".join([*fields[:2], str(serial), *fields[3:]]),))


def classify_refusal(adapter: UpdateAdapter, plan: Plan) -> ConfigError | DataRefusedError:
    """A signed REFUSED: is the key not allowed, or is it the data?"""
    probe = dns.update.UpdateMessage(adapter.origin, keyring=adapter._keyring, keyname=adapter._key.name,
                                     keyalgorithm=adapter._key.algorithm)
    probe.present(adapter.origin, "SOA")  # always true; the probe changes nothing
    try:
        probe_rcode = adapter._send_update(probe).rcode()
    except UnsignedRefusal as exc:
        return key_error(adapter, exc.rcode)
    except (OSError, EOFError, dns.exception.DNSException) as exc:
        return ConfigError(f"{adapter._where()} refused the update for {adapter.zone} (REFUSED; the check whether "
                           f"the key may update failed: {type(exc).__name__})")
    if probe_rcode != dns.rcode.NOERROR:
        return ConfigError(f"{adapter._where()} refused the update for {adapter.zone}: REFUSED (the TSIG key "
                           f"{adapter._key.name} may not update this zone)")
    try:
        suspects = target_problems(plan, origin=adapter.origin, read=adapter.read)
    except (TransientError, ConfigError):
        suspects = []
    named = "; ".join(suspects) if suspects else "the server's log names the record"
    # The key may update the zone, so it is these records: their data (BIND's MX/SRV
    # target check) or a per-name update policy (BIND update-policy) refuses them.
    return DataRefusedError(
        f"{adapter._where()} refused the change to {adapter.zone} because of the records it changes, not the key "
        f"(an update that changes nothing is accepted with the same key): {named}. Nothing was applied; change "
        "the records (or the server's per-name update policy)")


def _after(plan: Plan, key: RRKey) -> RRValue | None:
    return next(s.after for s in plan.steps if s.key == key)


def _short(value: RRValue | None) -> str:
    return "absent" if value is None else f"{value.ttl} {' | '.join(value.rdatas)}"
