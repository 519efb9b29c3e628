"""The `changegate` entry point: the argparse wiring of every command, and the
mapping of errors to messages and exit codes."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .checks import CHECK_SYNTAX
from .client import VERSION, Client
from .commands import (
    cmd_cancel,
    cmd_comment,
    cmd_emergency,
    cmd_list,
    cmd_live,
    cmd_plan,
    cmd_propose,
    cmd_revert,
    cmd_rollback,
    cmd_show,
    cmd_submit,
    cmd_targets,
)
from .config import resolve_settings
from .errors import EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE, ApiError, CannotConnect, UsageError
from .patch import NFT_PATCH_SYNTAX, PATCH_SYNTAX
from .render import print_json
from .review import cmd_approve, cmd_pending, cmd_reject, cmd_wait

# A subcommand adder: (name, func, help, **add_parser kwargs) -> its parser.
AddCommand = Callable[..., argparse.ArgumentParser]


class _PatchPart(argparse.Action):
    """Collect the patch flags (DNS, firewall, --file) into one ordered list."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parts = list(getattr(namespace, "patch_parts", None) or [])
        parts.append((self.metavar_op, values))
        namespace.patch_parts = parts

    def __init__(self, *args: Any, op: str, **kwargs: Any) -> None:
        self.metavar_op = op
        super().__init__(*args, **kwargs)


