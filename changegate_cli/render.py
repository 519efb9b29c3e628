"""Printing: JSON, tables, the coloured diff and the change summary. Every print
goes to `_out()` so captured or redirected stdout is honoured."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO


def _out() -> TextIO:
    return sys.stdout  # looked up per call so redirected/captured stdout is honoured


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True), file=_out())


def use_color() -> bool:
    # https://no-color.org: any non-empty NO_COLOR disables colour.
    return _out().isatty() and not os.environ.get("NO_COLOR")


COLORS = {"red": "31", "green": "32", "yellow": "33", "cyan": "36", "bold": "1"}


def paint(text: str, color: str, enabled: bool) -> str:
    return f"\033[{COLORS[color]}m{text}\033[0m" if enabled else text


def render_diff(diff: str, *, color: bool) -> str:
    lines = []
    for line in diff.splitlines():
        if line.startswith(("---", "+++")):
            lines.append(paint(line, "bold", color))
        elif line.startswith("@@"):
            lines.append(paint(line, "cyan", color))
        elif line.startswith("-"):
            lines.append(paint(line, "red", color))
        elif line.startswith("+"):
            lines.append(paint(line, "green", color))
        else:
            lines.append(line)
    return "\n".join(lines)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)) + "  " + row[-1]
        for row in cells
    ).rstrip(" ")


def _name(ref: Any) -> str:
    """A nested object ({"id", "name"} or {"username"}) or a plain value as text."""
    if isinstance(ref, dict):
        return str(ref.get("name") or ref.get("username") or ref.get("id") or "")
    return "" if ref is None else str(ref)


def print_change(change: dict[str, Any], *, full: bool, own: bool = False,
                 comments: list[dict[str, Any]] | None = None,
                 events: list[dict[str, Any]] | None = None) -> None:
    """The summary `propose` and `plan` print; `show` adds reason, checks and events.
    `own`: the reader wrote or edited the change, and is told before the diff that
    someone else must approve it. `comments` (show): the discussion, right after the diff.
    `events` (show): the audit events with their payloads, for the why of a failed end."""
    out, color = _out(), use_color()
    print(f"change #{change.get('id')}  {change.get('state')}  {change.get('title', '')}", file=out)
    if events is not None:
        print_why(change, events)
    print(f"  target       {_name(change.get('target'))}", file=out)
    if full:
        editors = ", ".join(_name(e) for e in change.get("editors") or [])
        print(f"  author       {_name(change.get('author'))}" + (f"  (editors: {editors})" if editors else ""),
              file=out)
        for label, key in (("created", "created_at"), ("updated", "updated_at"), ("submitted", "submitted_at"),
                           ("planned", "planned_at")):
            if change.get(key):
                print(f"  {label:<12} {change[key]}", file=out)
        if change.get("emergency"):
            print(f"  {paint('EMERGENCY change (break-glass: reviewed after the fact)', 'red', color)}", file=out)
    print(f"  fingerprint  {change.get('fingerprint') or '-'}", file=out)
    flags = change.get("risk_flags") or []
    if flags:
        print("  risk flags:", file=out)
        for flag in flags:
            if isinstance(flag, dict):
                print(f"    {paint(str(flag.get('flag')), 'red', color)}: {flag.get('description', '')}", file=out)
            else:
                print(f"    {paint(str(flag), 'red', color)}", file=out)
    else:
        print("  risk flags   none", file=out)
    if isinstance(change.get("bake"), dict) and change["bake"].get("why"):  # absent from servers before issue 16
        print(f"  bake         {change['bake']['why']}", file=out)
    waiting = change.get("waiting_for_window")  # absent from servers before change windows (issue 16)
    if isinstance(waiting, dict):
        print(f"  window       waits for the change window: runs at {waiting.get('runs_at') or 'no opening in sight'}",
              file=out)
        print(f"               {waiting.get('reason', '')}", file=out)
    phase = change.get("phase")  # absent from servers before issue 16
    if isinstance(phase, dict) and phase.get("until") and phase.get("name") != "waiting":
        print(f"  now          {phase.get('text', '')}, until {phase['until']}", file=out)
    revert = change.get("revert")
    if isinstance(revert, dict) and revert.get("allowed"):
        print(f"  revert       you may undo it alone until {revert.get('until')}: "
              f"changegate revert {change.get('id')} --reason TEXT", file=out)
    if full:
        print("  reason:", file=out)
        for line in str(change.get("reason") or "").splitlines() or [""]:
            print(f"    {line}", file=out)
        checks = change.get("health_checks") or []
        if checks:
            print("  health checks:", file=out)
            for check in checks:
                print(f"    {_describe_check(check)}", file=out)
    warned = _print_warnings(change.get("warnings"), color=color)
    if own:
        if not warned:
            print("", file=out)
        print(f"note: {own_change_note(change)}", file=out)
    steps = ((change.get("plan") or {}).get("steps")) if isinstance(change.get("plan"), dict) else None
    diff = change.get("diff") or ""
    print("", file=out)
    if diff and steps != []:
        print(render_diff(diff, color=color), file=out)
    else:
        print("(no changes: the live zone already matches this change)", file=out)
    if comments is not None:
        _print_comments(comments)
    if full:
        _print_list_section("approvals", change.get("approvals"), _describe_approval)
        _print_list_section("events", change.get("events"), _describe_event)


def own_change_note(change: dict[str, Any]) -> str:
    """Four eyes: the author set never approves. Says how many others must, when the
    server's answer carries `approvals_required` (the detail does)."""
    text = "you cannot approve your own change"
    needed = change.get("approvals_required")
    if isinstance(needed, int) and not isinstance(needed, bool) and needed > 0:
        text += (": it needs 1 approval from someone else" if needed == 1
                 else f": it needs {needed} approvals from other people")
    return text


