"""Health checks against real servers on loopback: a TCP listener, an HTTP server,
the session named (tests/conftest.py) and tiny UDP responders for error rcodes.
Only the bake's clock and sleep are fakes, so its rounds are counted, not timed."""

from __future__ import annotations

import socket
import socketserver
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dns.message
import dns.rcode
import pytest

from dns_adapters.base import ConfigError, TransientError
from dns_adapters.local_named import LocalNamed, free_port
from dns_adapters.resolve import resolve
from dns_adapters.rfc2136 import RFC2136Adapter
from pipeline.check_specs import validate_health_checks
from pipeline.checks import (
    DEFAULT_FAILURE_THRESHOLD,
    ROUND_TIMED_OUT,
    BakePolicy,
    BakeResult,
    CheckOutcome,
    bake,
    run_declared,
    run_round,
    run_verify,
)

DEMO = "demo.test"


def declared(*raw: dict) -> list[dict]:
    """Checks go through the same validation as a submitted change."""
    return validate_health_checks(list(raw))


# ---------------------------------------------------------------------------
# Servers


class _Hold(socketserver.BaseRequestHandler):
    """Accepts, reads until the client hangs up, never answers."""

    def handle(self) -> None:
        while self.request.recv(4096):
            pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def tcp_listener() -> Iterator[int]:
    server = _Server(("127.0.0.1", 0), _Hold)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port that refuses connections: bound (so nobody else takes it), not listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


class _Web(BaseHTTPRequestHandler):
    flaps = 0  # /flap answers 503 the first time, then 200
    barrier: threading.Barrier | None = None

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/ok":
            self._send(200, b"ok")
        elif self.path == "/down":
            self._send(503, b"unavailable")
        elif self.path == "/redirect":
            self._send(302, b"", Location="/ok")
        elif self.path == "/big":
            self._send(200, b"x" * (256 * 1024) + b"needle")
        elif self.path == "/flap":
            type(self).flaps += 1
            self._send(503 if type(self).flaps == 1 else 200, b"flap")
        elif self.path == "/together":
            # Answers 200 only when all the checks of a round are in flight at once.
            assert self.barrier is not None
            try:
                self.barrier.wait()
                self._send(200, b"together")
            except threading.BrokenBarrierError:
                self._send(503, b"alone")
        else:
            self._send(404, b"no")


@pytest.fixture
def web_handler() -> type[_Web]:
    """A fresh handler class per test, so /flap and /together state is not shared."""
    return type("Web", (_Web,), {"flaps": 0, "barrier": None})


@pytest.fixture
def web(web_handler: type[_Web]) -> Iterator[str]:
    """An HTTP server on loopback; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), web_handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


class _RcodeResponder(socketserver.BaseRequestHandler):
    rcode = dns.rcode.SERVFAIL

    def handle(self) -> None:
        data, sock = self.request
        response = dns.message.make_response(dns.message.from_wire(data))
        response.set_rcode(self.rcode)
        sock.sendto(response.to_wire(), self.client_address)


@pytest.fixture(params=[dns.rcode.SERVFAIL, dns.rcode.REFUSED], ids=["SERVFAIL", "REFUSED"])
def failing_resolver(request) -> Iterator[tuple[str, str]]:
    """A UDP DNS server on loopback that answers every query with one error rcode."""
    handler = type("Responder", (_RcodeResponder,), {"rcode": request.param})
    server = socketserver.ThreadingUDPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", dns.rcode.to_text(request.param)
    server.shutdown()
    server.server_close()
    thread.join()


class FakeClock:
    """The bake's time: sleeping advances it, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def adapter_for(server: LocalNamed, zone: str, **overrides) -> RFC2136Adapter:
    config = {"zone": zone, "primary": server.primary, "tsig_key_file": str(server.key_file), "timeout": 3}
    config.update(overrides)
    # Every throwaway named and tmp_path key lives under the system temp directory.
    return RFC2136Adapter(config, key_dir=tempfile.gettempdir())


