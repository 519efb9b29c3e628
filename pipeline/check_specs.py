"""Declared health checks: validation (running them is pipeline.checks).

A round runs every check of the target and of the change at once, each in its own
thread, and ends at the round deadline (CHANGEGATE_CHECK_ROUND_SECONDS, shorter
than the worker's lease). So a set can finish inside the deadline exactly when each
timeout does, and the number of checks (threads) is bounded.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from changes.errors import ValidationFailed
from changes.kinds import REGISTRY

GENERIC_CHECK_FIELDS = {
    "tcp": {"type", "host", "port", "timeout"},
    "http": {"type", "url", "expect_status", "contains", "timeout"},
}


def check_fields() -> dict[str, set[str]]:
    """The generic check types, then every registered kind's own (DNS: dns_resolve)."""
    fields = {name: set(allowed) for name, allowed in GENERIC_CHECK_FIELDS.items()}
    for kind in REGISTRY.all():
        for check_kind in kind.check_kinds:
            fields[check_kind.name] = set(check_kind.fields)
    return fields


# At import: the metrics labels and the API schema list these.
CHECK_FIELDS = check_fields()


# Per set (a target's, a change's): a round runs at most twice this many declared
# checks at once, plus the verify.
MAX_CHECKS = 16
# The timeout of a check declared without one.
DEFAULT_TIMEOUT = 2


def round_deadline_seconds() -> float:
    """How long one round of checks may take (pipeline.checks.run_round); every
    declared timeout must fit in it."""
    return float(settings.CHANGEGATE_CHECK_ROUND_SECONDS)


def _port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


# RFC 3986 (section 3 and appendix A) character classes: the API documents `url` as
# format "uri", so only a URI is stored and shown back (no spaces, no raw Unicode:
# IDN hosts in their xn-- form, other text percent-encoded).
_PCT = r"%[0-9A-Fa-f]{2}"
_SAFE = r"A-Za-z0-9\-._~!$&'()*+,;="  # unreserved + sub-delims


def _uri_part(extra: str) -> re.Pattern[str]:
    return re.compile(rf"(?:[{_SAFE}{extra}]|{_PCT})*\Z")


_URI_HOST, _URI_USER, _URI_PATH, _URI_QUERY = _uri_part(""), _uri_part(":"), _uri_part(":@/"), _uri_part(":@/?")


def _http_uri(url: Any) -> bool:
    """An absolute http(s) URI by RFC 3986, with a host."""
    # urlsplit drops tabs and newlines before parsing: check the raw text first.
    if not isinstance(url, str) or not _uri_part(":/?#\\[\\]@").match(url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0..65535
    except ValueError:  # "http://[::1" and the like
        return False
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return False
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if hostport.startswith("["):
        host, _, port = hostport[1:].partition("]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        port = port.removeprefix(":")
    else:
        host, _, port = hostport.partition(":")
        if not host or not _URI_HOST.match(host):
            return False
    return (port.isascii() and (port == "" or port.isdigit()) and _URI_USER.match(userinfo) is not None
            and _URI_PATH.match(parts.path) is not None and _URI_QUERY.match(parts.query) is not None
            and _URI_QUERY.match(parts.fragment) is not None)


def validate_health_checks(raw: Any, *, field: str = "health_checks") -> list[dict[str, Any]]:
    """Normalize declared checks; raise ValidationFailed naming "health_checks[i].field"."""
    if raw in (None, ""):
        return []
    if not isinstance(raw, list):
        raise ValidationFailed([{"index": None, "field": field, "message": "must be a list of checks"}])
    if len(raw) > MAX_CHECKS:
        raise ValidationFailed([{"index": None, "field": field, "message":
                                 f"at most {MAX_CHECKS} checks (a round runs them all at once)"}])
    deadline = round_deadline_seconds()
    errors: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    for i, check in enumerate(raw):
        def bad(name: str, message: str, i: int = i) -> None:
            errors.append({"index": None, "field": f"{field}[{i}].{name}", "message": message})

        if not isinstance(check, dict):
            bad("type", "each check must be an object")
            continue
        kind = check.get("type")
        known = check_fields()
        if kind not in known:
            bad("type", f"type must be one of {', '.join(known)}")
            continue
        for extra in sorted(set(check) - known[kind], key=str):
            bad(str(extra), "unknown field")
        timeout = check.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= deadline:
            # Checks run concurrently, so the round's worst case is its largest timeout.
            bad("timeout", f"timeout must be seconds in (0, {deadline:g}]: a round of checks ends after "
                           f"{deadline:g}s (CHANGEGATE_CHECK_ROUND_SECONDS, shorter than the worker's lease)")
        normalized: dict[str, Any] = {"type": kind, "timeout": timeout}
        if kind == "tcp":
            if not isinstance(check.get("host"), str) or not check["host"].strip():
                bad("host", "host is required")
            if not _port(check.get("port")):
                bad("port", "port must be an integer 1..65535")
            normalized.update(host=str(check.get("host", "")).strip(), port=check.get("port"))
        elif kind == "http":
            url = check.get("url")
            if not _http_uri(url):
                bad("url", "url must be an http:// or https:// URI (RFC 3986: no spaces, non-ASCII "
                           "percent-encoded, IDN hosts as xn--)")
            status = check.get("expect_status", 200)
            if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
                bad("expect_status", "expect_status must be an HTTP status 100..599")
            contains = check.get("contains")
            if contains is not None and not isinstance(contains, str):
                bad("contains", "contains must be text")
            normalized.update(url=url, expect_status=status)
            if contains:
                normalized["contains"] = contains
        else:
            check_kind = REGISTRY.check_kind(str(kind))
            assert check_kind is not None  # check_fields() listed it
            normalized.update(check_kind.validate(check, bad))
        checks.append(normalized)
    if errors:
        raise ValidationFailed(errors)
    return checks
