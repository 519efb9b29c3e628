"""What the evidence page says first (issue 15): the answers an assessor looks for,
computed from the same `change_evidence` dict the page folds below, and whether the
audit chain verifies up to the change. Reads only."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from audit.chain import GENESIS_HASH, chain_verify, checkpoint_verify, signing_public_key
from changes.models import AuditCheckpoint, AuditEvent

# Events re-hashed per query while walking the chain: bounded memory on a long chain.
CHAIN_BATCH = 2000


@dataclass(frozen=True)
class ChainStatus:
    """`ok`: every event from `anchor_seq` + 1 to `through_seq` links to the one before
    and re-hashes to its stored hash, and the anchor (a signed checkpoint, or the genesis)
    holds. `checked`: how many events were re-hashed (the cost). `problem`: why not."""

    ok: bool
    through_seq: int | None
    anchor: str
    anchor_seq: int
    checked: int
    problem: str = ""


def chain_status(first_seq: int | None, last_seq: int | None) -> ChainStatus:
    """Does the chain verify up to event `last_seq` (a change's last event)?

    `audit.chain.chain_verify` re-hashes events one by one, so from the genesis it
    costs one pass over every event before the change (O(seq), grows forever). It is
    bounded by starting at the last checkpoint before `first_seq` (the change's
    first event), so every event of the change is re-hashed: the checkpoint's signature
    (checked with the configured signing key when there is one, else the key stored
    with it, self-consistency only, for a checkpoint of an older key) vouches for the history before it, and its
    `head_hash` must still be the stored hash of its event. Checkpoints come every
    CHANGEGATE_AUDIT_CHECKPOINT_EVERY events, which bounds the walk. Without a usable
    checkpoint it walks from the genesis."""
    if last_seq is None:
        return ChainStatus(ok=False, through_seq=None, anchor="none", anchor_seq=0, checked=0,
                           problem="the change has no audit events")
    start_hash, anchor_seq, anchor = GENESIS_HASH, 0, "the genesis"
    # Strictly before: the checkpoint vouches for its event's hash, not for that row's columns.
    checkpoint = (AuditCheckpoint.objects.filter(seq__lt=first_seq if first_seq is not None else last_seq)
                  .order_by("-seq", "-pk").first())
    if checkpoint is not None:
        public_key = signing_public_key()
        if public_key is not None and hashlib.sha256(public_key).hexdigest()[:16] != checkpoint.key_id:
            public_key = None  # signed before a key rotation: only its stored key can check it
        if not checkpoint_verify(checkpoint, public_key=public_key):
            return ChainStatus(ok=False, through_seq=last_seq, anchor=f"checkpoint at seq {checkpoint.seq}",
                               anchor_seq=checkpoint.seq, checked=0,
                               problem=f"the checkpoint at seq {checkpoint.seq} has an invalid signature")
        stored = AuditEvent.objects.filter(seq=checkpoint.seq).values_list("hash", flat=True).first()
        if stored != checkpoint.head_hash:
            return ChainStatus(ok=False, through_seq=last_seq, anchor=f"checkpoint at seq {checkpoint.seq}",
                               anchor_seq=checkpoint.seq, checked=0,
                               problem=f"event {checkpoint.seq} no longer has the hash its signed checkpoint names")
        start_hash, anchor_seq = checkpoint.head_hash, checkpoint.seq
        anchor = f"the signed checkpoint at seq {checkpoint.seq}" + ("" if public_key else " (stored key only)")
    previous, expected, checked = start_hash, anchor_seq + 1, 0
    while expected <= last_seq:
        batch = list(AuditEvent.objects.filter(seq__gte=expected, seq__lte=last_seq)
                     .order_by("seq")[:CHAIN_BATCH])
        if not batch or batch[0].seq != expected:
            return ChainStatus(ok=False, through_seq=last_seq, anchor=anchor, anchor_seq=anchor_seq,
                               checked=checked, problem=f"event {expected} is missing")
        bad = chain_verify(batch, start_hash=previous)
        if bad is not None:
            checked += bad - expected + 1
            return ChainStatus(ok=False, through_seq=last_seq, anchor=anchor, anchor_seq=anchor_seq,
                               checked=checked, problem=f"event {bad} does not re-hash to its stored hash or link")
        checked += len(batch)
        previous, expected = batch[-1].hash, batch[-1].seq + 1
    return ChainStatus(ok=True, through_seq=last_seq, anchor=anchor, anchor_seq=anchor_seq, checked=checked)


def _names(checks: list[dict[str, Any]]) -> list[str]:
    return [str(check.get("name", "?")) for check in checks]


def evidence_summary(evidence: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The answers, in the order an assessor asks them. `steps` are the plan's steps
    as text lines (before/after), as the page renders them."""
    requester = evidence["requester"]
    authors = {p["id"] for p in [requester, *evidence["editors"]] if p is not None and p["id"] is not None}
    approvers = [a["approver"] for a in evidence["approvals"] if a["approver"] is not None]
    approver_ids = {a["id"] for a in approvers}
    emergency = evidence["emergency"]
    checks = evidence["checks"]
    failed = [c for c in checks if not c["ok"]]
    rollback = evidence["rollback"]
    because = _rollback_because(evidence["events"])
    if rollback is not None:
        failed_checks = because.get("failed_checks") or rollback.get("failed_checks") or []
        if failed_checks:
            why = "health check" + ("s " if len(failed_checks) > 1 else " ") + ", ".join(_names(failed_checks)) + \
                " failed" + (f" in round {because['round']}" if because.get("round") else "")
        elif because.get("reverted_by_target"):
            why = f"the target reverted it: {because['reverted_by_target']}"
        else:
            why = rollback.get("error") or "not recorded"
    else:
        why = ""
    diff = []
    for step in steps:
        diff.append({"key": f"{step['name']} {step['type']}",
                     "lines": [f"- {line}" for line in step["before"]] + [f"+ {line}" for line in step["after"]]})
    execution = evidence["execution"]
    return {
        "requester": requester,
        "editors": evidence["editors"],
        "reason": evidence["change"]["reason"],
        "reference": evidence["change"].get("reference", ""),
        "approvers": approvers,
        "approvals_required": evidence["approvals_required"],
        # Over the requester and every editor: four eyes means nobody who wrote the change approved it.
        "separated": bool(approvers) and not (authors & approver_ids),
        "no_approvals": not approvers,
        "emergency": emergency if emergency["flag"] else None,
        "diff": diff,
        "outcome": (execution or {}).get("outcome") or evidence["change"]["state"],
        "applied_at": (execution or {}).get("applied_at"),
        # Results, not checks: each declared check runs once per round of the bake.
        "check_rounds": len({(c["phase"], c["round"]) for c in checks}),
        "checks_passed": len(checks) - len(failed),
        "checks_failed": len(failed),
        "failed_check_names": sorted(set(_names(failed))),
        "rollback": rollback,
        "rollback_why": why,
    }


def _rollback_because(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The cause the rollback's end recorded ("because"), else its start's own payload."""
    for event in reversed(events):
        if event["action"] in ("change_rolled_back", "rollback_failed") and event["payload"].get("because"):
            return event["payload"]["because"]
    for event in reversed(events):
        if event["action"] == "rollback_started":
            return event["payload"]
    return {}