@pytest.fixture
def adapter(named_server: LocalNamed, fresh_zone: str) -> Iterator[RFC2136Adapter]:
    adapter = adapter_for(named_server, fresh_zone)
    yield adapter
    adapter.close()


def plan_for(adapter: RFC2136Adapter, items):
    return adapter.plan(adapter.validate_items(items))


WWW_99 = [{"op": "upsert", "name": "www", "type": "A", "ttl": 300, "records": ["192.0.2.99"]}]


# ---------------------------------------------------------------------------
# tcp


def test_tcp_check_passes_when_the_port_accepts(tcp_listener):
    (check,) = declared({"type": "tcp", "host": "127.0.0.1", "port": tcp_listener, "timeout": 2})
    outcome = run_declared(check)
    assert outcome == CheckOutcome(name=f"tcp 127.0.0.1:{tcp_listener}", kind="tcp", ok=True, detail="connected",
                                   duration_ms=outcome.duration_ms)
    assert outcome.duration_ms >= 0


def test_tcp_check_fails_on_a_refused_connection(closed_port):
    (check,) = declared({"type": "tcp", "host": "127.0.0.1", "port": closed_port, "timeout": 2})
    outcome = run_declared(check)
    assert not outcome.ok
    assert "ConnectionRefusedError" in outcome.detail


# ---------------------------------------------------------------------------
# http


def test_http_check_passes_on_the_expected_status_and_body(web):
    (check,) = declared({"type": "http", "url": f"{web}/ok", "contains": "ok"})
    outcome = run_declared(check)
    assert outcome.ok, outcome.detail
    assert outcome.name == f"http {web}/ok"
    assert outcome.kind == "http"


def test_http_check_fails_on_a_status_mismatch(web):
    (check,) = declared({"type": "http", "url": f"{web}/down", "expect_status": 200})
    outcome = run_declared(check)
    assert not outcome.ok
    assert outcome.detail == "expected status 200, got 503 Service Unavailable"


def test_http_check_can_expect_an_error_status(web):
    (check,) = declared({"type": "http", "url": f"{web}/down", "expect_status": 503, "contains": "unavail"})
    assert run_declared(check).ok


def test_http_check_fails_when_the_body_lacks_the_text(web):
    (check,) = declared({"type": "http", "url": f"{web}/ok", "contains": "healthy"})
    outcome = run_declared(check)
    assert not outcome.ok
    assert "'healthy'" in outcome.detail


def test_http_check_does_not_follow_redirects(web):
    (check,) = declared({"type": "http", "url": f"{web}/redirect", "contains": "ok"})
    outcome = run_declared(check)
    assert not outcome.ok
    assert "got 302" in outcome.detail


def test_http_check_reads_at_most_64_kib_of_the_body(web):
    (check,) = declared({"type": "http", "url": f"{web}/big", "contains": "needle"})
    outcome = run_declared(check)
    assert not outcome.ok
    assert "first 65536 bytes" in outcome.detail


def test_http_check_reports_a_refused_connection_without_raising(closed_port):
    (check,) = declared({"type": "http", "url": f"http://127.0.0.1:{closed_port}/health", "timeout": 2})
    outcome = run_declared(check)
    assert not outcome.ok
    assert outcome.detail.startswith("ConnectionError: ")


def test_http_check_times_out_on_a_server_that_never_answers(tcp_listener):
    (check,) = declared({"type": "http", "url": f"http://127.0.0.1:{tcp_listener}/", "timeout": 0.3})
    outcome = run_declared(check)
    assert not outcome.ok
    assert "Timeout" in outcome.detail


def test_a_malformed_check_is_a_failed_outcome_not_an_exception():
    assert not run_declared({"type": "ping", "host": "127.0.0.1"}).ok
    outcome = run_declared({"type": "tcp"})  # not normalized: no host
    assert not outcome.ok
    assert "could not run" in outcome.detail


