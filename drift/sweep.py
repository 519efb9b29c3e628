"""Out-of-band change detection: "changes on the system with no change request".

A periodic sweep reads each target's zone whole (the adapter's AXFR snapshot) and
compares it with the target's `Baseline`: the first read records the
baseline; any later difference is written as an `out_of_band_change` audit event
with the diff, alerts the target's reviewers, and becomes the new baseline (so a
change is reported once, not on every sweep).

changegate's own applies are not out-of-band: the worker moves the baseline along
with every plan it sends (`oob_baseline_apply`, called from pipeline.execution
right after the send, while the execution still holds its lease).

Races, and how they are closed:
- a check reading the zone while an apply is in flight would see a zone that moved
  under a baseline that did not: the check is skipped ("busy") while an execution
  of the target runs or its change is between send and done;
- an apply that starts and finishes between a check's read and its compare: the
  check remembers the baseline's `revision` before reading and gives up ("busy")
  when it moved;
- compare-and-write runs under the target row lock, the one `execution_claim`
  takes, so no apply can be claimed meanwhile, and two overlapping sweeps cannot
  both report the same change (the second sees the revision moved).

The baseline is a header and one entry per key with its digests (text, wire); the
header keeps the text digests' sum and one fingerprint of the whole read's wire: an
apply rewrites its plan's keys, moves the sum by them and blanks the fingerprint; a
check whose read has the stored fingerprint is done (no per-key work), any other
parses and compares only the keys whose wire digest is not the stored one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from adapters import AdapterError, Plan, RRKey, RRValue, Snapshot, Step, TargetKind
from audit.chain import SYSTEM, audit_record
from changes.adapters import adapter_for
from changes.kinds import kind_of
from changes.locking import lock_target
from changes.models import LEASED, AuditEvent, Baseline, BaselineEntry, ChangeRequest, Execution, Target
from pipeline.outbox import alert_target, reviewers_of

logger = logging.getLogger(__name__)

# What is not tracked (DNS: signatures the signer rewrites on its own schedule) and
# what is masked (DNS: the SOA serial) is the kind's snapshot normalisation
# (TargetKind.drift_ignores / drift_comparable).
DIFF_CAP = 500  # RRsets of the diff kept in the audit event (the counts are always complete)
ALERT_CAP = 50  # RRsets of the diff shown in the alert
# Between the send and the baseline following it, the zone and the baseline disagree.
IN_FLIGHT = (ChangeRequest.State.APPLYING, ChangeRequest.State.VERIFYING, ChangeRequest.State.ROLLING_BACK)

BASELINE, UNCHANGED, CHANGED, BUSY, FAILED = "baseline", "unchanged", "changed", "busy", "failed"

Records = dict[str, dict[str, Any]]
DIGEST_MODULUS = 1 << 256
# Keys per IN (...) / rows per bulk statement: under SQLite's bound-parameter limit.
CHUNK = 500


@dataclass(frozen=True)
class RRsetDiff:
    """One RRset that differs between the baseline (`before`) and the live zone (`after`)."""

    key: RRKey
    before: RRValue | None
    after: RRValue | None

    @property
    def kind(self) -> str:
        return "added" if self.before is None else "removed" if self.after is None else "changed"

    def to_json(self) -> dict[str, Any]:
        return Step(key=self.key, before=self.before, after=self.after).to_json()


@dataclass(frozen=True)
class OobResult:
    """What one check did: `baseline` (first read recorded), `unchanged`, `changed`
    (`event` is the out_of_band_change), `busy` (an apply is in flight or moved the
    baseline while we read: the next sweep tries again) or `failed` (the zone
    could not be read; `error` says why)."""

    status: str
    serial: int | None = None
    diff: tuple[RRsetDiff, ...] = ()
    event: AuditEvent | None = None
    error: str = ""


# ---------------------------------------------------------------------------
# The baseline's form


def snapshot_records(snapshot: Snapshot, kind: TargetKind) -> Records:
    """The snapshot as baseline records: "owner type" -> {"ttl", "rdatas"}."""
    return kind.snapshot_records(snapshot)


def entry_digest(key: str, value: Mapping[str, Any]) -> str:
    """SHA-256 over one key's zone-file lines "owner ttl type rdata", in the value's
    order (DNS rdatas are sorted already; a firewall chain's order is its meaning)."""
    name, _, rdtype = key.rpartition(" ")
    digest = hashlib.sha256()
    for rdata in value["rdatas"]:
        digest.update(f"{name} {value['ttl']} {rdtype} {rdata}\n".encode())
    return digest.hexdigest()


def digest_sum(digests: Iterable[str]) -> str:
    """The whole set's digest: the entries' digests summed modulo 2**256. Order-free,
    so one key's change moves it by that key's old and new digest alone."""
    return format(sum(int(digest, 16) for digest in digests) % DIGEST_MODULUS, "064x")


def records_digest(records: Mapping[str, Mapping[str, Any]]) -> str:
    """The digest of a whole record map, as the baseline's header keeps it."""
    return digest_sum(entry_digest(key, value) for key, value in records.items())


def _wire_read(snapshot: Snapshot, kind: TargetKind, *, per_key: bool) -> tuple[str, dict[str, str] | None]:
    """(fingerprint, key -> wire digest) of a read, without parsing any rdata.

    The fingerprint is one SHA-256 over every tracked key's TTL and canonical rdata
    wire, in the read's order: the header keeps it, so a read of the very same bytes
    is told unchanged in one pass with no digest per key (those cost about a quarter
    of the AXFR itself on 100k RRsets). Order-dependent on purpose: a server handing
    out the same zone in another order only sends the check down the per-key path,
    never to a wrong "unchanged". The per-key digests (`per_key`; otherwise None) are
    SHA-256 over the key's TTL and sorted wire, as the entries keep them.
    ("", None) when the snapshot does not keep wire form."""
    wire_items = getattr(snapshot, "wire_items", None)
    if wire_items is None:
        return "", None
    ignores, fingerprint, sha256 = kind.drift_ignores, hashlib.sha256(), hashlib.sha256
    update = fingerprint.update
    digests: dict[str, str] | None = {} if per_key else None
    for key, ttl, wires in wire_items():
        if ignores(key):
            continue
        if len(wires) == 1:  # most RRsets: no generator, no sort
            (wire,) = wires
            body = len(wire).to_bytes(2, "big") + wire
        else:
            body = b"".join(len(wire).to_bytes(2, "big") + wire for wire in sorted(wires))
        head = f"{key.name} {key.rdtype} {ttl}"
        update(f"{head} {len(wires)}\n".encode())  # the count: where one key's wires end
        update(body)
        if digests is not None:
            digests[str(key)] = sha256(f"{head}\n".encode() + body).hexdigest()
    return fingerprint.hexdigest(), digests


@dataclass(frozen=True)
class _Live:
    """A fresh read: the keys that may differ from `stored`, their values and digests."""

    values: Records
    digests: dict[str, str]
    digest: str
    candidates: frozenset[str]
    stored: dict[str, tuple[int, str, str]]


def _live(snapshot: Snapshot, kind: TargetKind, wires: dict[str, str] | None, seen: tuple | None) -> _Live:
    """Outside any lock. With wire form, only the keys whose stored wire digest is
    not the read's (changed, or written by a plan since) are parsed to text; the
    revision check under the lock makes the entries read here the ones compared."""
    stored = _stored(seen[3]) if seen is not None else {}
    if wires is None or not stored:
        values = snapshot_records(snapshot, kind)  # the slow part: every rdata to text
        digests = {key: entry_digest(key, value) for key, value in values.items()}
        return _Live(values, digests, digest_sum(digests.values()), frozenset(values.keys() | stored.keys()), stored)
    candidates = frozenset(key for key in stored.keys() | wires.keys()
                           if not (key in stored and stored[key][2] and stored[key][2] == wires.get(key)))
    values = {key: snapshot.get(RRKey(*key.rsplit(" ", 1))).to_json() for key in candidates & wires.keys()}
    digests = {key: entry_digest(key, value) for key, value in values.items()}
    # The header's digest is the stored entries' sum: move it by the candidates.
    total = int(seen[4], 16) + sum(int(digest, 16) for digest in digests.values())
    total -= sum(int(stored[key][1], 16) for key in candidates if key in stored)
    return _Live(values, digests, format(total % DIGEST_MODULUS, "064x"), candidates, stored)


def zone_diff(before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]], *,
              kind: TargetKind) -> list[RRsetDiff]:
    """The RRsets that differ between two record maps, by key, sorted, compared in
    the kind's normalised form (DNS: SOA serial masked)."""
    comparable = kind.drift_comparable
    diff = []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key), after.get(key)
        if comparable(key, old) == comparable(key, new):
            continue
        name, _, rdtype = key.rpartition(" ")
        diff.append(RRsetDiff(RRKey(name, rdtype), RRValue.from_json(old), RRValue.from_json(new)))
    return diff