def is_own(change: dict[str, Any], user: str | None) -> bool:
    """Whether `user` (--user/CHANGEGATE_USER, when given) wrote or edited `change`."""
    if not user:
        return False
    return user == _name(change.get("author")) or user in {_name(e) for e in change.get("editors") or []}


def _print_warnings(warnings: Any, *, color: bool) -> bool:
    """The server's warnings for the reviewer, one `warning: ...` line each, before
    the diff they are about. Advice: they change neither the exit code nor the plan.
    Returns whether it printed any."""
    if not isinstance(warnings, list) or not warnings:
        return False  # none, or a server from before issue 12 that sends no `warnings`
    out = _out()
    print("", file=out)
    for warning in warnings:
        print(paint(f"warning: {warning}", "yellow", color), file=out)
    return True


def _print_list_section(title: str, entries: Any, describe: Callable[[dict[str, Any]], str]) -> None:
    if entries is None:
        return
    out = _out()
    print(f"\n{title}:", file=out)
    if not entries:
        print("  (none)", file=out)
    for entry in entries:
        print(f"  {describe(entry) if isinstance(entry, dict) else entry}", file=out)


def _print_comments(comments: list[dict[str, Any]]) -> None:
    """Each comment as a header line (number, time, author) and its text indented
    below it, as written (a comment may span lines)."""
    out = _out()
    print("\ncomments:", file=out)
    if not comments:
        print("  (none)", file=out)
    for comment in comments:
        if not isinstance(comment, dict):
            print(f"  {comment}", file=out)
            continue
        print(f"  #{comment.get('id', '')}  {comment.get('created_at', '')}  {_name(comment.get('author'))}",
              file=out)
        for line in str(comment.get("body") or "").splitlines() or [""]:
            print(f"    {_printable(line)}", file=out)