class _CheckPart(argparse.Action):
    """Collect --check-tcp/--check-http/--check-dns in command-line order, so the
    server's health_checks[i] is the i-th check flag given."""

    def __init__(self, *args: Any, kind: str, **kwargs: Any) -> None:
        self.kind = kind
        super().__init__(*args, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        namespace.check_parts = [*(getattr(namespace, "check_parts", None) or []), (self.kind, values)]


def _add_globals(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Global options, accepted before and after the command. On subcommands the
    defaults are suppressed so they never overwrite a value given before it."""
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("connection")
    group.add_argument("--url", default=default(None), help="server URL (env CHANGEGATE_URL)")
    group.add_argument("--token", default=default(None), help="API token (env CHANGEGATE_TOKEN)")
    group.add_argument("--profile", default=default(None),
                       help="section of ~/.config/changegate/config.ini (env CHANGEGATE_PROFILE; default: default)")
    group.add_argument("--user", default=default(None),
                       help="your username: for --mine, and to be told which changes are yours to not approve "
                            "(env CHANGEGATE_USER)")
    group.add_argument("--json", action="store_true", default=default(False),
                       help="print the server's JSON instead of text")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="changegate",
        description="Propose and follow four-eyes DNS and firewall changes through the changegate API.",
        epilog="exit codes: 0 ok, 1 refused by the server, 2 usage, 3 cannot connect",
    )
    parser.add_argument("--version", action="version", version=f"changegate-cli {VERSION}")
    _add_globals(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, func: Callable[[Client, argparse.Namespace], int], help: str,
                **kwargs: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, **kwargs)
        _add_globals(sub, suppress=True)
        sub.set_defaults(func=func, command_parser=sub)
        return sub

    _add_change_commands(command)
    _add_review_commands(command)
    _add_live_command(command)
    return parser


def _add_change_commands(command: AddCommand) -> None:
    command("targets", cmd_targets, "list the targets you can see")

    propose = command(
        "propose", cmd_propose,
        "propose a change: dry-run it against the live zone or ruleset and print the diff",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="DNS patch syntax (--file):\n" + PATCH_SYNTAX + "\n\nfirewall (nftables) patch syntax (--file):\n"
               + NFT_PATCH_SYNTAX + "\n\nexamples:\n"
               "  changegate propose --target demo.test --reason 'move www' \\\n"
               "      --upsert 'www 300 A 192.0.2.10' --delete 'old A' --submit\n"
               "  changegate propose --target fw1 --reason 'open 8443 to partners' \\\n"
               "      --append 'inet changegate input: tcp dport 8443 accept' --check-tcp 10.0.0.5:8443\n"
               "  changegate propose --target demo.test --reason 'move www' --upsert 'www 300 A 192.0.2.10' \\\n"
               "      --check-http 'https://www.demo.test/health,expect=200' \\\n"
               "      --check-dns 'www.demo.test,resolver=192.0.2.53:53,type=A,expect=192.0.2.10'\n\n"
               "health checks run after applying; if one fails the change is rolled back. Each check flag is\n"
               "repeatable; options after the first comma are KEY=VALUE (a comma inside a value is kept).\n\n"
               "You cannot approve your own change: propose prints how many approvals from others it needs.",
    )
    propose.add_argument("--target", required=True, help="target name or id")
    propose.add_argument("--title", help="short title (default: first line of --reason)")
    propose.add_argument("--reason", required=True, help="why the change is needed (reviewers read this)")
    propose.add_argument("--reference", help="your change ticket, e.g. CHG0012345 (shown on the evidence page)")
    for op, meta, text in (
        ("upsert", "'NAME TTL TYPE RDATA'", "the RRset becomes exactly these records (repeat for several)"),
        ("add", "'NAME [TTL] TYPE RDATA'", "add one record"),
        ("remove", "'NAME TYPE RDATA'", "remove one record"),
        ("delete", "'NAME TYPE'", "delete the whole RRset"),
        ("append", "'FAMILY TABLE CHAIN: RULE'", "firewall: append a rule to a chain"),
        ("insert", "'FAMILY TABLE CHAIN[N]: RULE'", "firewall: insert a rule at index N (0 = first)"),
        ("delete-rule", "'FAMILY TABLE CHAIN: RULE'", "firewall: delete a rule (as nft prints it)"),
        ("add-element", "'FAMILY TABLE SET ELEM[, ELEM]'", "firewall: add elements to a named set"),
        ("delete-element", "'FAMILY TABLE SET ELEM[, ELEM]'", "firewall: delete elements from a named set"),
        ("policy", "'FAMILY TABLE CHAIN accept|drop'", "firewall: set a base chain's policy"),
        ("file", "FILE", "append patch lines from FILE ('-' = stdin)"),
    ):
        propose.add_argument(f"--{op}", action=_PatchPart, op=op, metavar=meta, help=text)
    propose.add_argument("--check-tcp", action=_CheckPart, kind="tcp", metavar=CHECK_SYNTAX["tcp"],
                         help="health check after applying: HOST:PORT must accept TCP connections "
                              "(IPv6 as [2001:db8::1]:443)")
    propose.add_argument("--check-http", action=_CheckPart, kind="http", metavar="URL[,OPTIONS]",
                         help="health check after applying: GET URL (http:// or https://) must answer STATUS "
                              "(expect=STATUS, default 200) and, with contains=TEXT, contain TEXT; "
                              "timeout=SECONDS")
    propose.add_argument("--check-dns", action=_CheckPart, kind="dns", metavar="NAME,resolver=IP:PORT[,OPTIONS]",
                         help="health check after applying: asking the resolver IP:PORT for NAME (type=TYPE, "
                              "default A) must give exactly the expect=VALUE records (repeat expect= for several), "
                              "or nothing at all with absent; timeout=SECONDS")
    propose.add_argument("--allow-apex", action="store_true",
                         help="allow changing the apex SOA or NS RRset")
    propose.add_argument("--bake", type=int, metavar="SECONDS",
                         help="watch the applied change for SECONDS (0..86400) instead of the target's rule "
                              "(DNS: the old records' TTL, capped by the target); needs --bake-reason")
    propose.add_argument("--bake-reason", metavar="TEXT",
                         help="why the change bakes for other than the target's rule (reviewers see it)")
    propose.add_argument("--submit", action="store_true", help="submit for review right away")
    propose.set_defaults(patch_parts=[], check_parts=[])

    show = command("show", cmd_show, "show a change: state, diff, comments, approvals, events")
    show.add_argument("id", type=int)

    comment = command(
        "comment", cmd_comment,
        "comment on a change you can see (its discussion: author and reviewers); each @username of someone "
        "who may see the change alerts them by email",
    )
    comment.add_argument("id", type=int)
    comment.add_argument("-m", "--message", required=True,
                         help="the comment (at most 5000 characters; recorded in the audit log)")

    listing = command("list", cmd_list, "list changes")
    listing.add_argument("--state", help="e.g. draft, pending_approval, applied")
    listing.add_argument("--target", help="target name or id")
    who = listing.add_mutually_exclusive_group()
    who.add_argument("--author", help="author's username")
    who.add_argument("--mine", action="store_true", help="only changes you wrote (needs --user/CHANGEGATE_USER)")

    submit = command("submit", cmd_submit, "submit a draft for review")
    submit.add_argument("id", type=int)

    cancel = command("cancel", cmd_cancel, "withdraw a change that has not started applying")
    cancel.add_argument("id", type=int)
    cancel.add_argument("-m", "--reason", "--comment", dest="reason", required=True,
                        help="why it is withdrawn (required, audited)")

    plan = command("plan", cmd_plan, "re-run the dry run against the live zone")
    plan.add_argument("id", type=int)

    rollback = command(
        "rollback", cmd_rollback,
        "propose undoing an applied change: a new draft of yours that puts back what it changed "
        "(four eyes like any other change)",
    )
    rollback.add_argument("id", type=int, help="the applied change to undo")
    rollback.add_argument("-m", "--reason", required=True, help="why it is rolled back (required, audited)")
    rollback.add_argument("--submit", action="store_true", help="submit the rollback for review right away")

    revert = command(
        "revert", cmd_revert,
        "undo a young applied change alone: its author or one of its approvers, while its watch window runs "
        "(the exact inverse of what it applied, queued at once; after the window use rollback)",
    )
    revert.add_argument("id", type=int, help="the applied change to undo")
    revert.add_argument("-m", "--reason", required=True, help="why it is reverted (required, audited)")

    emergency = command(
        "emergency", cmd_emergency,
        "break glass: approve a draft or pending change alone (emergency role); it is queued to apply at once, "
        "the target's reviewers are alerted and one of them reviews it afterwards",
    )
    emergency.add_argument("id", type=int, help="the draft or pending change to approve alone")
    emergency.add_argument("-m", "--reason", required=True,
                           help="why this cannot wait for a second person (required, audited, sent to the reviewers)")


def _add_review_commands(command: AddCommand) -> None:
    approve = command(
        "approve", cmd_approve,
        "approve exactly the plan you reviewed: shows the diff and asks, or --yes --fingerprint FP",
    )
    approve.add_argument("id", type=int)
    approve.add_argument("--fingerprint", metavar="FP",
                         help="the fingerprint of the plan you reviewed (required with --yes)")
    approve.add_argument("-y", "--yes", action="store_true",
                         help="do not ask: approve the plan with --fingerprint FP (for scripts)")
    approve.add_argument("-m", "--comment", help="a note for the author and the audit log")

    reject = command("reject", cmd_reject, "reject a pending change, saying why (ends the change)")
    reject.add_argument("id", type=int)
    reject.add_argument("-m", "--comment", required=True, help="why it is rejected (required)")

    pending = command("pending", cmd_pending, "list the pending changes waiting for your review")
    pending.add_argument("--target", help="target name or id")

    wait = command("wait", cmd_wait, "follow a change to its end state (exit 0 only if applied)")
    wait.add_argument("id", type=int)
    wait.add_argument("--timeout", type=float, default=600, help="give up after this many seconds (default 600)")
    wait.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")


def _add_live_command(command: AddCommand) -> None:
    live = command(
        "live", cmd_live, "read live state: the records of a name (DNS) or a chain or set (firewall)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  changegate live --target demo.test www A\n"
               "  changegate live fw1 --chain input          (same as --target fw1 --chain input)\n"
               "  changegate live --target fw1 --set 'inet changegate partners_v4'",
    )
    live.add_argument("--target", help="target name or id")
    what = live.add_mutually_exclusive_group()
    what.add_argument("--chain", metavar="CHAIN", help="firewall: a chain ('input' or 'inet changegate input')")
    what.add_argument("--set", metavar="SET", help="firewall: a named set ('partners_v4' or 'inet changegate ...')")
    live.add_argument("name", nargs="?", help="DNS: owner name, relative to the zone ('@' = apex); "
                                              "with --chain/--set: the target")
    live.add_argument("type", nargs="?", help="DNS: record type, e.g. A")




def _report(exc: ApiError, change_id: int | None = None) -> None:
    if exc.field_errors:
        # The server's detail is these same errors joined by "; ": print them once, one per line.
        count = len(exc.field_errors)
        print(f"error: the server refused {count} field{'s' if count > 1 else ''}:", file=sys.stderr)
    else:
        print(f"error: {exc.detail}", file=sys.stderr)
    for line in exc.field_errors:
        print(f"  {line}", file=sys.stderr)
    if isinstance(exc.body, dict) and isinstance(exc.body.get("current_fingerprint"), str):
        print(f"  current fingerprint: {exc.body['current_fingerprint']} "
              f"(review it with: changegate show {change_id if change_id is not None else 'ID'})", file=sys.stderr)


def _usage_error(parser: argparse.ArgumentParser, message: str) -> int:
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    command_parser: argparse.ArgumentParser = args.command_parser
    try:
        args.settings = resolve_settings(args, os.environ)
        client = Client(args.settings.url, args.settings.token)
        return args.func(client, args)
    except UsageError as exc:
        return _usage_error(command_parser, str(exc))
    except ApiError as exc:
        if args.json and exc.body is not None:
            print_json(exc.body)
        _report(exc, getattr(args, "id", None))
        return EXIT_REFUSED
    except CannotConnect as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130