def _apply_in_flight(target_id: int) -> bool:
    return (
        Execution.objects.filter(target_id=target_id)
        .exclude(state=Execution.State.DONE)
        .filter(Q(state__in=LEASED) | Q(change__state__in=IN_FLIGHT))
        .exists()
    )


# ---------------------------------------------------------------------------
# Services


def oob_check_target(*, target: Target) -> OobResult:
    """Read `target`'s whole zone and compare it with its baseline.

    First read: record the baseline (audit `zone_baseline_recorded`). Later reads:
    any difference apart from the SOA serial is recorded as `out_of_band_change`
    with the diff, alerts the target's reviewers after commit, and becomes the new
    baseline. An unreadable zone is recorded as `out_of_band_check_failed` and
    returned as `failed`; nothing is raised for it.
    """
    if _apply_in_flight(target.pk):
        return OobResult(status=BUSY)
    seen = Baseline.objects.filter(target_id=target.pk).values_list(
        "revision", "wire_digest", "version", "pk", "digest").first()
    try:
        adapter = adapter_for(target)
        try:
            # The cheap poll (nftables: the ruleset generation): unmoved since the
            # baseline's read means unchanged, with no whole-target read at all.
            version = adapter.version()
            if version is not None and seen is not None and version == seen[2]:
                return _unchanged(target, seen[0], version)
            snapshot = adapter.read_zone()
        finally:
            adapter.close()
    except AdapterError as exc:
        return oob_check_failed(target=target, error=exc.message)
    now = timezone.now()
    kind = kind_of(target)
    if seen is not None and seen[1]:  # no plan moved the baseline since its read: try the one-pass fingerprint
        wire, _ = _wire_read(snapshot, kind, per_key=False)
        if wire == seen[1]:
            # The very bytes of the last read: nothing to parse, digest per key or compare.
            return _unchanged(target, seen[0], snapshot.serial, snapshot=snapshot)
    wire, wires = _wire_read(snapshot, kind, per_key=True)
    live = _live(snapshot, kind, wires, seen)
    values, digest, stored = live.values, live.digest, live.stored
    with transaction.atomic():
        lock_target(target.pk)
        baseline = Baseline.objects.filter(target_id=target.pk).first()
        moved = (baseline.revision if baseline else None) != (seen[0] if seen else None)
        if moved or _apply_in_flight(target.pk):
            return OobResult(status=BUSY, serial=snapshot.serial)
        _checked(target, snapshot, now)
        if baseline is None:
            return _record_first(target, snapshot, live, wires, wire, now)
        # Values only of the keys whose digest differs.
        moved_keys = {key for key in live.candidates
                      if (stored[key][1] if key in stored else None) != live.digests.get(key)}
        before = dict(_rows(baseline.pk, ("value",), sorted(moved_keys & stored.keys())))
        diff = zone_diff(before, {key: values[key] for key in moved_keys if key in values}, kind=kind)
        event = None
        if diff:
            event = audit_record(actor=None, origin=SYSTEM, action="out_of_band_change", target=target,
                                 payload=_event_payload(baseline, snapshot.serial, digest, diff))
            alert_target(event="out_of_band_change", target=target, recipients=reviewers_of(target),
                         detail=_alert_detail(target, baseline, snapshot.serial, event, diff))
        fields = ["taken_at", "version", "item_count", "wire_digest"]
        baseline.taken_at, baseline.version, baseline.item_count, baseline.wire_digest = (
            now, snapshot.serial, len(wires) if wires is not None else len(values), wire)
        # A change, or only the SOA serial moved: the moved keys' entries take the
        # live values; the others the read's wire digest, if a plan blanked it.
        _entries_write(baseline, {key: values.get(key) for key in live.candidates}, live.digests, stored=stored,
                       wires=wires or {})
        if moved_keys:
            baseline.digest, baseline.revision = digest, baseline.revision + 1
            fields += ["digest", "revision"]
        baseline.save(update_fields=fields)
    if diff:
        logger.warning("out-of-band change on %s: %d RRsets (audit seq %s)", target.name, len(diff), event.seq)
    return OobResult(status=CHANGED if diff else UNCHANGED, serial=snapshot.serial, diff=tuple(diff), event=event)


