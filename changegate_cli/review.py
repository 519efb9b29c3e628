"""The reviewer's commands: approve exactly what was shown, reject, list what
waits for review, and follow a change to its end state."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from .client import Client
from .commands import _transition, why_events
from .errors import EXIT_OK, EXIT_REFUSED, UsageError
from .render import _name, _out, is_own, print_change, print_json, print_why, table


def _approval_count(change: dict[str, Any]) -> str:
    approvals = change.get("approvals") or []
    valid = sum(1 for a in approvals if isinstance(a, dict) and a.get("valid"))
    return f"{valid} of {change.get('approvals_required', '?')} approvals"


def _stdin_is_tty() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _confirm(question: str) -> bool:
    """Ask on the terminal; only an explicit y/yes counts (end of input is a no)."""
    print(question, end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def cmd_approve(client: Client, args: argparse.Namespace) -> int:
    # The fingerprint sent is always one a person saw: the one shown here and
    # confirmed, or the one given with --yes. It is never fetched and sent unseen.
    if args.yes and not args.fingerprint:
        raise UsageError("--yes needs --fingerprint FP, the fingerprint of the plan you reviewed "
                         "(changegate show ID prints it)")
    if args.yes:
        fingerprint = args.fingerprint
    else:
        if not _stdin_is_tty():
            raise UsageError("approve asks for confirmation on a terminal; "
                             "without one, give --yes --fingerprint FP")
        shown = client.get(f"/api/v1/changes/{args.id}/")
        print_change(shown, full=False, own=is_own(shown, args.settings.user))
        fingerprint = shown.get("fingerprint") or ""
        print(f"\n{shown.get('state')}, {_approval_count(shown)} so far", file=_out())
        if args.fingerprint and args.fingerprint != fingerprint:
            print(f"error: the plan changed since you reviewed it: you gave {args.fingerprint}, "
                  f"the current plan is {fingerprint} (shown above)", file=sys.stderr)
            return EXIT_REFUSED
        if not _confirm("approve this plan? [y/N] "):
            print("not approved: nothing was sent", file=sys.stderr)
            return EXIT_REFUSED
    body = {"fingerprint": fingerprint}
    if args.comment:
        body["comment"] = args.comment
    change = client.post(f"/api/v1/changes/{args.id}/approve/", body)
    if args.json:
        print_json(change)
    elif change.get("state") == "approved":
        print(f"change #{change.get('id')} is now approved", file=_out())
    else:
        print(f"change #{change.get('id')}: your approval is recorded ({_approval_count(change)}); "
              f"still {change.get('state')}", file=_out())
    return EXIT_OK


def cmd_reject(client: Client, args: argparse.Namespace) -> int:
    return _transition(client, args, "reject", {"comment": args.comment})


def cmd_pending(client: Client, args: argparse.Namespace) -> int:
    params = {"reviewable": "true", "target": args.target}
    if args.json:
        print_json(client.all_pages("/api/v1/changes/", **params))
        return EXIT_OK
    rows = [
        (c.get("id"), _name(c.get("target")), _name(c.get("author")), c.get("submitted_at") or "",
         ",".join(f.get("flag", "") if isinstance(f, dict) else str(f) for f in c.get("risk_flags") or []) or "-",
         c.get("title") or "")
        for c in client.paginate("/api/v1/changes/", **params)
    ]
    if not rows:
        print("nothing waits for your review", file=sys.stderr)
        return EXIT_OK
    print(table(("ID", "TARGET", "AUTHOR", "SUBMITTED", "RISK", "TITLE"), rows), file=_out())
    return EXIT_OK


# Where a change stops moving on its own (drifted waits for a person).
END_STATES = frozenset({"applied", "apply_failed", "rolled_back", "rollback_failed", "rejected", "cancelled",
                        "drifted"})


def cmd_wait(client: Client, args: argparse.Namespace) -> int:
    """Follow a change to its end state; exit 0 only if it ended applied."""
    deadline = time.monotonic() + args.timeout
    last = None
    tty = sys.stderr.isatty()
    while True:
        change = client.get(f"/api/v1/changes/{args.id}/")
        state = change.get("state")
        phase = change.get("phase") or {}
        # The phase and its time left ("baking: ... (14 min left)"); a non-tty gets a
        # line when the phase changes, not one per poll.
        shown = (state, phase.get("name"))
        if not args.json and (tty or shown != last):
            line = f"#{args.id} {state}" + (f": {phase['text']}" if phase.get("text") and phase["text"] != state.replace(
                "_", " ") else "")
            print(("\r\033[K" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
            last = shown
        if state in END_STATES:
            break
        if time.monotonic() > deadline:
            print(f"\nerror: change #{args.id} still {state} after {args.timeout:g}s", file=sys.stderr)
            return EXIT_REFUSED
        time.sleep(args.interval)  # polling interval of a progress display
    if tty and not args.json:
        print(file=sys.stderr)
    if args.json:
        print_json(change)
    else:
        print(f"change #{args.id} ended {state}")
        if phase.get("name") == "watching":
            print(f"{phase['text']}: changegate revert {args.id} --reason TEXT")
        events = why_events(client, change)
        if events is not None:
            print_why(change, events)
    return EXIT_OK if state == "applied" else EXIT_REFUSED