# ---------------------------------------------------------------------------
# dns_resolve and the resolver adapter


@pytest.mark.named
def test_resolve_returns_the_canonical_rrset(named_server):
    resolver = named_server.primary
    assert resolve(resolver=resolver, name="www.demo.test.", rdtype="A", timeout=3) == ["192.0.2.10", "192.0.2.11"]
    assert resolve(resolver=resolver, name="WWW.Demo.Test", rdtype="a", timeout=3) == ["192.0.2.10", "192.0.2.11"]
    assert resolve(resolver=resolver, name="demo.test.", rdtype="MX", timeout=3) == ["10 mail.demo.test."]
    assert resolve(resolver=resolver, name="txt.demo.test.", rdtype="TXT", timeout=3) == ['"v=spf1 -all"']


@pytest.mark.named
def test_resolve_follows_the_cname_chain_to_the_final_rrset(named_server):
    resolver = named_server.primary
    assert resolve(resolver=resolver, name="alias.demo.test.", rdtype="A", timeout=3) == ["192.0.2.10", "192.0.2.11"]
    assert resolve(resolver=resolver, name="alias.demo.test.", rdtype="CNAME", timeout=3) == ["www.demo.test."]


@pytest.mark.named
def test_resolve_tells_nxdomain_from_nodata(named_server):
    resolver = named_server.primary
    assert resolve(resolver=resolver, name="nothing.demo.test.", rdtype="A", timeout=3) is None
    assert resolve(resolver=resolver, name="www.demo.test.", rdtype="AAAA", timeout=3) == []
    assert resolve(resolver=resolver, name="alias.demo.test.", rdtype="AAAA", timeout=3) == []


@pytest.mark.named
def test_resolve_falls_back_to_tcp_for_a_truncated_answer(adapter, named_server, fresh_zone):
    records = [f'"{i:03d} {"x" * 200}"' for i in range(20)]  # ~4 KiB: over the 1232-byte EDNS buffer
    adapter.apply(plan_for(adapter, [{"op": "upsert", "name": "big", "type": "TXT", "ttl": 60, "records": records}]))
    answer = resolve(resolver=named_server.primary, name=f"big.{fresh_zone}.", rdtype="TXT", timeout=3)
    assert answer == sorted(records)


@pytest.mark.named
def test_resolve_raises_transient_for_a_refusing_server(named_server):
    # recursion is off: a name outside named's zones is REFUSED.
    with pytest.raises(TransientError, match="REFUSED"):
        resolve(resolver=named_server.primary, name="example.com.", rdtype="A", timeout=3)


def test_resolve_raises_transient_for_error_rcodes(failing_resolver):
    resolver, rcode = failing_resolver
    with pytest.raises(TransientError, match=f"answered {rcode} for www.example. A"):
        resolve(resolver=resolver, name="www.example.", rdtype="A", timeout=2)


def test_resolve_raises_transient_when_nobody_answers():
    resolver = f"127.0.0.1:{free_port()}"
    with pytest.raises(TransientError, match=r"no answer within 0\.3s"):
        resolve(resolver=resolver, name="www.example.", rdtype="A", timeout=0.3)


def test_resolve_rejects_what_cannot_be_asked():
    with pytest.raises(ConfigError):
        resolve(resolver="resolver.example:53", name="www.example.", rdtype="A", timeout=1)
    with pytest.raises(ConfigError):
        resolve(resolver="127.0.0.1:5353", name="www.example.", rdtype="NOPE", timeout=1)


@pytest.mark.named
def test_dns_resolve_check_passes_on_the_expected_set(named_server):
    (check,) = declared({"type": "dns_resolve", "resolver": named_server.primary, "name": "www.demo.test.",
                         "rdtype": "A", "expect": ["192.0.2.11", "192.0.2.10"], "timeout": 2})
    outcome = run_declared(check)
    assert outcome.ok, outcome.detail
    assert outcome.name == f"dns_resolve www.demo.test. A @{named_server.primary}"
    assert outcome.detail == "answered 192.0.2.10, 192.0.2.11"