def _unchanged(target: Target, revision: int, version: int, *, snapshot: Snapshot | None = None) -> OobResult:
    """The cheap poll, or a read of the very same bytes, found the target where the
    baseline's read left it. The revision filter is the compare-and-swap against
    an apply that moved the baseline meanwhile."""
    now = timezone.now()
    with transaction.atomic():
        # The lock order (changes.locking): target row, baseline row, audit head.
        lock_target(target.pk)
        confirmed = Baseline.objects.filter(target_id=target.pk, revision=revision).update(taken_at=now)
        if confirmed:
            _checked(target, snapshot, now)
    return OobResult(status=UNCHANGED if confirmed else BUSY, serial=version)


def _record_first(target: Target, snapshot: Snapshot, live: _Live, wires: dict[str, str] | None, wire: str,
                  now: datetime) -> OobResult:
    values = live.values  # all of them: there is nothing stored to compare with
    baseline = Baseline.objects.create(target=target, taken_at=now, version=snapshot.serial, item_count=len(values),
                                       digest=live.digest, wire_digest=wire)
    _entries_write(baseline, values, live.digests, stored={}, wires=wires or {})
    audit_record(actor=None, origin=SYSTEM, action="zone_baseline_recorded", target=target, payload={
        "serial": snapshot.serial, "rrsets": len(values),
        "records": sum(len(value["rdatas"]) for value in values.values()), "digest": live.digest})
    return OobResult(status=BASELINE, serial=snapshot.serial)


