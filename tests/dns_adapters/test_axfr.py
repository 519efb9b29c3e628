"""read_zone_axfr against a real named: same data as dnspython's from_xfr, the
value form the planner uses, TSIG enforced on every message, errors classified."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.name
import dns.query
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.zone
import pytest

from dns_adapters import axfr
from dns_adapters.axfr import WireZoneSnapshot, read_zone_axfr
from dns_adapters.base import ConfigError, RRKey, RRValue, TransientError
from dns_adapters.local_named import LocalNamed, default_zone_text, free_port, write_key_file
from tests.conftest import require_named

pytestmark = pytest.mark.named

MIXED = "mixed.test"
MIXED_ORIGIN = dns.name.from_text(MIXED)
BIG = "big.test"
BIG_COUNT = 6000  # several AXFR messages, so multi-message TSIG is exercised

# (owner relative to the zone, type, ttl, rdatas as written in the zone file)
MIXED_RECORDS: list[tuple[str, str, int, list[str]]] = [
    ("www", "A", 300, ["192.0.2.10", "192.0.2.11"]),
    ("WWW2", "A", 300, ["192.0.2.12"]),
    ("Mixed.Case", "AAAA", 600, ["2001:db8::1", "2001:DB8::2"]),
    ("@", "MX", 300, ["10 Mail", "20 mx2.Example.NET."]),
    ("mail", "A", 300, ["192.0.2.25"]),
    ("sub", "NS", 3600, ["ns.sub", "NS2.Elsewhere.example."]),
    ("ns.sub", "A", 3600, ["192.0.2.53"]),
    ("alias", "CNAME", 300, ["WWW"]),
    ("offsite", "CNAME", 300, ["Target.Example.COM."]),
    ("txt", "TXT", 300, ['"v=spf1 -all"', '"hello world" "say \\"hi\\"; (ok)"', '"semi;colon" "back\\\\slash"']),
    ("_sip._tcp", "SRV", 300, ["10 60 5060 SipServer", "20 0 5061 sip2.example.org."]),
    ("@", "CAA", 300, ['0 issue "letsencrypt.org"', '128 iodef "mailto:security@mixed.test"']),
    ("*.wild", "A", 300, ["192.0.2.99"]),
    ("ptr", "PTR", 300, ["Host.Example."]),
    ("hinfo", "HINFO", 300, ['"PC Intel" "Linux"']),
    ("dname", "DNAME", 300, ["Other.Example."]),
    ("naptr", "NAPTR", 300, ['100 10 "U" "E2U+sip" "!^.*$!sip:info@example.com!" .']),
    ("ssh", "SSHFP", 300, ["1 1 0123456789abcdef0123456789abcdef01234567"]),
    ("_443._tcp.www", "TLSA", 300, ["3 1 1 0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"]),
    ("loc", "LOC", 300, ["52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m"]),
    ("kx", "KX", 300, ["10 Mail"]),
    ("rt", "RT", 300, ["10 Relay.Example."]),
    ("afsdb", "AFSDB", 300, ["1 AFS.Example."]),
    ("a\\.b", "TXT", 300, ['"escaped dot in the owner"']),  # check-names forbids it for A
    ("generic", "TYPE65280", 300, ["\\# 3 abcdef"]),
]


def _zone_file_lines(records: list[tuple[str, str, int, list[str]]]) -> str:
    return "".join(f"{owner} {ttl} IN {rdtype} {text}\n" for owner, rdtype, ttl, texts in records for text in texts)


def canonical(rdtype: str, text: str, origin: dns.name.Name) -> str:
    """The planner's value form: canonical wire (names lower-cased) back to text."""
    rd = dns.rdata.from_text(dns.rdataclass.IN, rdtype, text, origin=origin, relativize=False)
    wire = rd.to_digestable()
    return dns.rdata.from_wire(dns.rdataclass.IN, rd.rdtype, wire, 0, len(wire)).to_text()