@pytest.mark.named
def test_dns_resolve_check_names_the_missing_and_unexpected_answers(named_server):
    (check,) = declared({"type": "dns_resolve", "resolver": named_server.primary, "name": "www.demo.test.",
                         "expect": ["192.0.2.10", "192.0.2.99"], "timeout": 2})
    outcome = run_declared(check)
    assert not outcome.ok
    assert outcome.detail == (
        "expected 192.0.2.10, 192.0.2.99, got 192.0.2.10, 192.0.2.11; missing 192.0.2.99; unexpected 192.0.2.11"
    )


@pytest.mark.named
def test_dns_resolve_check_compares_canonical_names(named_server):
    (check,) = declared({"type": "dns_resolve", "resolver": named_server.primary, "name": "alias.demo.test.",
                         "rdtype": "cname", "expect": ["WWW.Demo.Test."], "timeout": 2})
    assert run_declared(check).ok


@pytest.mark.named
def test_dns_resolve_check_through_a_cname(named_server):
    (check,) = declared({"type": "dns_resolve", "resolver": named_server.primary, "name": "alias.demo.test.",
                         "rdtype": "A", "expect": ["192.0.2.10", "192.0.2.11"], "timeout": 2})
    assert run_declared(check).ok


@pytest.mark.named
def test_dns_resolve_check_fails_on_nxdomain_and_passes_when_absence_is_expected(named_server):
    base = {"type": "dns_resolve", "resolver": named_server.primary, "name": "nothing.demo.test.", "timeout": 2}
    (present, absent) = declared({**base, "expect": ["192.0.2.10"]}, {**base, "expect": []})
    outcome = run_declared(present)
    assert not outcome.ok
    assert outcome.detail == "expected 192.0.2.10, got NXDOMAIN"
    assert run_declared(absent).ok


@pytest.mark.named
def test_dns_resolve_check_rejects_an_unparsable_expect_value(named_server):
    (check,) = declared({"type": "dns_resolve", "resolver": named_server.primary, "name": "www.demo.test.",
                         "expect": ["192.0.2.10", "not-an-address"], "timeout": 2})
    outcome = run_declared(check)
    assert not outcome.ok
    assert outcome.detail.startswith("expect value 'not-an-address' is not valid A data")


def test_dns_resolve_check_reports_a_resolver_error(failing_resolver):
    resolver, rcode = failing_resolver
    (check,) = declared({"type": "dns_resolve", "resolver": resolver, "name": "www.example.",
                         "expect": ["192.0.2.1"], "timeout": 2})
    outcome = run_declared(check)
    assert not outcome.ok
    assert rcode in outcome.detail


# ---------------------------------------------------------------------------
# verify


@pytest.mark.named
def test_verify_fails_before_the_apply_and_passes_after(adapter, fresh_zone):
    plan = plan_for(adapter, WWW_99)
    (before,) = run_verify(adapter, plan)
    assert before.name == f"verify ns {adapter.config['primary']}"
    assert before.kind == "verify"
    assert not before.ok
    assert before.detail == (
        f"www.{fresh_zone}. A: expected ttl 300 [192.0.2.99], got ttl 300 [192.0.2.10, 192.0.2.11]"
    )
    assert adapter.apply(plan).applied
    (after,) = run_verify(adapter, plan)
    assert after.ok
    assert after.detail == "1 RRset(s) as planned"


@pytest.mark.named
def test_verify_expects_a_deleted_rrset_to_be_absent(adapter, fresh_zone):
    plan = plan_for(adapter, [{"op": "delete", "name": "api", "type": "A"}])
    (before,) = run_verify(adapter, plan)
    assert before.detail == f"api.{fresh_zone}. A: expected absent, got ttl 300 [192.0.2.20]"
    adapter.apply(plan)
    assert run_verify(adapter, plan)[0].ok