def _checked(target: Target, snapshot: Snapshot | None, now: datetime) -> None:
    # A whole-zone read also refreshes the RRset count the mass-delete flag uses.
    counts = {"item_count": len(snapshot), "item_count_at": now} if snapshot is not None else {}
    Target.objects.filter(pk=target.pk).update(oob_checked_at=now, **counts)


def oob_check_failed(*, target: Target, error: str) -> OobResult:
    """Record that `target` could not be checked: the detector was blind for this
    interval, which an auditor must be able to see."""
    logger.warning("out-of-band check of %s failed: %s", target.name, error)
    with transaction.atomic():
        Target.objects.filter(pk=target.pk).update(oob_checked_at=timezone.now())
        audit_record(actor=None, origin=SYSTEM, action="out_of_band_check_failed", target=target,
                     outcome="failed", payload={"error": error})
    return OobResult(status=FAILED, error=error)


def oob_baseline_apply(*, target: Target, plan: Plan) -> Baseline | None:
    """Move `target`'s baseline along with a plan changegate has just sent (the
    forward plan on apply, `plan.inverse()` on rollback): each step's `after`
    becomes the baseline's value at its key. None when there is no baseline yet
    (the first check records the whole zone). Reads and writes the entries of the
    plan's keys only, and moves the header's digest by them: the cost follows the plan."""
    kind = kind_of(target)
    wanted: dict[str, dict[str, Any] | None] = {}
    for step in plan.steps:  # a later step at the same key wins, as on the target
        if not kind.drift_ignores(step.key):
            # The value as a whole read shows it (snapshot_records): DNS rdatas are
            # sorted already, a firewall chain's rules keep their order.
            wanted[str(step.key)] = step.after.to_json() if step.after is not None else None
    with transaction.atomic():
        # The same lock the check compares under: the two never interleave.
        lock_target(target.pk)
        baseline = Baseline.objects.filter(target_id=target.pk).first()
        if baseline is None:
            return None
        stored = _stored(baseline.pk, sorted(wanted))
        digests = {key: entry_digest(key, value) for key, value in wanted.items() if value is not None}
        total = int(baseline.digest, 16)
        total -= sum(int(digest, 16) for _, digest, _ in stored.values())
        total += sum(int(digest, 16) for digest in digests.values())
        baseline.item_count += _entries_write(baseline, wanted, digests, stored=stored, wires={})
        baseline.digest = format(total % DIGEST_MODULUS, "064x")
        # Not a read: the next check compares by digests (and re-seals the wire digest).
        baseline.wire_digest, baseline.revision = "", baseline.revision + 1
        baseline.save(update_fields=["digest", "item_count", "wire_digest", "revision"])
    return baseline


# ---------------------------------------------------------------------------
# The entries (written only under the target's lock)


def _rows(baseline_id: int, fields: Sequence[str], keys: Sequence[str] | None = None) -> Iterator[tuple[Any, ...]]:
    """(key, *fields) of the baseline's entries: all, or those at `keys`."""
    rows = BaselineEntry.objects.filter(baseline_id=baseline_id).values_list("key", *fields)
    if keys is None:
        yield from rows.iterator(2000)
    else:
        for start in range(0, len(keys), CHUNK):
            yield from rows.filter(key__in=keys[start:start + CHUNK])


