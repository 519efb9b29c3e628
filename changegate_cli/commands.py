"""The commands that propose and follow changes: one function each,
(client, args) -> exit code. Review commands are in `review`."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from .checks import parse_check
from .client import Client
from .errors import EXIT_OK, ApiError, UsageError
from .patch import build_patch, title_from_reason
from .render import WHY_STATES, _name, _out, is_own, own_change_note, print_change, print_json, table


def cmd_targets(client: Client, args: argparse.Namespace) -> int:
    if args.json:
        print_json(client.all_pages("/api/v1/targets/"))
        return EXIT_OK
    rows = [
        # A firewall target has no zone: its owned tables stand in that column.
        (t.get("id"), t.get("name"), t.get("zone") or ", ".join((t.get("config") or {}).get("tables") or []),
         t.get("required_approvals"),
         "yes" if t.get("frozen") else "no")
        for t in client.paginate("/api/v1/targets/")
    ]
    if not rows:
        print("no targets visible to you", file=sys.stderr)
        return EXIT_OK
    print(table(("ID", "NAME", "ZONE", "APPROVALS", "FROZEN"), rows), file=_out())
    return EXIT_OK


def cmd_propose(client: Client, args: argparse.Namespace) -> int:
    # Everything that can be a usage error is checked before anything is sent.
    patch = build_patch(args)
    if not patch.strip():
        raise UsageError("nothing to propose: give --upsert, --add, --remove, --delete (DNS), --append, --insert, "
                         "--delete-rule, --add-element, --delete-element, --policy (firewall) or --file")
    if not args.reason.strip():
        raise UsageError("--reason must say why the change is needed")
    bake, bake_reason = getattr(args, "bake", None), getattr(args, "bake_reason", None)
    if bake is not None and not (bake_reason or "").strip():
        raise UsageError("--bake needs --bake-reason: say why the change bakes for other than the target's rule")
    if bake is None and bake_reason is not None:
        raise UsageError("--bake-reason goes with --bake SECONDS")
    checks = list(args.check_parts or [])
    body = {
        "target": args.target,
        "title": args.title or title_from_reason(args.reason),
        "reason": args.reason,
        "patch": patch,
        "health_checks": [parse_check(kind, value) for kind, value in checks],
    }
    if args.allow_apex:
        body["allow_apex"] = True
    if getattr(args, "reference", None):
        body["reference"] = args.reference
    if bake is not None:
        body["bake_override_seconds"], body["bake_override_reason"] = bake, bake_reason
    try:
        change = client.post("/api/v1/changes/", body)
    except ApiError as exc:
        _name_check_flags(exc, checks)
        raise
    change = _created(client, args, change)
    if not args.json and not args.submit and change.get("state") == "draft" \
            and (change.get("plan") or {}).get("steps"):
        print(f"\nsubmit it for review with: changegate submit {change['id']}", file=_out())
    return EXIT_OK


def _created(client: Client, args: argparse.Namespace, change: dict[str, Any]) -> dict[str, Any]:
    """Print a change the caller just created, so its author: with the note, before
    the diff, that someone else must approve it. With --submit, submit it first."""
    if args.submit:
        try:
            change = client.post(f"/api/v1/changes/{change['id']}/submit/")
        except ApiError:
            print(f"change #{change['id']} was created but stays a draft:", file=sys.stderr)
            if not args.json:
                print_change(change, full=False, own=True)
            raise
    if args.json:
        print_json(change)
    else:
        print_change(change, full=False, own=True)
    return change


def _name_check_flags(exc: ApiError, checks: list[tuple[str, str]]) -> None:
    """The server names `health_checks[i].field`; say which flag that was."""
    def named(line: str) -> str:
        match = re.match(r"health_checks\[(\d+)\]", line)
        if match and int(match.group(1)) < len(checks):
            kind, value = checks[int(match.group(1))]
            return f"{line} (--check-{kind} {value!r})"
        return line

    exc.field_errors = [named(line) for line in exc.field_errors]


def cmd_show(client: Client, args: argparse.Namespace) -> int:
    change = client.get(f"/api/v1/changes/{args.id}/")
    if args.json:
        print_json(change)  # the server's detail as it is; the comments are their own list
    else:
        print_change(change, full=True, own=is_own(change, args.settings.user),
                     comments=_comments(client, args.id), events=why_events(client, change))
    return EXIT_OK


def why_events(client: Client, change: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The change's audit events with their payloads, where the pipeline wrote why it
    ended as it did; None for a change with no such end. The detail's events carry no
    payload: the evidence report's do (same access as the detail). A server without
    it gives no why rather than no `show`."""
    if change.get("state") not in WHY_STATES:
        return None
    events = change.get("events") or []
    if any(isinstance(e, dict) and "payload" in e for e in events):
        return events
    try:
        evidence = client.get(f"/api/v1/changes/{change.get('id')}/evidence/")
    except ApiError as exc:
        if exc.status in (403, 404):
            return None
        raise
    return [e for e in (evidence.get("events") or []) if isinstance(e, dict)] if isinstance(evidence, dict) else None


