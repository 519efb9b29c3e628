"""--check-tcp/--check-http/--check-dns values -> the API's health check objects,
and the usage errors (naming the flag) for values that cannot be one. No server:
tests/changes/test_cli.py runs them against the API."""

from __future__ import annotations

import pytest

from changegate_cli.checks import parse_check
from changegate_cli.errors import UsageError


@pytest.mark.parametrize("kind, value, check", [
    ("tcp", "[2001:db8::1]:443", {"type": "tcp", "host": "2001:db8::1", "port": 443}),
    ("http", "http://127.0.0.1:8080/", {"type": "http", "url": "http://127.0.0.1:8080/"}),
    # A comma ends the URL (or a value) only where a known option follows it.
    ("http", "https://x.test/a,b?q=1,2,expect=404,contains=not, here,timeout=1.5",
     {"type": "http", "url": "https://x.test/a,b?q=1,2", "expect_status": 404, "contains": "not, here",
      "timeout": 1.5}),
    ("dns", "www.x.test,resolver=127.0.0.1:5300,expect=192.0.2.1,expect=192.0.2.2,timeout=3",
     {"type": "dns_resolve", "name": "www.x.test", "rdtype": "A", "resolver": "127.0.0.1:5300",
      "expect": ["192.0.2.1", "192.0.2.2"], "timeout": 3}),
    ("dns", "x.test,type=txt,resolver=[::1]:53,expect=\"a,b\" \"c\"",
     {"type": "dns_resolve", "name": "x.test", "rdtype": "TXT", "resolver": "[::1]:53", "expect": ['"a,b" "c"']}),
    ("dns", "gone.x.test,resolver=127.0.0.1:53,absent",
     {"type": "dns_resolve", "name": "gone.x.test", "rdtype": "A", "resolver": "127.0.0.1:53", "expect": []}),
])
def test_a_check_flag_becomes_the_api_object(kind, value, check):
    assert parse_check(kind, value) == check


@pytest.mark.parametrize("kind, value, message", [
    ("tcp", "host", "HOST:PORT"),
    ("tcp", "host:70000", "HOST:PORT"),
    ("http", "www.x.test/health", "http:// or https://"),
    ("http", "https:///path", "http:// or https://"),
    ("http", "https://x.test/a b", "no spaces"),
    ("http", "https://x.test/,expect=ok", "HTTP status 100..599"),
    ("http", "https://x.test/,expect=200,expect=204", "expect given twice"),
    ("http", "https://x.test/,contains=", "contains needs"),
    ("http", "https://x.test/,timeout=-1", "timeout must be"),
    ("http", "https://x.test/,timeout=inf", "timeout must be"),
    ("http", "https://x.test/,status=404", "unknown option 'status'"),
    ("dns", ",resolver=127.0.0.1:53,absent", "name to look up"),
    ("dns", "www.x.test,resolver=127.0.0.1,absent", "resolver must be IP:PORT"),
    ("dns", "www.x.test,absent", "resolver=IP:PORT is required"),
    ("dns", "www.x.test,resolver=127.0.0.1:53", "expect=VALUE (repeat for several) or absent"),
    ("dns", "www.x.test,resolver=127.0.0.1:53,expect=", "expect needs a record value"),
    ("dns", "www.x.test,resolver=127.0.0.1:53,expect=192.0.2.1,absent", "not both"),
    ("dns", "www.x.test,resolver=127.0.0.1:53,absent=yes", "absent takes no value"),
    ("dns", "www.x.test,resolver=127.0.0.1:53,rdtype=A,absent", "unknown option 'rdtype'"),
])
def test_a_bad_value_is_a_usage_error_naming_the_flag(kind, value, message):
    with pytest.raises(UsageError) as raised:
        parse_check(kind, value)
    assert str(raised.value).startswith(f"--check-{kind} takes ")
    assert message in str(raised.value)
