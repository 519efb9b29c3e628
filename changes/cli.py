#!/usr/bin/env python3
"""`changegate`: the command line client of the REST API.

Standalone on purpose: stdlib and `requests` only, no Django and no changegate
module, so it runs on a laptop that has none of the server's dependencies and
cannot reach around the API (the four-eyes rule is enforced by the server; the
CLI only asks).

Exit codes: 0 ok, 1 refused by the server (any HTTP error), 2 usage, 3 cannot
connect. Adding a command = one `cmd_*` function plus its subparser in
`build_parser`; HTTP and error mapping live in `Client`.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlsplit, urlunsplit

import requests

VERSION = "0.1"
USER_AGENT = f"changegate-cli/{VERSION}"  # the server records origin "cli" from this prefix
TITLE_FROM_REASON_MAX = 80
# Connect fast, read slowly: a propose or plan waits for a dry run against the live zone.
TIMEOUT = (10, 120)

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

# Kept in sync with dns_adapters.presentation.PATCH_SYNTAX by a test; copied
# rather than imported so the CLI stays free of server code.
PATCH_SYNTAX = """\
One change per line; '#' starts a comment.
  = NAME TTL [IN] TYPE RDATA   upsert: the RRset becomes exactly the '=' lines given for NAME/TYPE
  + NAME [TTL] [IN] TYPE RDATA add one record (TTL needed when the RRset does not exist yet)
  - NAME [TTL] [IN] TYPE RDATA remove one record
  - NAME [IN] TYPE             delete the whole RRset
NAME is relative to the zone unless it ends in '.'; '@' is the apex."""


# ---------------------------------------------------------------------------
# Errors


class UsageError(Exception):
    """Bad command line or missing configuration: exit 2, nothing was sent."""


class CannotConnect(Exception):
    """The server did not answer at all: exit 3."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot connect to {url}: {reason}")
        self.url = url


class ApiError(Exception):
    """The server answered with an HTTP error: exit 1."""

    def __init__(self, status: int, body: Any, reason: str = "") -> None:
        self.status = status
        self.body = body
        self.detail = _error_detail(status, body, reason)
        self.field_errors = _field_errors(body)
        super().__init__(self.detail)


def _error_detail(status: int, body: Any, reason: str) -> str:
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return body["detail"]
    if isinstance(body, dict) and body:
        return "the request was rejected"  # DRF serializer shape {field: [messages]}
    return f"HTTP {status} {reason}".strip()


def _field_errors(body: Any) -> list[str]:
    """Each error as "field: message (line N)", from our {"errors": [...]} shape or
    DRF's plain {field: [messages]} shape."""
    if not isinstance(body, dict):
        return []
    lines: list[str] = []
    errors = body.get("errors")
    if isinstance(errors, list):
        for error in errors:
            if not isinstance(error, dict):
                lines.append(str(error))
                continue
            field = str(error.get("field") or "")  # already a full path: "items[0].records[0]"
            text = f"{field}: {error.get('message', '')}" if field else str(error.get("message", ""))
            if error.get("line"):
                text += f" (line {error['line']})"
            lines.append(text)
        return lines
    for field, messages in body.items():
        if field in ("detail", "code"):
            continue
        for message in messages if isinstance(messages, list) else [messages]:
            lines.append(f"{field}: {message}")
    return lines


# ---------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Settings:
    url: str
    token: str
    user: str | None


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "changegate" / "config.ini"


def resolve_settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """Flags beat environment, environment beats the config file profile."""
    path = config_path()
    profile_name = args.profile or env.get("CHANGEGATE_PROFILE") or "default"
    explicit_profile = bool(args.profile or env.get("CHANGEGATE_PROFILE"))
    profile: dict[str, str] = {}
    if path.exists():
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as exc:
            raise UsageError(f"cannot read {path}: {exc}") from None
        if parser.has_section(profile_name):
            profile = dict(parser.items(profile_name))
            if "token" in profile and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                _warn(f"{path} holds a token and is readable by others; run: chmod 600 {path}")
        elif explicit_profile:
            raise UsageError(f"no [{profile_name}] section in {path}")
    elif explicit_profile:
        raise UsageError(f"profile {profile_name!r} given but {path} does not exist")

    url = args.url or env.get("CHANGEGATE_URL") or profile.get("url") or ""
    token = args.token or env.get("CHANGEGATE_TOKEN") or profile.get("token") or ""
    user = args.user or env.get("CHANGEGATE_USER") or profile.get("user") or None
    where = f"--{{}}, CHANGEGATE_{{}} or {{}}= in [{profile_name}] of {path}"
    if not url:
        raise UsageError("no server URL: set " + where.format("url", "URL", "url"))
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"server URL must start with http:// or https://, got {url!r}")
    if not token:
        raise UsageError("no API token: set " + where.format("token", "TOKEN", "token"))
    return Settings(url=url.rstrip("/"), token=token.strip(), user=user)


