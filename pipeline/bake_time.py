"""How long a change is baked, and the sentence that says why (issue 16): the one
place for the rule. The worker bakes for `bake_for(...).seconds`; the API, the
change page and the CLI show its `why`, so what a reviewer approves is what runs.

The rule: a kind whose old state is cached elsewhere (DNS: resolvers keep the old
answer for its TTL) bakes until every cache may have let go of it, so a failure
that shows only once the old answer expires is still seen inside the bake. That
cache-derived part is capped by the target's `bake_max_seconds`; the target's
`bake_seconds` is the minimum whatever the cap. A change may set its own bake
(0..86400 s) with a reason, which replaces the rule and is shown to reviewers.

Pure: no database, no network; the plan is read from what is stored (or given).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from adapters.plan import Plan
from changes.kinds import kind_of

OVERRIDE_MAX_SECONDS = 86400


class BakeTime(NamedTuple):
    seconds: int
    why: str


def duration_text(seconds: int) -> str:
    """60 -> "1 min", 1200 -> "20 min", 90 -> "90 s", 3630 -> "60 min 30 s"."""
    if seconds < 60 or (seconds < 120 and seconds % 60):
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min" if not rest else f"{minutes} min {rest} s"


def _plan_of(change_or_plan: Any) -> Plan:
    if isinstance(change_or_plan, Plan):
        return change_or_plan
    stored = getattr(change_or_plan, "plan", None)
    if isinstance(stored, Plan):
        return stored
    if isinstance(stored, Mapping):
        return Plan.from_json(stored)
    return Plan(zone="", steps=())  # a change not planned yet: nothing is cached


def override_errors(seconds: Any, reason: Any) -> list[tuple[str, str]]:
    """(field, message) for an invalid override: a whole number of seconds 0..86400,
    and the reason required with it (reviewers must see why the rule does not apply)."""
    errors: list[tuple[str, str]] = []
    if seconds is None:
        return errors
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 <= seconds <= OVERRIDE_MAX_SECONDS:
        errors.append(("bake_override_seconds", f"must be an integer 0..{OVERRIDE_MAX_SECONDS}"))
    if not isinstance(reason, str) or not reason.strip():
        errors.append(("bake_override_reason", "required with bake_override_seconds: say why the change "
                       "bakes for other than the target's rule"))
    return errors


def bake_for(change_or_plan: Any, target: Any) -> BakeTime:
    """(seconds, why) for a change (its stored plan and override) or a bare Plan
    (no override) on `target`."""
    override = getattr(change_or_plan, "bake_override_seconds", None)
    if override is not None:
        reason = (getattr(change_or_plan, "bake_override_reason", "") or "").strip()
        return BakeTime(int(override), f"watching for {duration_text(int(override))}: set by the change"
                                       + (f" ({reason})" if reason else ""))
    minimum = int(target.bake_seconds)
    cap = int(target.bake_max_seconds)
    cached, key = kind_of(target).cache_seconds(_plan_of(change_or_plan))
    if key is None or cached <= 0:
        return BakeTime(minimum, f"watching for {duration_text(minimum)}: the target's minimum bake")
    seconds = max(minimum, min(cached, cap))
    if seconds == minimum and cached != minimum:
        # The minimum wins: the TTL is shorter, or the cap is below the minimum.
        capped = f", capped at the target's {duration_text(cap)}" if cached > cap else ""
        return BakeTime(minimum, f"watching for {duration_text(minimum)}: the target's minimum bake "
                                 f"({key} had TTL {cached}{capped})")
    why = f"watching for {duration_text(seconds)}: {key} had TTL {cached}"
    if cached > cap:
        why += f" (capped at the target's {duration_text(cap)})"
    return BakeTime(seconds, why)
