"""The health checks a proposal declares, built from --check-tcp, --check-http and
--check-dns: each flag value becomes one entry of the API's `health_checks` list
(the fields pipeline/check_specs.py and the DNS kind's dns_resolve accept). Only the
shape is checked here, so a typo is a usage error (exit 2) before anything is sent;
the server still judges the rest (the URL by RFC 3986, the record data, the timeout
against its check round)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from .errors import UsageError

# Flag -> (syntax shown in errors and --help, option keys, bare options).
CHECK_SYNTAX = {
    "tcp": "HOST:PORT",
    "http": "URL[,expect=STATUS][,contains=TEXT][,timeout=SECONDS]",
    "dns": "NAME,resolver=IP:PORT[,type=TYPE](,expect=VALUE...|,absent)[,timeout=SECONDS]",
}
_KEYS = {"http": ("expect", "contains", "timeout"), "dns": ("resolver", "type", "expect", "timeout")}
_BARE = {"http": (), "dns": ("absent",)}
# Options that may be repeated; and those whose values are free text (may hold ",x=").
_REPEATABLE = {"http": (), "dns": ("expect",)}
_FREE_TEXT = {"http": ("contains",), "dns": ("expect",)}


def parse_check(kind: str, value: str) -> dict[str, Any]:
    """One --check-KIND value as the API's check object; UsageError naming the flag."""
    return _PARSERS[kind](value)


def parse_tcp_check(value: str) -> dict[str, Any]:
    host, sep, port = value.rpartition(":")
    host = host.strip().removeprefix("[").removesuffix("]")  # [2001:db8::1]:443
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise UsageError(f"--check-tcp takes HOST:PORT, got {value!r}")
    return {"type": "tcp", "host": host, "port": int(port)}


def parse_http_check(value: str) -> dict[str, Any]:
    url, options = _split("http", value)
    if not re.match(r"https?://[^/?#\s]+", url, re.I) or re.search(r"\s", url):
        raise _bad("http", value, "the URL must be http:// or https:// with a host and no spaces")
    check: dict[str, Any] = {"type": "http", "url": url}
    for key, text in options:
        if key == "expect":
            if not (text.isascii() and text.isdigit() and 100 <= int(text) <= 599):
                raise _bad("http", value, f"expect must be an HTTP status 100..599, got {text!r}")
            check["expect_status"] = int(text)
        elif key == "contains":
            if not text:
                raise _bad("http", value, "contains needs the text the answer must contain")
            check["contains"] = text
        else:
            check["timeout"] = _timeout("http", value, text)
    return check


def parse_dns_check(value: str) -> dict[str, Any]:
    name, options = _split("dns", value)
    if not name or re.search(r"[\s,]", name):
        raise _bad("dns", value, "it starts with the name to look up (no spaces or commas)")
    check: dict[str, Any] = {"type": "dns_resolve", "name": name, "rdtype": "A"}
    expect: list[str] | None = None
    for key, text in options:
        if key == "resolver":
            if not _resolver(text):
                raise _bad("dns", value, f"resolver must be IP:PORT (IPv6 as [2001:db8::53]:53), got {text!r}")
            check["resolver"] = text
        elif key == "type":
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", text):
                raise _bad("dns", value, f"type must be a record type such as A, AAAA, MX, got {text!r}")
            check["rdtype"] = text.upper()
        elif key == "expect":
            if expect == []:
                raise _bad("dns", value, "give expect=VALUE or absent, not both")
            if not text.strip():
                raise _bad("dns", value, "expect needs a record value (absent means: must not resolve)")
            expect = [*(expect or []), text.strip()]
        elif key == "absent":
            if expect:
                raise _bad("dns", value, "give expect=VALUE or absent, not both")
            expect = []
        else:
            check["timeout"] = _timeout("dns", value, text)
    if "resolver" not in check:
        raise _bad("dns", value, "resolver=IP:PORT is required (the resolver to ask)")
    if expect is None:
        raise _bad("dns", value, "say what the answer must be: expect=VALUE (repeat for several) or absent")
    check["expect"] = expect
    return check


def _split(kind: str, value: str) -> tuple[str, list[tuple[str, str]]]:
    """'HEAD,key=v,key=v,bare' -> (HEAD, [(key, v), (bare, "")]). A comma only ends
    a part when a known option follows it, so values (a URL, TXT data) may hold commas."""
    keys, bare = _KEYS[kind], _BARE[kind]
    follows = [rf"{key}=" for key in keys] + [rf"{word}(?:[,=]|\Z)" for word in bare]
    head, *parts = re.split(rf",(?=(?:{'|'.join(follows)}))", value.strip())
    options: list[tuple[str, str]] = []
    for part in ["", *parts]:
        key, _, text = part.partition("=") if part else ("", "", head)
        # A misspelt option would otherwise become part of the URL, the name or a value.
        if key not in _FREE_TEXT[kind] and (stray := re.search(r",([A-Za-z_]+)=", text)):
            raise _bad(kind, value, f"unknown option {stray.group(1)!r} (options: {', '.join(keys + bare)}; "
                                    "write a comma a URL needs as %2C)")
        if not key:
            continue
        if key in bare and part != key:
            raise _bad(kind, value, f"{key} takes no value")
        if key not in _REPEATABLE[kind] and any(k == key for k, _ in options):
            raise _bad(kind, value, f"{key} given twice")
        options.append((key, text))
    return head.strip(), options


def _resolver(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    try:
        ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return bool(sep) and port.isascii() and port.isdigit() and 0 < int(port) < 65536


def _timeout(kind: str, value: str, text: str) -> float | int:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0
    if not 0 < seconds < float("inf"):  # also refuses nan
        raise _bad(kind, value, f"timeout must be a number of seconds above 0, got {text!r}")
    return int(seconds) if seconds.is_integer() else seconds


def _bad(kind: str, value: str, why: str) -> UsageError:
    return UsageError(f"--check-{kind} takes {CHECK_SYNTAX[kind]}, got {value!r}: {why}")


_PARSERS = {"tcp": parse_tcp_check, "http": parse_http_check, "dns": parse_dns_check}