def keyed_from_xfr(server: LocalNamed, zone: str, keyring: dict) -> dict[RRKey, RRValue]:
    """dnspython's own transfer, in the keyed form (owner lower-cased, canonical rdata)."""
    xfr = dns.query.xfr("127.0.0.1", zone, port=server.port, keyring=keyring, relativize=False, timeout=10)
    parsed = dns.zone.from_xfr(xfr, relativize=False)
    out: dict[RRKey, RRValue] = {}
    for name, rdataset in parsed.iterate_rdatasets():
        key = RRKey(name.to_text().lower(), dns.rdatatype.to_text(rdataset.rdtype))
        texts = {
            dns.rdata.from_wire(dns.rdataclass.IN, rd.rdtype, w, 0, len(w)).to_text()
            for rd in rdataset
            for w in [rd.to_digestable()]
        }
        assert key not in out
        out[key] = RRValue(rdataset.ttl, tuple(sorted(texts)))
    return out


@pytest.fixture(scope="module")
def server() -> Iterator[LocalNamed]:
    require_named()
    big_records = "".join(
        f"host-{i} 300 IN A 198.51.{i // 250 % 250}.{i % 250}\n"
        + (f'host-{i} 300 IN TXT "record {i} of the big zone"\n' if i % 7 == 0 else "")
        + (f"alias-{i} 300 IN CNAME host-{i}\n" if i % 11 == 0 else "")
        for i in range(BIG_COUNT)
    )
    zones = {
        MIXED: default_zone_text(MIXED, _zone_file_lines(MIXED_RECORDS)),
        BIG: default_zone_text(BIG, big_records),
    }
    named = LocalNamed(zones, extra_keys=["intruder-key"])
    named.start()
    yield named
    named.stop()


@pytest.fixture(scope="module")
def keyring(server: LocalNamed) -> dict:
    return dns.tsigkeyring.from_file(str(server.key_file))


def read(server: LocalNamed, zone: str, keyring: dict | dns.tsig.Key, *, port: int | None = None, timeout: float = 5.0):
    keyname = None if isinstance(keyring, dns.tsig.Key) else next(iter(keyring))
    return read_zone_axfr(
        host="127.0.0.1", port=port or server.port, zone=zone, keyring=keyring, keyname=keyname, timeout=timeout
    )


# ---------------------------------------------------------------------------
# Data


@pytest.mark.parametrize("zone", [MIXED, BIG])
def test_snapshot_equals_dnspython_from_xfr(server: LocalNamed, keyring: dict, zone: str) -> None:
    snapshot = read(server, zone, keyring)
    expected = keyed_from_xfr(server, zone, keyring)
    assert isinstance(snapshot, WireZoneSnapshot)
    assert snapshot.zone == zone + "."
    assert len(snapshot) == len(expected)
    assert set(snapshot) == set(expected)
    assert dict(snapshot.items()) == expected
    for key, value in expected.items():
        assert snapshot.matches(key, value), key


def test_values_are_the_planner_form(server: LocalNamed, keyring: dict) -> None:
    """get() gives exactly what the planner builds from the same zone-file text."""
    snapshot = read(server, MIXED, keyring)
    for owner, rdtype, ttl, texts in MIXED_RECORDS:
        key = RRKey(dns.name.from_text(owner, MIXED_ORIGIN).to_text().lower(), rdtype)
        expected = RRValue(ttl, tuple(sorted({canonical(rdtype, t, MIXED_ORIGIN) for t in texts})))
        assert snapshot.get(key) == expected, key
        assert snapshot.matches(key, expected), key
    assert snapshot.get(RRKey("alias.mixed.test.", "CNAME")) == RRValue(300, ("www.mixed.test.",))
    assert snapshot.get(RRKey("a\\.b.mixed.test.", "TXT")) == RRValue(300, ('"escaped dot in the owner"',))
    assert snapshot.get(RRKey("www2.mixed.test.", "A")) is not None
    assert snapshot.get(RRKey("WWW2.mixed.test.", "A")) is None  # keys are lower-case


def test_values_equal_the_planners_own_function(server: LocalNamed, keyring: dict) -> None:
    planning = pytest.importorskip("dns_adapters.planning")
    snapshot = read(server, MIXED, keyring)
    for owner, rdtype, ttl, texts in MIXED_RECORDS:
        key = RRKey(dns.name.from_text(owner, MIXED_ORIGIN).to_text().lower(), rdtype)
        rdatas = [dns.rdata.from_text("IN", rdtype, t, origin=MIXED_ORIGIN, relativize=False) for t in texts]
        assert snapshot.get(key) == planning.rrvalue(ttl, rdatas), key