@pytest.mark.named
def test_verify_gives_one_outcome_per_nameserver(named_server, fresh_zone, closed_port):
    down = f"127.0.0.1:{closed_port}"
    adapter = adapter_for(named_server, fresh_zone, nameservers=[named_server.primary, down])
    try:
        plan = plan_for(adapter, WWW_99)
        adapter.apply(plan)
        up_outcome, down_outcome = run_verify(adapter, plan)
    finally:
        adapter.close()
    assert (up_outcome.name, up_outcome.ok) == (f"verify ns {named_server.primary}", True)
    assert (down_outcome.name, down_outcome.ok) == (f"verify ns {down}", False)
    assert down_outcome.detail.startswith("no answer: ConnectionRefusedError")


# ---------------------------------------------------------------------------
# a round


@pytest.mark.named
def test_a_round_lists_verify_first_then_declared_checks_in_input_order(adapter, named_server, web, closed_port):
    plan = plan_for(adapter, WWW_99)
    adapter.apply(plan)
    checks = declared(
        {"type": "http", "url": f"{web}/down"},
        {"type": "tcp", "host": "127.0.0.1", "port": closed_port},
        {"type": "dns_resolve", "resolver": named_server.primary, "name": "www.demo.test.",
         "expect": ["192.0.2.10", "192.0.2.11"]},
        {"type": "http", "url": f"{web}/ok"},
    )
    outcomes = run_round(adapter=adapter, plan=plan, checks=checks)
    assert [(o.kind, o.ok) for o in outcomes] == [
        ("verify", True), ("http", False), ("tcp", False), ("dns_resolve", True), ("http", True),
    ]
    assert [o.name for o in outcomes[1:]] == [
        f"http {web}/down", f"tcp 127.0.0.1:{closed_port}",
        f"dns_resolve www.demo.test. A @{named_server.primary}", f"http {web}/ok",
    ]


def test_a_round_runs_declared_checks_concurrently(web, web_handler):
    # /together answers 200 only once all three requests wait at the barrier at the
    # same time; checks run one after another would each see 503.
    web_handler.barrier = threading.Barrier(3, timeout=5)
    checks = declared(*[{"type": "http", "url": f"{web}/together", "timeout": 2}] * 3)
    outcomes = run_round(adapter=None, plan=None, checks=checks)
    assert [o.ok for o in outcomes] == [True, True, True], [o.detail for o in outcomes]


def test_a_round_without_checks_is_empty():
    assert run_round(adapter=None, plan=None, checks=[]) == []


def test_a_check_still_running_at_the_round_deadline_is_a_failed_outcome(web, tcp_listener):
    # The listener accepts and never answers: the http check would wait its full 2 s
    # timeout; the round ends at its 0.3 s deadline without it.
    hanging, fast = declared({"type": "http", "url": f"http://127.0.0.1:{tcp_listener}/", "timeout": 2},
                             {"type": "http", "url": f"{web}/ok"})
    late, ok = run_round(adapter=None, plan=None, checks=[hanging, fast], deadline=0.3)
    assert (late.name, late.kind, late.ok) == (f"http http://127.0.0.1:{tcp_listener}/", "http", False)
    assert late.detail == f"{ROUND_TIMED_OUT} (0.3s)"
    assert late.duration_ms == 300
    assert ok.ok


@pytest.mark.named
def test_a_verify_still_running_at_the_round_deadline_is_a_failed_outcome(named_server, fresh_zone, tcp_listener):
    adapter = adapter_for(named_server, fresh_zone, nameservers=[f"127.0.0.1:{tcp_listener}"])
    try:
        plan = plan_for(adapter, WWW_99)
        (late,) = run_round(adapter=adapter, plan=plan, checks=[], deadline=0.3)
    finally:
        adapter.close()
    assert (late.name, late.kind, late.ok) == (f"verify {fresh_zone}.", "verify", False)
    assert late.detail.startswith(ROUND_TIMED_OUT)