def _stored(baseline_id: int, keys: Sequence[str] | None = None) -> dict[str, tuple[int, str, str]]:
    """key -> (entry id, digest, wire digest)."""
    return {row[0]: row[1:] for row in _rows(baseline_id, ("pk", "digest", "wire"), keys)}


def _entries_write(baseline: Baseline, wanted: Mapping[str, Mapping[str, Any] | None], digests: Mapping[str, str],
                   *, stored: Mapping[str, tuple[int, str, str]], wires: Mapping[str, str]) -> int:
    """Give each key of `wanted` its value (None: remove it) and its wire digest
    from `wires` (none: blank, a plan's value was never read); `stored` holds the
    existing entries of those keys. Returns how many entries were added net."""
    gone = [stored[key][0] for key, value in wanted.items() if value is None and key in stored]
    changed, added = [], []
    for key, value in wanted.items():
        if value is None:
            continue
        wire = wires.get(key, "")
        if key not in stored:
            added.append(BaselineEntry(baseline=baseline, key=key, value=value, digest=digests[key], wire=wire))
        elif stored[key][1] != digests[key] or (wire and stored[key][2] != wire):
            changed.append(BaselineEntry(pk=stored[key][0], value=value, digest=digests[key], wire=wire))
    for start in range(0, len(gone), CHUNK):
        BaselineEntry.objects.filter(pk__in=gone[start:start + CHUNK]).delete()
    BaselineEntry.objects.bulk_update(changed, ["value", "digest", "wire"], batch_size=CHUNK)
    BaselineEntry.objects.bulk_create(added, batch_size=CHUNK)
    return len(added) - len(gone)


def oob_due_targets(*, now: datetime | None = None) -> list[Target]:
    """Targets with detection on whose last check is at least their interval old
    (never checked: due). Filtered in Python: a handful of rows per deployment,
    and interval arithmetic in SQL differs between SQLite and PostgreSQL."""
    now = now or timezone.now()
    return [
        target
        for target in Target.objects.filter(oob_interval_seconds__gt=0).order_by("pk")
        if target.oob_checked_at is None
        or target.oob_checked_at + timedelta(seconds=target.oob_interval_seconds) <= now
    ]


def oob_sweep(*, now: datetime | None = None) -> dict[int, str]:
    """Check every due target, one after the other; returns {target id: status}.
    A target that cannot be checked is recorded and skipped, never stops the rest."""
    results = {}
    for target in oob_due_targets(now=now):
        try:
            results[target.pk] = oob_check_target(target=target).status
        except Exception as exc:  # a bug or a database hiccup on one target must not starve the others
            logger.exception("out-of-band check of %s crashed", target.name)
            try:
                oob_check_failed(target=target, error=f"{type(exc).__name__}: {exc}")
            except Exception:
                logger.exception("could not record the failed out-of-band check of %s", target.name)
            results[target.pk] = FAILED
    return results


# ---------------------------------------------------------------------------
# What the event and the alert say


def _counts(diff: list[RRsetDiff]) -> dict[str, int]:
    counts = {"added": 0, "removed": 0, "changed": 0}
    for entry in diff:
        counts[entry.kind] += 1
    return counts


def _event_payload(baseline: Baseline, serial: int, digest: str, diff: list[RRsetDiff]) -> dict[str, Any]:
    return {
        "serial": {"baseline": baseline.version, "live": serial},
        "digest": {"baseline": baseline.digest, "live": digest},
        "baseline_taken_at": baseline.taken_at.isoformat(),
        **_counts(diff),
        "total": len(diff),
        "truncated": len(diff) > DIFF_CAP,
        "diff": [entry.to_json() for entry in diff[:DIFF_CAP]],
    }


def _alert_detail(target: Target, baseline: Baseline, serial: int, event: AuditEvent,
                  diff: list[RRsetDiff]) -> dict[str, Any]:
    shown = Plan(zone=target.config.get("zone", target.name),
                 steps=tuple(Step(key=d.key, before=d.before, after=d.after) for d in diff[:ALERT_CAP]))
    lines = kind_of(target).diff(shown).splitlines()
    lines[:2] = [f"--- {shown.zone} (baseline, serial {baseline.version})", f"+++ {shown.zone} (live, serial {serial})"]
    if len(diff) > ALERT_CAP:
        lines.append(f"... and {len(diff) - ALERT_CAP} more RRsets (audit event {event.seq})")
    return {"audit_seq": event.seq, **_counts(diff), "serial": serial, "diff": "\n" + "\n".join(lines)}