def _comments(client: Client, change_id: int) -> list[dict[str, Any]] | None:
    """The change's discussion, oldest first; None from a server without comments
    (the change itself was just read, so its 404 means no such endpoint)."""
    try:
        return list(client.paginate(f"/api/v1/changes/{change_id}/comments/"))
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def cmd_comment(client: Client, args: argparse.Namespace) -> int:
    if not args.message.strip():
        raise UsageError("--message must say something")
    comment = client.post(f"/api/v1/changes/{args.id}/comments/", {"body": args.message})
    if args.json:
        print_json(comment)
        return EXIT_OK
    print(f"comment #{comment.get('id')} added to change #{args.id}", file=_out())
    mentions = comment.get("mentions") or []
    if mentions:
        print(f"mentioned: {', '.join(mentions)}", file=_out())
    ignored = comment.get("mentions_ignored") or []
    if ignored:
        # The server does not say which of these exist: only that none of them was reached.
        print(f"warning: not mentioned (no such user who may see change #{args.id}): "
              f"{', '.join('@' + str(name) for name in ignored)}", file=sys.stderr)
    return EXIT_OK


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    author = args.author
    if args.mine:
        if not args.settings.user:
            raise UsageError("--mine needs your username: give --user NAME or set CHANGEGATE_USER")
        author = args.settings.user
    params = {"state": args.state, "target": args.target, "author": author}
    if args.json:
        print_json(client.all_pages("/api/v1/changes/", **params))
        return EXIT_OK
    rows = [
        (c.get("id"), c.get("state"), _name(c.get("target")), _name(c.get("author")),
         c.get("updated_at") or c.get("created_at") or "", c.get("title") or "")
        for c in client.paginate("/api/v1/changes/", **params)
    ]
    if not rows:
        print("no matching changes", file=sys.stderr)
        return EXIT_OK
    print(table(("ID", "STATE", "TARGET", "AUTHOR", "UPDATED", "TITLE"), rows), file=_out())
    return EXIT_OK


def _transition(client: Client, args: argparse.Namespace, action: str, body: dict[str, Any] | None = None) -> int:
    change = client.post(f"/api/v1/changes/{args.id}/{action}/", body)
    if args.json:
        print_json(change)
    else:
        print(f"change #{change.get('id')} is now {change.get('state')}", file=_out())
    return EXIT_OK


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    return _transition(client, args, "submit")


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    return _transition(client, args, "cancel", {"reason": args.reason})


def cmd_rollback(client: Client, args: argparse.Namespace) -> int:
    """The manual rollback of an applied change is a new change (a draft of this
    user's, four eyes like any other) putting everything back to the plan's before."""
    if not args.reason.strip():
        raise UsageError("--reason must say why the change is rolled back")
    rollback = client.post(f"/api/v1/changes/{args.id}/rollback/", {"reason": args.reason})
    rollback = _created(client, args, rollback)
    if args.json:
        return EXIT_OK
    number, out = rollback.get("id"), _out()
    if not (rollback.get("plan") or {}).get("steps"):
        print(f"\nchange #{number} rolls back #{args.id} but has nothing to do: the live state already matches "
              f"what #{args.id} found before it applied; withdraw it with: changegate cancel {number} -m REASON",
              file=out)
    elif rollback.get("state") == "draft":
        print(f"\nchange #{number} is a draft that rolls back #{args.id}: nothing is applied until it is "
              f"submitted and approved\nsubmit it for review with: changegate submit {number}", file=out)
    else:
        print(f"\nchange #{number} rolls back #{args.id} and is now {rollback.get('state')}: "
              f"{own_change_note(rollback)}\nfollow it with: changegate wait {number}", file=out)
    return EXIT_OK


def cmd_revert(client: Client, args: argparse.Namespace) -> int:
    """The one-person revert of a young change: its author or one of its approvers,
    inside its watch window. The revert is a new change, approved at once on the
    original approvals and queued to apply; after the window the server refuses and
    says to propose a rollback instead."""
    if not args.reason.strip():
        raise UsageError("--reason must say why the change is reverted")
    revert = client.post(f"/api/v1/changes/{args.id}/revert/", {"reason": args.reason})
    if args.json:
        print_json(revert)
        return EXIT_OK
    number = revert.get("id")
    print(f"change #{number} reverts #{args.id} and is now {revert.get('state')} (approved on the approvals of "
          f"#{args.id}: no second approval needed inside its watch window)\nfollow it with: changegate wait {number}",
          file=_out())
    return EXIT_OK