def test_a_round_defaults_to_the_configured_deadline(settings, tcp_listener):
    settings.CHANGEGATE_CHECK_ROUND_SECONDS = 0.3
    (late,) = run_round(adapter=None, plan=None, checks=[
        {"type": "http", "url": f"http://127.0.0.1:{tcp_listener}/", "timeout": 2}])
    assert late.detail == f"{ROUND_TIMED_OUT} (0.3s)"
    assert BakePolicy(bake_seconds=0).round_deadline == 0.3


def test_the_bake_counts_rounds_that_timed_out_as_failed(tcp_listener):
    checks = declared({"type": "http", "url": f"http://127.0.0.1:{tcp_listener}/", "timeout": 2})
    clock, rounds = FakeClock(), []
    result = bake(adapter=None, plan=None, checks=checks,
                  policy=BakePolicy(bake_seconds=0, round_deadline=0.2), clock=clock, sleep=clock.sleep,
                  on_round=lambda n, outcomes: rounds.append([o.detail for o in outcomes]))
    assert not result.ok and result.rounds == 2
    assert rounds == [[f"{ROUND_TIMED_OUT} (0.2s)"]] * 2
    assert [o.detail for o in result.failed] == [f"{ROUND_TIMED_OUT} (0.2s)"]


# ---------------------------------------------------------------------------
# validation against the round deadline


def fields(exc_info) -> dict[str, str]:
    return {e["field"]: e["message"] for e in exc_info.value.errors}


def test_a_timeout_above_the_round_deadline_is_refused_naming_the_limit(settings):
    from changes.errors import ValidationFailed

    settings.CHANGEGATE_CHECK_ROUND_SECONDS = 30
    tcp = {"type": "tcp", "host": "127.0.0.1", "port": 443}
    assert declared({**tcp, "timeout": 30})[0]["timeout"] == 30
    with pytest.raises(ValidationFailed) as caught:
        declared({**tcp, "timeout": 5}, {**tcp, "timeout": 30.5})
    assert list(fields(caught)) == ["health_checks[1].timeout"]
    assert "(0, 30]" in fields(caught)["health_checks[1].timeout"]
    assert "CHANGEGATE_CHECK_ROUND_SECONDS" in fields(caught)["health_checks[1].timeout"]


def test_a_check_without_timeout_takes_the_default(settings):
    from changes.errors import ValidationFailed

    assert declared({"type": "tcp", "host": "h", "port": 1})[0]["timeout"] == 2
    settings.CHANGEGATE_CHECK_ROUND_SECONDS = 1  # a default that no longer fits is refused too
    with pytest.raises(ValidationFailed) as caught:
        declared({"type": "tcp", "host": "h", "port": 1})
    assert list(fields(caught)) == ["health_checks[0].timeout"]


def test_more_checks_than_a_set_may_hold_are_refused():
    from changes.errors import ValidationFailed
    from pipeline.check_specs import MAX_CHECKS

    tcp = {"type": "tcp", "host": "h", "port": 1, "timeout": 1}
    assert len(declared(*[tcp] * MAX_CHECKS)) == MAX_CHECKS
    with pytest.raises(ValidationFailed) as caught:
        declared(*[tcp] * (MAX_CHECKS + 1))
    assert list(fields(caught)) == ["health_checks"]


# ---------------------------------------------------------------------------
# the bake


def test_bake_policy_defaults():
    assert BakePolicy(bake_seconds=60).interval == 5
    assert BakePolicy(bake_seconds=10).interval == 2
    assert BakePolicy(bake_seconds=0).interval == 0.2
    assert BakePolicy(bake_seconds=10).failure_threshold == DEFAULT_FAILURE_THRESHOLD == 2
    assert BakePolicy(bake_seconds=10, interval=1, failure_threshold=3).interval == 1
    for bad in ({"bake_seconds": -1}, {"bake_seconds": 1, "interval": 0}, {"bake_seconds": 1, "failure_threshold": 0}):
        with pytest.raises(ValueError):
            BakePolicy(**bad)