def _warn(message: str) -> None:
    print(f"changegate: warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------
# HTTP


class Client:
    """The REST API over HTTP. Every method returns decoded JSON or raises
    ApiError (HTTP error) or CannotConnect (no answer)."""

    def __init__(self, base_url: str, token: str, *, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.session.headers.update({
            "Authorization": f"Token {token}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        })

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                body: Any = None) -> Any:
        url = self.url(path)
        try:
            response = self.session.request(method, url, params=params, json=body, timeout=TIMEOUT)
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema) as exc:
            raise UsageError(f"bad server URL {self.base_url!r}: {exc}") from None
        except requests.RequestException as exc:  # refused, DNS, TLS, timeout, too many redirects
            raise CannotConnect(self.base_url, _connect_reason(exc)) from None
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = None
        if response.status_code >= 400:
            # Without a JSON body (an HTML error page) the URL is the useful hint:
            # usually a wrong base URL or a proxy in the way.
            reason = (response.reason or "") if data is not None else f"{response.reason} ({method} {url})"
            raise ApiError(response.status_code, data, reason)
        if data is None and response.content:
            raise ApiError(response.status_code, None, f"{response.reason}: the answer is not JSON ({url})")
        return data

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v not in (None, "")})

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body if body is not None else {})

    def paginate(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every result of a paginated list, following `next`."""
        page = self.get(path, **params)
        while True:
            if isinstance(page, list):  # an unpaginated list
                yield from page
                return
            yield from page.get("results", [])
            if not page.get("next"):
                return
            page = self.request("GET", self._same_origin(page["next"]))

    def _same_origin(self, link: str) -> str:
        """`next` links are absolute and built from the Host the server saw; behind a
        TLS-terminating proxy they may say http://, and a link to another host
        would carry our token there. Keep our scheme and host, take its path."""
        base, target = urlsplit(self.base_url), urlsplit(link)
        return urlunsplit((base.scheme, base.netloc, target.path, target.query, ""))

    def all_pages(self, path: str, **params: Any) -> dict[str, Any]:
        """The list as one page: the server's shape, with every page's results."""
        results = list(self.paginate(path, **params))
        return {"count": len(results), "next": None, "previous": None, "results": results}


def _connect_reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    # urllib3 nests the useful part ("Connection refused", "Name or service not known").
    text = str(exc.args[0] if exc.args else exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host",
                   "Temporary failure in name resolution", "Network is unreachable"):
        if marker in text:
            return marker.lower()
    return text


# ---------------------------------------------------------------------------
# Output helpers


def _out() -> TextIO:
    return sys.stdout  # looked up per call so redirected/captured stdout is honoured


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True), file=_out())


def use_color() -> bool:
    # https://no-color.org: any non-empty NO_COLOR disables colour.
    return _out().isatty() and not os.environ.get("NO_COLOR")


COLORS = {"red": "31", "green": "32", "cyan": "36", "bold": "1"}


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


def print_change(change: dict[str, Any], *, full: bool) -> None:
    """The summary `propose` and `plan` print; `show` adds reason, checks and events."""
    out, color = _out(), use_color()
    print(f"change #{change.get('id')}  {change.get('state')}  {change.get('title', '')}", file=out)
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
    if full:
        print("  reason:", file=out)
        for line in str(change.get("reason") or "").splitlines() or [""]:
            print(f"    {line}", file=out)
        checks = change.get("health_checks") or []
        if checks:
            print("  health checks:", file=out)
            for check in checks:
                print(f"    {_describe_check(check)}", file=out)
    steps = ((change.get("plan") or {}).get("steps")) if isinstance(change.get("plan"), dict) else None
    diff = change.get("diff") or ""
    print("", file=out)
    if diff and steps != []:
        print(render_diff(diff, color=color), file=out)
    else:
        print("(no changes: the live zone already matches this change)", file=out)
    if full:
        _print_list_section("approvals", change.get("approvals"), _describe_approval)
        _print_list_section("events", change.get("events"), _describe_event)


def _print_list_section(title: str, entries: Any, describe: Callable[[dict[str, Any]], str]) -> None:
    if entries is None:
        return
    out = _out()
    print(f"\n{title}:", file=out)
    if not entries:
        print("  (none)", file=out)
    for entry in entries:
        print(f"  {describe(entry) if isinstance(entry, dict) else entry}", file=out)


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
# Commands: one function each, (client, args) -> exit code


def cmd_targets(client: Client, args: argparse.Namespace) -> int:
    if args.json:
        print_json(client.all_pages("/api/v1/targets/"))
        return EXIT_OK
    rows = [
        (t.get("id"), t.get("name"), t.get("zone") or "", t.get("required_approvals"),
         "yes" if t.get("frozen") else "no")
        for t in client.paginate("/api/v1/targets/")
    ]
    if not rows:
        print("no targets visible to you", file=sys.stderr)
        return EXIT_OK
    print(table(("ID", "NAME", "ZONE", "APPROVALS", "FROZEN"), rows), file=_out())
    return EXIT_OK


def build_patch(args: argparse.Namespace) -> str:
    """Patch text from --upsert/--add/--remove/--delete/--file, in command-line order."""
    lines: list[str] = []
    for op, value in args.patch_parts or []:
        if op == "file":
            lines += _read_patch_file(value).splitlines()
            continue
        value = value.strip()
        if not value:
            raise UsageError(f"--{op} needs a record, e.g. --{op} {_EXAMPLES[op]!r}")
        if "\n" in value or "\r" in value:
            raise UsageError(f"--{op} takes one record; use --file for several lines")
        if op == "delete":
            words = value.split()
            if not (len(words) == 2 or (len(words) == 3 and words[1].upper() == "IN")):
                raise UsageError(f"--delete takes 'NAME TYPE' (the whole RRset), got {value!r}; "
                                 "use --remove 'NAME TYPE RDATA' to remove one record")
        lines.append(f"{_PATCH_OPS[op]} {value}")
    return "\n".join(lines) + ("\n" if lines else "")


_PATCH_OPS = {"upsert": "=", "add": "+", "remove": "-", "delete": "-"}
_EXAMPLES = {"upsert": "www 300 A 192.0.2.10", "add": "www 300 A 192.0.2.11",
             "remove": "www A 192.0.2.11", "delete": "old A"}


def _read_patch_file(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read patch file {path}: {exc.strerror}") from None


def parse_tcp_check(value: str) -> dict[str, Any]:
    host, sep, port = value.rpartition(":")
    host = host.strip().removeprefix("[").removesuffix("]")  # [2001:db8::1]:443
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise UsageError(f"--check-tcp takes HOST:PORT, got {value!r}")
    return {"type": "tcp", "host": host, "port": int(port)}


def title_from_reason(reason: str) -> str:
    first = next((line.strip() for line in reason.splitlines() if line.strip()), "")
    if len(first) <= TITLE_FROM_REASON_MAX:
        return first
    return first[: TITLE_FROM_REASON_MAX - 3].rstrip() + "..."


def cmd_propose(client: Client, args: argparse.Namespace) -> int:
    # Everything that can be a usage error is checked before anything is sent.
    patch = build_patch(args)
    if not patch.strip():
        raise UsageError("nothing to propose: give --upsert, --add, --remove, --delete or --file")
    if not args.reason.strip():
        raise UsageError("--reason must say why the change is needed")
    body = {
        "target": args.target,
        "title": args.title or title_from_reason(args.reason),
        "reason": args.reason,
        "patch": patch,
        "health_checks": [parse_tcp_check(v) for v in args.check_tcp or []],
    }
    if args.allow_apex:
        body["allow_apex"] = True
    change = client.post("/api/v1/changes/", body)
    if args.submit:
        try:
            submitted = client.post(f"/api/v1/changes/{change['id']}/submit/")
        except ApiError:
            print(f"change #{change['id']} was created but stays a draft:", file=sys.stderr)
            if not args.json:
                print_change(change, full=False)
            raise
        change = submitted
    if args.json:
        print_json(change)
    else:
        print_change(change, full=False)
        if not args.submit and change.get("state") == "draft" and (change.get("plan") or {}).get("steps"):
            print(f"\nsubmit it for review with: changegate submit {change['id']}", file=_out())
    return EXIT_OK


def cmd_show(client: Client, args: argparse.Namespace) -> int:
    change = client.get(f"/api/v1/changes/{args.id}/")
    if args.json:
        print_json(change)
    else:
        print_change(change, full=True)
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


def cmd_plan(client: Client, args: argparse.Namespace) -> int:
    before = client.get(f"/api/v1/changes/{args.id}/")
    change = client.post(f"/api/v1/changes/{args.id}/plan/")
    if args.json:
        print_json(change)
        return EXIT_OK
    print_change(change, full=False)
    out = _out()
    if before.get("fingerprint") == change.get("fingerprint"):
        print("\nplan unchanged: the live zone still matches what was planned", file=out)
    else:
        print("\nplan CHANGED: the live zone moved; approvals given to the old fingerprint no longer count",
              file=out)
    return EXIT_OK


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
        print_change(shown, full=False)
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
        if state != last and not args.json:
            line = f"#{args.id} {state}"
            print(("\r\033[K" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
            last = state
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
    return EXIT_OK if state == "applied" else EXIT_REFUSED


def cmd_live(client: Client, args: argparse.Namespace) -> int:
    data = client.get(f"/api/v1/targets/{quote(args.target, safe='')}/live/",
                      name=args.name, type=args.type.upper())
    if args.json:
        print_json(data)
        return EXIT_OK
    lines = list(_live_lines(data, args.name, args.type.upper()))
    print("\n".join(lines) if lines else f"{args.name} {args.type.upper()}: no such RRset", file=_out())
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


# ---------------------------------------------------------------------------
# Argument parsing


class _PatchPart(argparse.Action):
    """Collect --upsert/--add/--remove/--delete/--file into one ordered list."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parts = list(getattr(namespace, "patch_parts", None) or [])
        parts.append((self.metavar_op, values))
        namespace.patch_parts = parts

    def __init__(self, *args: Any, op: str, **kwargs: Any) -> None:
        self.metavar_op = op
        super().__init__(*args, **kwargs)


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
    group.add_argument("--user", default=default(None), help="your username, for --mine (env CHANGEGATE_USER)")
    group.add_argument("--json", action="store_true", default=default(False),
                       help="print the server's JSON instead of text")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="changegate",
        description="Propose and follow four-eyes DNS changes through the changegate API.",
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

    command("targets", cmd_targets, "list the targets you can see")

    propose = command(
        "propose", cmd_propose, "propose a change: dry-run it against the live zone and print the diff",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="patch syntax (--file):\n" + PATCH_SYNTAX + "\n\nexample:\n"
               "  changegate propose --target demo.test --reason 'move www' \\\n"
               "      --upsert 'www 300 A 192.0.2.10' --delete 'old A' --submit",
    )
    propose.add_argument("--target", required=True, help="target name or id")
    propose.add_argument("--title", help="short title (default: first line of --reason)")
    propose.add_argument("--reason", required=True, help="why the change is needed (reviewers read this)")
    for op, meta, text in (
        ("upsert", "'NAME TTL TYPE RDATA'", "the RRset becomes exactly these records (repeat for several)"),
        ("add", "'NAME [TTL] TYPE RDATA'", "add one record"),
        ("remove", "'NAME TYPE RDATA'", "remove one record"),
        ("delete", "'NAME TYPE'", "delete the whole RRset"),
        ("file", "FILE", "append patch lines from FILE ('-' = stdin)"),
    ):
        propose.add_argument(f"--{op}", action=_PatchPart, op=op, metavar=meta, help=text)
    propose.add_argument("--check-tcp", action="append", metavar="HOST:PORT",
                         help="health check after applying: HOST:PORT must accept TCP connections")
    propose.add_argument("--allow-apex", action="store_true",
                         help="allow changing the apex SOA or NS RRset")
    propose.add_argument("--submit", action="store_true", help="submit for review right away")
    propose.set_defaults(patch_parts=[])

    show = command("show", cmd_show, "show a change: state, diff, approvals, events")
    show.add_argument("id", type=int)

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

    live = command("live", cmd_live, "read the live records of a name from the zone")
    live.add_argument("--target", required=True, help="target name or id")
    live.add_argument("name", help="owner name, relative to the zone ('@' = apex)")
    live.add_argument("type", help="record type, e.g. A")
    return parser


# ---------------------------------------------------------------------------
# Entry point


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


if __name__ == "__main__":
    sys.exit(main())