def test_soa_once_and_serial(server: LocalNamed, keyring: dict) -> None:
    snapshot = read(server, MIXED, keyring)
    soa_keys = [key for key in snapshot if key.rdtype == "SOA"]
    assert soa_keys == [RRKey("mixed.test.", "SOA")]
    soa = snapshot.get(soa_keys[0])
    assert soa is not None and len(soa.rdatas) == 1
    assert snapshot.serial == int(soa.rdatas[0].split()[2]) == 1


def test_keyring_may_be_a_single_key(server: LocalNamed, keyring: dict) -> None:
    key = next(iter(keyring.values()))
    assert len(read(server, MIXED, key)) == len(read(server, MIXED, keyring))


def test_big_zone_spans_many_signed_messages(
    server: LocalNamed, keyring: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 0
    original = axfr._Reader.message

    def counting(self: axfr._Reader) -> bytes:
        nonlocal count
        count += 1
        return original(self)

    monkeypatch.setattr(axfr._Reader, "message", counting)
    snapshot = read(server, BIG, keyring)
    assert count > 3
    assert snapshot.get(RRKey("host-5999.big.test.", "A")) == RRValue(300, ("198.51.23.249",))
    assert snapshot.get(RRKey("alias-11.big.test.", "CNAME")) == RRValue(300, ("host-11.big.test.",))


def test_matches_agrees_with_get(server: LocalNamed, keyring: dict) -> None:
    snapshot = read(server, MIXED, keyring)
    www = RRKey("www.mixed.test.", "A")
    live = snapshot.get(www)
    assert live == RRValue(300, ("192.0.2.10", "192.0.2.11"))
    assert snapshot.matches(www, live)
    assert not snapshot.matches(www, RRValue(301, live.rdatas))
    assert not snapshot.matches(www, RRValue(300, ("192.0.2.10",)))
    assert not snapshot.matches(www, RRValue(300, ("192.0.2.10", "192.0.2.11", "192.0.2.12")))
    assert not snapshot.matches(www, None)
    assert not snapshot.matches(www, RRValue(300, ("not an address",)))
    absent = RRKey("nope.mixed.test.", "A")
    assert snapshot.matches(absent, None)
    assert not snapshot.matches(absent, RRValue(300, ("192.0.2.1",)))
    # Names inside rdata compare canonically, exactly as get() reports them.
    offsite = RRKey("offsite.mixed.test.", "CNAME")
    assert snapshot.get(offsite) == RRValue(300, ("target.example.com.",))
    assert snapshot.matches(offsite, RRValue(300, ("target.example.com.",)))
    assert not snapshot.matches(offsite, RRValue(300, ("other.example.com.",)))
    for key in snapshot:
        assert snapshot.matches(key, snapshot.get(key)), key


def test_any_guard_means_name_not_in_use(server: LocalNamed, keyring: dict) -> None:
    snapshot = read(server, MIXED, keyring)
    assert not snapshot.matches(RRKey("www.mixed.test.", "ANY"), None)
    assert not snapshot.matches(RRKey("mixed.test.", "ANY"), None)
    assert snapshot.matches(RRKey("free.mixed.test.", "ANY"), None)
    assert snapshot.has_name("alias.mixed.test.") and not snapshot.has_name("free.mixed.test.")


# ---------------------------------------------------------------------------
# Refusals and failures


def test_key_not_allowed_to_transfer_is_refused(server: LocalNamed) -> None:
    intruder = dns.tsigkeyring.from_file(str(server.extra_key_file("intruder-key")))
    with pytest.raises(ConfigError) as info:
        read(server, MIXED, intruder)
    assert "REFUSED" in info.value.message or "NOTAUTH" in info.value.message
    assert server.extra_keys["intruder-key"] not in info.value.message


def test_wrong_secret_is_refused(server: LocalNamed, tmp_path: Path) -> None:
    path = tmp_path / "wrong.key"
    wrong_secret = "c2VjcmV0LXRoYXQtaXMtbm90LXRoZS1yZWFsLW9uZS0xMjM0NTY="
    write_key_file(path, server.key_name, wrong_secret)
    with pytest.raises(ConfigError) as info:
        read(server, MIXED, dns.tsigkeyring.from_file(str(path)))
    assert "BADSIG" in info.value.message
    assert wrong_secret not in info.value.message and server.secret not in info.value.message


def test_unknown_key_name_is_refused(server: LocalNamed) -> None:
    key = dns.tsig.Key("no-such-key.", server.secret)
    with pytest.raises(ConfigError) as info:
        read(server, MIXED, key)
    assert "BADKEY" in info.value.message
    assert server.secret not in info.value.message


def test_zone_not_served_is_a_config_error(server: LocalNamed, keyring: dict) -> None:
    with pytest.raises(ConfigError) as info:
        read(server, "not-served.test", keyring)
    assert "not-served.test" in info.value.message


def test_unreachable_port_is_transient(keyring: dict, server: LocalNamed) -> None:
    with pytest.raises(TransientError):
        read(server, MIXED, keyring, port=free_port(), timeout=2)


def test_silent_server_times_out_as_transient(server: LocalNamed, keyring: dict) -> None:
    with socket.socket() as listener:  # the kernel accepts; nobody ever answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with pytest.raises(TransientError) as info:
            read(server, MIXED, keyring, port=listener.getsockname()[1], timeout=0.5)
    assert "timed out" in info.value.message


# ---------------------------------------------------------------------------
# Tampering: a loopback proxy between reader and named rewrites responses.

Mutator = Callable[[int, bytes], "bytes | None"]  # (message index, wire) -> wire to send, None = hang up


class TamperingProxy:
    def __init__(self, upstream_port: int, mutate: Mutator) -> None:
        self.upstream_port = upstream_port
        self.mutate = mutate
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def _read_exact(sock: socket.socket, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _read_message(self, sock: socket.socket) -> bytes:
        (length,) = struct.unpack("!H", self._read_exact(sock, 2))
        return self._read_exact(sock, length)

    def _run(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        with client, socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
            upstream.settimeout(0.2)
            query = self._read_message(client)
            upstream.sendall(struct.pack("!H", len(query)) + query)
            index = 0
            while not self.stop.is_set():
                try:
                    wire = self._read_message(upstream)
                except TimeoutError:
                    continue
                except (EOFError, OSError):
                    return
                out = self.mutate(index, wire)
                index += 1
                if out is None:
                    return
                try:
                    client.sendall(struct.pack("!H", len(out)) + out)
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.thread.join(timeout=5)


def strip_tsig(wire: bytes, key_name: str) -> bytes:
    marker = dns.name.from_text(key_name).to_wire() + struct.pack("!HH", 250, 255)
    start = wire.rfind(marker)
    assert start > 0
    (arcount,) = struct.unpack_from("!H", wire, 10)
    return wire[:10] + struct.pack("!H", arcount - 1) + wire[12:start]


def flip_last_a_rdata_byte(wire: bytes) -> bytes:
    """Change the last octet of the last A record's address."""
    marker = struct.pack("!HH", 1, 1)  # type A, class IN
    pos = wire.rfind(marker)
    assert pos > 0
    last = pos + 4 + 4 + 2 + 3  # type+class, ttl, rdlength, then the 4th address byte
    return wire[:last] + bytes([wire[last] ^ 0x01]) + wire[last + 1 :]


def flip_first_answer_ttl(wire: bytes) -> bytes:
    (qdcount,) = struct.unpack_from("!H", wire, 4)
    pos = 12
    for _ in range(qdcount):
        pos = axfr._name_end_fast(wire, pos) + 4
    ttl_low = axfr._name_end_fast(wire, pos) + 4 + 3
    return wire[:ttl_low] + bytes([wire[ttl_low] ^ 0x01]) + wire[ttl_low + 1 :]


@pytest.fixture
def proxy(server: LocalNamed) -> Iterator[Callable[[Mutator], TamperingProxy]]:
    made: list[TamperingProxy] = []

    def make(mutate: Mutator) -> TamperingProxy:
        made.append(TamperingProxy(server.port, mutate))
        return made[-1]

    yield make
    for item in made:
        item.close()


def test_untouched_proxy_passes(server: LocalNamed, keyring: dict, proxy) -> None:
    relay = proxy(lambda index, wire: wire)
    assert len(read(server, BIG, keyring, port=relay.port)) == len(read(server, BIG, keyring))


@pytest.mark.parametrize(("target", "alter"), [(0, flip_first_answer_ttl), (2, flip_last_a_rdata_byte)])
def test_altered_record_fails_tsig(server: LocalNamed, keyring: dict, proxy, target: int, alter) -> None:
    relay = proxy(lambda index, wire: alter(wire) if index == target else wire)
    with pytest.raises(ConfigError) as info:
        read(server, BIG, keyring, port=relay.port)
    assert "does not verify" in info.value.message


def test_unsigned_response_is_refused(server: LocalNamed, keyring: dict, proxy) -> None:
    relay = proxy(lambda index, wire: strip_tsig(wire, server.key_name))
    with pytest.raises(ConfigError) as info:
        read(server, MIXED, keyring, port=relay.port)
    assert "not TSIG-signed" in info.value.message


def test_unsigned_last_message_is_refused(server: LocalNamed, keyring: dict, proxy) -> None:
    relay = proxy(lambda index, wire: wire if index == 0 else strip_tsig(wire, server.key_name))
    with pytest.raises(ConfigError) as info:
        read(server, BIG, keyring, port=relay.port)
    assert "last message is not TSIG-signed" in info.value.message


def test_stripped_middle_signature_fails(server: LocalNamed, keyring: dict, proxy) -> None:
    relay = proxy(lambda index, wire: strip_tsig(wire, server.key_name) if index == 1 else wire)
    with pytest.raises(ConfigError) as info:
        read(server, BIG, keyring, port=relay.port)
    assert "does not verify" in info.value.message


def test_connection_dropped_mid_transfer_is_transient(server: LocalNamed, keyring: dict, proxy) -> None:
    relay = proxy(lambda index, wire: wire if index < 2 else None)
    with pytest.raises(TransientError) as info:
        read(server, BIG, keyring, port=relay.port)
    assert "closed" in info.value.message


def test_bad_keyring_argument_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        read_zone_axfr(host="127.0.0.1", port=1, zone=MIXED, keyring={}, keyname=None, timeout=1)
    with pytest.raises(ConfigError):
        read_zone_axfr(
            host="127.0.0.1",
            port=1,
            zone=MIXED,
            keyring={dns.name.from_text("a."): dns.tsig.Key("a.", "c2VjcmV0")},
            keyname=dns.name.from_text("b."),
            timeout=1,
        )


def test_read_name_rejects_pointer_loops() -> None:
    wire = b"\x00" * 12 + b"\x03abc\xc0\x0c"  # points back at itself
    with pytest.raises(axfr._Malformed):
        axfr._read_name(wire, 12, {})
    with pytest.raises(axfr._Malformed):
        axfr._read_name(b"\x00" * 12 + b"\xc0\x0c", 12, {})


def test_read_name_escapes_like_dnspython() -> None:
    labels = [b"A.b", b'q"(x)@$;\\', bytes([0, 32, 127, 200]), b"Www", b"test"]
    wire = b"\x00" * 12 + dns.name.Name([*labels, b""]).to_wire()
    text, length, end = axfr._read_name(wire, 12, {})
    name = dns.name.from_wire(wire, 12)[0]
    assert text == name.to_text().lower() and end == len(wire) and length == len(name.to_wire())
    assert dns.name.from_text(text) == name


def test_read_name_wire_is_dnspython_canonical_form() -> None:
    first = dns.name.from_text("Mail.Example.ORG.")
    wire = b"\x00" * 12 + first.to_wire() + b"\x03WwW\xc0\x11"  # "WwW" + pointer to "Example.ORG."
    cache: dict[int, bytes] = {}
    assert axfr._read_name_wire(wire, 12, cache) == (first.canonicalize().to_wire(), 12 + len(first.to_wire()))
    second_at = 12 + len(first.to_wire())
    expected = dns.name.from_text("www.example.org.").to_wire()
    assert axfr._read_name_wire(wire, second_at, cache) == (expected, len(wire))
    with pytest.raises(axfr._Malformed):
        axfr._read_name_wire(b"\x00" * 12 + b"\x01a\xc0\x0c", 12, {})