def _printable(text: str) -> str:
    """Someone else's text made safe for a terminal: control characters (an escape
    sequence could rewrite what the reader sees above it) are shown escaped."""
    return "".join(ch if ch.isprintable() or ch == "\t" else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def _describe_check(check: Any) -> str:
    if not isinstance(check, dict):
        return str(check)
    kind = check.get("type")
    if kind == "tcp":
        host = str(check.get("host"))
        return f"tcp [{host}]:{check.get('port')}" if ":" in host else f"tcp {host}:{check.get('port')}"
    if kind == "http":
        return f"http {check.get('url')} -> {check.get('expect_status', 200)}"
    if kind == "dns_resolve":
        return f"dns_resolve {check.get('name')} {check.get('rdtype')} via {check.get('resolver')}"
    return json.dumps(check, sort_keys=True)


def _describe_approval(approval: dict[str, Any]) -> str:
    who = _name(approval.get("approver") or approval.get("user"))
    parts = [str(approval.get("created_at") or ""), who, str(approval.get("decision") or "approved")]
    if approval.get("fingerprint"):
        parts.append(f"fingerprint {str(approval['fingerprint'])[:12]}")
    if approval.get("comment"):
        parts.append(f"- {approval['comment']}")
    return "  ".join(p for p in parts if p)


def _describe_event(event: dict[str, Any]) -> str:
    actor = _name(event.get("actor")) or "system"
    return f"{event.get('seq', ''):>5}  {event.get('created_at', '')}  {event.get('action', '')}  " \
           f"{actor} ({event.get('origin', '')})"


# ---------------------------------------------------------------------------
# Why a change ended as it did (issue 15): read from the audit events' payloads,
# as the pipeline wrote them (pipeline/run.py), never recomputed here.

# The end states that have a why, and the event that ended each.
WHY_STATES = {"rolled_back": "change_rolled_back", "rollback_failed": "rollback_failed",
              "apply_failed": "apply_failed", "drifted": "change_drifted"}


def print_why(change: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """The "why" block of a change that ended rolled_back, rollback_failed,
    apply_failed or drifted: the failed check(s) with their error and round, or the
    target's own revert; the drifted keys, approved-before against live; the apply
    error; and for a rollback what was put back (the plan's steps inverted). Nothing
    for any other state, or when the ending event is not among `events`."""
    state = change.get("state")
    ending = next((e for e in reversed(events) if isinstance(e, dict) and e.get("action") == WHY_STATES.get(state)),
                  None)
    if ending is None:
        return
    payload = ending.get("payload") if isinstance(ending.get("payload"), dict) else {}
    # A rollback's end carries its cause under "because"; an end that did not find it
    # there (an adapter error mid-rollback) has it on the rollback_started before it.
    cause = payload.get("because") or {k: payload[k] for k in ("failed_checks", "round", "reverted_by_target")
                                       if k in payload}
    if not cause and state in ("rolled_back", "rollback_failed"):
        started = next((e for e in reversed(events) if isinstance(e, dict) and e.get("action") == "rollback_started"),
                       None)
        cause = (started or {}).get("payload") or {}
    steps = [s for s in ((change.get("plan") or {}).get("steps") or []) if isinstance(s, dict)]
    lines: list[str] = []
    error = _printable(str(payload.get("error") or ""))
    if state == "rollback_failed":
        lines.append(f"the rollback failed: {error or 'no error recorded'}")
        lines += [f"  not as planned: {_printable(str(f))}" for f in payload.get("failures") or []]
    elif state == "apply_failed":
        lines.append(f"applying failed: {error or 'no error recorded'}")
    if state in ("rolled_back", "rollback_failed"):
        lead = "rolled back because" if state == "rolled_back" else "it was rolling back because"
        failed = [c for c in cause.get("failed_checks") or [] if isinstance(c, dict)]
        if failed:
            where = f" in round {cause['round']}" if cause.get("round") else ""
            lines.append(f"{lead} health check{'s' if len(failed) > 1 else ''} failed{where}:")
            lines += [f"  {_printable(str(c.get('name', '?')))}: {_printable(str(c.get('detail') or 'failed'))}"
                      + (f" ({c['duration_ms']:g} ms)" if isinstance(c.get("duration_ms"), (int, float)) else "")
                      for c in failed]
        elif cause.get("reverted_by_target"):
            lines.append(f"{lead} the target reverted it by itself: {_printable(str(cause['reverted_by_target']))}")
        elif state == "rolled_back" or not error:
            lines.append(f"{lead}: {_printable(str(cause.get('error') or 'no cause recorded'))}")
        lines.append("put back (each key from the change's after to its before):" if state == "rolled_back" else
                     "it was putting back (each key from the change's after to its before):")
        lines += [f"  {_step_key(s)}: {_value(s.get('after'))} -> {_value(s.get('before'))}" for s in reversed(steps)]
    if state == "drifted" or payload.get("keys"):
        # Drift names the keys under "moved"; a partial apply under "keys".
        moved = [str(k) for k in payload.get("moved") or payload.get("keys") or []]
        live = payload.get("live") if isinstance(payload.get("live"), dict) else {}
        by_key = {_step_key(s): s for s in steps}
        if state == "drifted":
            lines.append(f"{len(moved)} key{'s' if len(moved) != 1 else ''} changed outside changegate since the "
                         "plan was approved (approved before -> live now); the approvals no longer count:")
        else:
            restored = "put back to before" if payload.get("restored") else "NOT put back: neither before nor after"
            lines.append(f"the target took only part of it ({restored}); at these keys (before -> live now):")
        for key in moved:
            before = _value(by_key[key].get("before")) if key in by_key else "?"
            lines.append(f"  {_printable(key)}: {before} -> {_value(live.get(key)) if key in live else '?'}")
        if state == "drifted":
            lines.append(f"re-plan it against the live zone with: changegate plan {change.get('id')}")
    elif state == "rollback_failed" and isinstance(payload.get("live"), dict) and payload["live"]:
        lines.append("live now:")
        lines += [f"  {_printable(str(k))}: {_value(v)}" for k, v in payload["live"].items()]
    out = _out()
    print(f"  why it ended {state} (event {ending.get('seq', '?')}):", file=out)
    for line in lines:
        print(f"    {line}", file=out)


def _step_key(step: dict[str, Any]) -> str:
    return f"{step.get('name')} {step.get('type')}"  # as the pipeline names a key (RRKey.__str__)


def _value(value: Any) -> str:
    """A keyed value ({"ttl", "rdatas"}) on one line; None is absent."""
    if value is None:
        return "(absent)"
    if not isinstance(value, dict):
        return _printable(str(value))
    items = ", ".join(_printable(str(r)) for r in value.get("rdatas") or []) or "(empty)"
    return f"{items} (ttl {value['ttl']})" if value.get("ttl") else items