@pytest.mark.named
def test_bake_fails_after_exactly_threshold_failed_rounds(adapter, closed_port, tcp_listener):
    plan = plan_for(adapter, WWW_99)
    adapter.apply(plan)
    checks = declared({"type": "tcp", "host": "127.0.0.1", "port": tcp_listener},
                      {"type": "tcp", "host": "127.0.0.1", "port": closed_port})
    clock, rounds = FakeClock(), []
    result = bake(adapter=adapter, plan=plan, checks=checks,
                  policy=BakePolicy(bake_seconds=60, interval=5, failure_threshold=2),
                  clock=clock, sleep=clock.sleep, on_round=lambda n, outcomes: rounds.append((n, outcomes)))
    assert not result.ok
    assert result.rounds == 2
    assert [o.name for o in result.failed] == [f"tcp 127.0.0.1:{closed_port}"]
    assert clock.sleeps == [5]  # returned at once after the second failure
    assert [n for n, _ in rounds] == [1, 2]
    assert [[o.ok for o in outcomes] for _, outcomes in rounds] == [[True, True, False]] * 2


def test_bake_with_zero_seconds_runs_exactly_one_round(tcp_listener):
    checks = declared({"type": "tcp", "host": "127.0.0.1", "port": tcp_listener})
    clock, rounds = FakeClock(), []
    result = bake(adapter=None, plan=None, checks=checks, policy=BakePolicy(bake_seconds=0),
                  clock=clock, sleep=clock.sleep, on_round=lambda n, outcomes: rounds.append(n))
    assert result == BakeResult(ok=True, rounds=1, failed=[])
    assert rounds == [1]
    assert clock.sleeps == []


@pytest.mark.named
def test_a_passing_bake_runs_a_round_every_interval_until_the_time_is_up(adapter, tcp_listener):
    plan = plan_for(adapter, WWW_99)
    adapter.apply(plan)
    checks = declared({"type": "tcp", "host": "127.0.0.1", "port": tcp_listener})
    clock = FakeClock()
    result = bake(adapter=adapter, plan=plan, checks=checks, policy=BakePolicy(bake_seconds=10, interval=5),
                  clock=clock, sleep=clock.sleep)
    assert result == BakeResult(ok=True, rounds=3)  # at 0, 5 and 10 seconds
    assert clock.sleeps == [5, 5]


def test_bake_forgives_a_failure_that_does_not_repeat(web):
    checks = declared({"type": "http", "url": f"{web}/flap"})  # 503 once, then 200
    clock, rounds = FakeClock(), []
    result = bake(adapter=None, plan=None, checks=checks, policy=BakePolicy(bake_seconds=10, interval=5),
                  clock=clock, sleep=clock.sleep, on_round=lambda n, outcomes: rounds.append(outcomes[0].ok))
    assert result.ok
    assert rounds == [False, True, True]


def test_bake_does_not_forgive_a_failure_in_its_last_round(closed_port):
    checks = declared({"type": "tcp", "host": "127.0.0.1", "port": closed_port})
    clock = FakeClock()
    result = bake(adapter=None, plan=None, checks=checks, policy=BakePolicy(bake_seconds=0, failure_threshold=2),
                  clock=clock, sleep=clock.sleep)
    assert not result.ok
    assert result.rounds == 2
    assert clock.sleeps == [pytest.approx(0.2)]


def test_check_outcome_serializes_to_json():
    outcome = CheckOutcome(name="tcp 127.0.0.1:1", kind="tcp", ok=False, detail="refused", duration_ms=1.5)
    assert outcome.to_json() == {"name": "tcp 127.0.0.1:1", "kind": "tcp", "ok": False, "detail": "refused",
                                 "duration_ms": 1.5}
    assert BakeResult(ok=False, rounds=2, failed=[outcome]).to_json() == {
        "ok": False, "rounds": 2, "failed": [outcome.to_json()],
    }