def cmd_emergency(client: Client, args: argparse.Namespace) -> int:
    """Break glass: approve a draft or pending change alone (needs the emergency role)."""
    if not args.reason.strip():
        raise UsageError("--reason must say why this cannot wait for a second person")
    change = client.post(f"/api/v1/changes/{args.id}/emergency/", {"reason": args.reason})
    if args.json:
        print_json(change)
        return EXIT_OK
    out = _out()
    by = change.get("emergency_by")
    print(f"change #{change.get('id')} is now {change.get('state')}"
          + (f" as an EMERGENCY change (break-glass by {by})" if change.get("emergency") else ""), file=out)
    if change.get("state") == "approved":
        print("it is queued to apply without a second approval; the target's reviewers were alerted and one of "
              "them must review it after the fact (the emergency review queue)", file=out)
        print(f"follow it with: changegate wait {change.get('id')}", file=out)
    return EXIT_OK


def cmd_plan(client: Client, args: argparse.Namespace) -> int:
    before = client.get(f"/api/v1/changes/{args.id}/")
    change = client.post(f"/api/v1/changes/{args.id}/plan/")
    if args.json:
        print_json(change)
        return EXIT_OK
    print_change(change, full=False, own=is_own(change, args.settings.user))
    out = _out()
    if before.get("fingerprint") == change.get("fingerprint"):
        print("\nplan unchanged: the live zone still matches what was planned", file=out)
    else:
        print("\nplan CHANGED: the live zone moved; approvals given to the old fingerprint no longer count",
              file=out)
    return EXIT_OK


def cmd_live(client: Client, args: argparse.Namespace) -> int:
    if args.chain or args.set:
        return _live_object(client, args)
    if not args.target or not args.name or not args.type:
        raise UsageError("live needs --target TARGET NAME TYPE (DNS) or TARGET --chain/--set NAME (firewall)")
    data = client.get(f"/api/v1/targets/{quote(args.target, safe='')}/live/",
                      name=args.name, type=args.type.upper())
    if args.json:
        print_json(data)
        return EXIT_OK
    lines = list(_live_lines(data, args.name, args.type.upper()))
    print("\n".join(lines) if lines else f"{args.name} {args.type.upper()}: no such RRset", file=_out())
    return EXIT_OK


def _live_object(client: Client, args: argparse.Namespace) -> int:
    """A firewall chain or set as the host's nft prints it, rules numbered by the
    index --insert 'TABLE CHAIN[N]: RULE' takes."""
    if args.target and args.name:
        raise UsageError("give the target once: --target TARGET or as the first argument")
    target = args.target or args.name
    if not target or args.type:
        raise UsageError("live --chain/--set takes one target: changegate live TARGET --chain NAME")
    kind, name = ("chain", args.chain) if args.chain else ("set", args.set)
    data = client.get(f"/api/v1/targets/{quote(target, safe='')}/live/", name=name, type=kind)
    if args.json:
        print_json(data)
        return EXIT_OK
    value = data.get("value") if isinstance(data, dict) else None
    title = f"{kind} {data.get('name', name) if isinstance(data, dict) else name}"
    if not value:
        print(f"{title}: does not exist", file=_out())
        return EXIT_OK
    lines, index = [f"{title} {{"], 0
    for line in value.get("rdatas") or []:
        if kind == "chain" and not line.startswith(("type ", "flags ", "comment ")):
            lines.append(f"  [{index}] {line}")
            index += 1
        else:
            lines.append(f"      {line}")
    print("\n".join([*lines, "}"]), file=_out())
    return EXIT_OK


def _live_lines(data: Any, name: str, rdtype: str) -> Iterator[str]:
    """Zone-file lines from the live answer: a single {ttl, rdatas} value (or null),
    or a list of RRsets ({name, type, ttl, rdatas}) under "rrsets"/"results"."""
    if isinstance(data, dict) and isinstance(data.get("rrsets") or data.get("results"), list):
        rrsets = data.get("rrsets") or data.get("results")
    elif isinstance(data, list):
        rrsets = data
    elif isinstance(data, dict):
        value = data.get("value", data.get("rrset", data))
        rrsets = [{"name": data.get("name", name), "type": data.get("type", rdtype), **value}] if value else []
    else:
        rrsets = []
    for rrset in rrsets:
        rdatas = rrset.get("rdatas", rrset.get("records")) or []
        for rdata in rdatas:
            yield f"{rrset.get('name', name)} {rrset.get('ttl', '')} IN {rrset.get('type', rdtype)} {rdata}"
