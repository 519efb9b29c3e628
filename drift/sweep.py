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
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
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
from changes.models import LEASED, AuditEvent, ChangeRequest, Execution, Target, Baseline
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


def records_digest(records: Mapping[str, Mapping[str, Any]]) -> str:
    """SHA-256 over the sorted zone-file lines "owner ttl type rdata" of `records`."""
    digest = hashlib.sha256()
    for key in sorted(records):
        name, _, rdtype = key.rpartition(" ")
        value = records[key]
        for rdata in sorted(value["rdatas"]):
            digest.update(f"{name} {value['ttl']} {rdtype} {rdata}\n".encode())
    return digest.hexdigest()


def _wire_digest(snapshot: Snapshot, kind: TargetKind) -> str:
    """SHA-256 over the snapshot's canonical rdata wire, without parsing any rdata;
    "" when the snapshot does not keep wire form."""
    wire_items = getattr(snapshot, "wire_items", None)
    if wire_items is None:
        return ""
    digest = hashlib.sha256()
    for key, ttl, wires in sorted(wire_items(), key=lambda item: item[0]):
        if kind.drift_ignores(key):
            continue
        digest.update(f"{key.name} {key.rdtype} {ttl}\n".encode())
        for wire in sorted(wires):
            digest.update(len(wire).to_bytes(2, "big") + wire)
    return digest.hexdigest()


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
    seen = Baseline.objects.filter(target_id=target.pk).values_list("revision", "wire_digest", "version").first()
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
    wire = _wire_digest(snapshot, kind)
    if seen is not None and wire and wire == seen[1]:
        # The very bytes of the last read: nothing to parse or compare. The revision
        # filter is the compare-and-swap against an apply that moved the baseline.
        with transaction.atomic():
            # The lock order (changes.locking): target row, baseline row, audit head.
            lock_target(target.pk)
            confirmed = Baseline.objects.filter(target_id=target.pk, revision=seen[0]).update(taken_at=now)
            if confirmed:
                _checked(target, snapshot, now)
        return OobResult(status=UNCHANGED if confirmed else BUSY, serial=snapshot.serial)
    live = snapshot_records(snapshot, kind)  # the slow part (rdata to text), outside any lock
    digest = records_digest(live)
    with transaction.atomic():
        lock_target(target.pk)
        baseline = Baseline.objects.filter(target_id=target.pk).first()
        moved = (baseline.revision if baseline else None) != (seen[0] if seen else None)
        if moved or _apply_in_flight(target.pk):
            return OobResult(status=BUSY, serial=snapshot.serial)
        _checked(target, snapshot, now)
        if baseline is None:
            Baseline.objects.create(target=target, taken_at=now, version=snapshot.serial, item_count=len(live),
                                        digest=digest, wire_digest=wire, records=live)
            audit_record(actor=None, origin=SYSTEM, action="zone_baseline_recorded", target=target, payload={
                "serial": snapshot.serial, "rrsets": len(live),
                "records": sum(len(value["rdatas"]) for value in live.values()), "digest": digest,
            })
            return OobResult(status=BASELINE, serial=snapshot.serial)
        diff = zone_diff(baseline.records, live, kind=kind)
        event = None
        if diff:
            event = audit_record(actor=None, origin=SYSTEM, action="out_of_band_change", target=target,
                                 payload=_event_payload(baseline, snapshot.serial, digest, diff))
            alert_target(event="out_of_band_change", target=target, recipients=reviewers_of(target),
                         detail=_alert_detail(target, baseline, snapshot.serial, event, diff))
        fields = ["taken_at", "version", "item_count", "wire_digest"]
        baseline.taken_at, baseline.version, baseline.item_count, baseline.wire_digest = (
            now, snapshot.serial, len(live), wire)
        # A change, or only the SOA serial moved (the digest sorts values: a reordered
        # chain shows in the diff only).
        if diff or digest != baseline.digest:
            baseline.records, baseline.digest, baseline.revision = live, digest, baseline.revision + 1
            fields += ["records", "digest", "revision"]
        baseline.save(update_fields=fields)
    if diff:
        logger.warning("out-of-band change on %s: %d RRsets (audit seq %s)", target.name, len(diff), event.seq)
    return OobResult(status=CHANGED if diff else UNCHANGED, serial=snapshot.serial, diff=tuple(diff), event=event)


def _unchanged(target: Target, revision: int, version: int) -> OobResult:
    """The cheap poll found the target where the baseline's read left it."""
    now = timezone.now()
    with transaction.atomic():
        lock_target(target.pk)
        confirmed = Baseline.objects.filter(target_id=target.pk, revision=revision).update(taken_at=now)
        if confirmed:
            Target.objects.filter(pk=target.pk).update(oob_checked_at=now)
    return OobResult(status=UNCHANGED if confirmed else BUSY, serial=version)


def _checked(target: Target, snapshot: Snapshot, now: datetime) -> None:
    # The whole-zone read also refreshes the RRset count the mass-delete flag uses.
    Target.objects.filter(pk=target.pk).update(oob_checked_at=now, item_count=len(snapshot), item_count_at=now)


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
    (the first check records the whole zone)."""
    with transaction.atomic():
        # The same lock the check compares under: the two never interleave.
        lock_target(target.pk)
        baseline = Baseline.objects.filter(target_id=target.pk).first()
        if baseline is None:
            return None
        records = dict(baseline.records)
        kind = kind_of(target)
        for step in plan.steps:
            if kind.drift_ignores(step.key):
                continue
            if step.after is None:
                records.pop(str(step.key), None)
            else:
                # The value as a whole read shows it (snapshot_records): DNS rdatas are
                # sorted already, a firewall chain's rules keep their order.
                records[str(step.key)] = step.after.to_json()
        baseline.records, baseline.digest, baseline.item_count = records, records_digest(records), len(records)
        # Not a read: the next check compares in full (and re-seals the wire digest).
        baseline.wire_digest, baseline.revision = "", baseline.revision + 1
        baseline.save(update_fields=["records", "digest", "item_count", "wire_digest", "revision"])
    return baseline


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
