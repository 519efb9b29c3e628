"""Storing one round of health checks: the CheckResult rows of an attempt and the
`checks_round` audit event that carries them, written together. Shared by the
worker's bake (pipeline.run, under its lease) and the watch window after `applied`
(pipeline.watch, under its claim on the change), so both record rounds alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from audit.chain import SYSTEM, audit_record
from changes.models import ChangeRequest, CheckResult


def check_round_store(*, change: ChangeRequest, execution_id: int, worker: str, token: int, phase: str,
                      round_no: int, outcomes: Sequence[Any]) -> list[CheckResult]:
    """Write the round's rows and their audit event. Runs inside the caller's
    transaction, after whatever proves the caller may write for this attempt (the
    lease renewal, or the watch's claim); the audit head is locked last."""
    # The rows and their audit event in one transaction: the exported log carries
    # every health-check result (PCI DSS 10.2.2), chained like everything else.
    rows = CheckResult.objects.bulk_create([
        CheckResult(execution_id=execution_id, phase=phase, round=round_no, name=o.name[:300], kind=o.kind,
                    ok=o.ok, detail=o.detail, duration_ms=o.duration_ms)
        for o in outcomes
    ])
    audit_record(actor=None, origin=SYSTEM, action="checks_round", change=change,
                 outcome="passed" if all(row.ok for row in rows) else "failed", payload={
        "execution": execution_id, "worker": worker, "token": token, "phase": phase,
        "round": round_no, "ok": all(row.ok for row in rows),
        "results": [{"name": row.name, "kind": row.kind, "ok": row.ok, "detail": row.detail,
                     "duration_ms": row.duration_ms} for row in rows],
    })
    return rows
