"""A fast whole-zone reader: AXFR over TCP with TSIG, parsed minimally.

`dns.zone.from_xfr(dns.query.xfr(...))` builds a full dnspython object graph
(Name, Rdata, Rdataset, Node per record) and is slow and memory hungry for large
zones. `read_zone_axfr` does the transfer on a plain socket and walks the wire
itself: owner names are decoded once per message offset (compression pointers
are cached), records are grouped by (owner, type), and rdata is kept as canonical wire
bytes. Only rdata that may carry domain names (and so may be compressed or need
case folding) is run through dnspython; everything else is sliced from the buffer.
Presentation text (`RRValue`) is produced lazily by `get()`.

Security: the diff reviewers approve is built from this snapshot, so every
response message is checked: same id, QR, opcode QUERY, question (when present),
NOERROR, and TSIG. The first and the last message must be TSIG-signed and verify
with dnspython's `dns.tsig.validate` in multi-message mode (RFC 8945 section 5.3.1);
intermediate messages may be unsigned (servers such as NSD sign every Nth one),
but are folded into the running digest, which the next signed message proves, and
more than 99 unsigned messages in a row are refused. Nothing is returned before
the closing SOA arrived in a verified message.

Value form
----------
Keys are `RRKey("www.demo.test.", "A")` (absolute, lower-case owner). `get()`
returns `RRValue(ttl, rdatas)`, rdatas being the sorted, de-duplicated
presentation text of each rdata's canonical wire form (RFC 4034 section 6.2:
names inside rdata lower-cased, absolute), the same strings as
`dns_adapters.planning.canonical_rdata` gives for a targeted read or for
user input. The snapshot stores exactly that canonical wire
(`Rdata.to_digestable()`; for name-free types the wire as received, which is
the same bytes). The RRset TTL is the smallest TTL among its records (as
dnspython does). `matches(key, value)` equals `get(key) == value` for a
normalized value, but it only encodes `value`; the snapshot is not parsed.
A guard key `RRKey(name, "ANY")` with value None matches when no RRset is owned
by `name` (RFC 2136 "name is not in use").
RRSIGs of all covered types share one key (`RRKey(name, "RRSIG")`), as the
keyed model has no `covers`.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator, Mapping
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig

from .base import ANY, ConfigError, RRKey, RRValue, TransientError, ZoneSnapshot

__all__ = ["WireZoneSnapshot", "read_zone_axfr"]

_IN = 1
_SOA = 6
_OPT = 41
_TSIG = 250
_AXFR = 252
_QR = 0x8000
_TC = 0x0200
_MAX_UNSIGNED_RUN = 99  # RFC 8945 section 5.3.1

# Types whose rdata contains no domain name: the received wire already is the
# canonical form (`to_digestable()`), so it is kept as sliced. (Value: the exact
# rdlength required, or None.) Every other type is parsed by dnspython, which
# decompresses embedded names, and stored as `to_digestable()` (names lower-cased).
_RAW_TYPES: dict[int, int | None] = {
    1: 4,  # A
    28: 16,  # AAAA
    16: None,  # TXT
    99: None,  # SPF
    13: None,  # HINFO
    257: None,  # CAA
    43: None,  # DS
    59: None,  # CDS
    48: None,  # DNSKEY
    60: None,  # CDNSKEY
    44: None,  # SSHFP
    52: None,  # TLSA
    53: None,  # SMIMEA
    61: None,  # OPENPGPKEY
    49: None,  # DHCID
    51: None,  # NSEC3PARAM
    63: None,  # ZONEMD
    256: None,  # URI
}

# Types whose rdata is a fixed-size prefix and one domain name: decoded here
# (decompressed, lower-cased) without dnspython. (Value: prefix length.) This is
# what `to_digestable()` gives for them; the tests hold that equal to dnspython.
_PREFIX_NAME_TYPES: dict[int, int] = {
    2: 0,  # NS
    5: 0,  # CNAME
    12: 0,  # PTR
    39: 0,  # DNAME
    15: 2,  # MX
    36: 2,  # KX
    21: 2,  # RT
    18: 2,  # AFSDB
    33: 6,  # SRV
}

# Label bytes that appear verbatim in presentation form (dns.name._escapify).
_PLAIN = bytes(c for c in range(0x21, 0x7F) if c not in b'"().;\\@$')

_unpack_header = struct.Struct("!HHHHHH").unpack_from
_unpack_rr = struct.Struct("!HHIH").unpack_from
_unpack_h = struct.Struct("!H").unpack_from


class _Malformed(Exception):
    """A protocol violation in a response (turned into ConfigError by the caller)."""


def _escape_label(label: bytes) -> str:
    if not label.translate(None, _PLAIN):
        return label.decode("ascii")
    out = []
    for c in label:
        if c in b'"().;\\@$':
            out.append("\\" + chr(c))
        elif 0x20 < c < 0x7F:
            out.append(chr(c))
        else:
            out.append(f"\\{c:03d}")
    return "".join(out)


def _read_name(wire: bytes, pos: int, cache: dict[int, tuple[str, int]]) -> tuple[str, int, int]:
    """Decode the (possibly compressed) name at `pos` to lower-case presentation
    text. Returns (text, wire length of the uncompressed name, position after the
    name). `cache` maps a message offset where a label starts -> (text, wire
    length) of the name from there on; every label decoded is added to it."""
    c = wire[pos]
    if c >= 0xC0:  # fast path: a pointer to a name decoded before
        target = ((c & 0x3F) << 8) | wire[pos + 1]
        hit = cache.get(target)
        if hit is not None and target < pos:
            return hit[0], hit[1], pos + 2
    labels: list[tuple[int, bytes]] = []
    end = -1
    floor = pos  # every pointer must go strictly backwards: no loops
    while True:
        c = wire[pos]
        if c >= 0xC0:
            if end < 0:
                end = pos + 2
            target = ((c & 0x3F) << 8) | wire[pos + 1]
            if target >= floor:
                raise _Malformed("bad compression pointer")
            floor = pos = target
            hit = cache.get(pos)
            if hit is not None:
                break
            continue
        if c == 0:
            if end < 0:
                end = pos + 1
            hit = (".", 1)
            break
        if c > 63:
            raise _Malformed("bad label type")
        nxt = pos + 1 + c
        if nxt >= len(wire):
            raise _Malformed("name runs past the message")
        labels.append((pos, wire[pos + 1 : nxt].lower()))
        pos = nxt
    suffix, slen = hit
    for start, label in reversed(labels):
        slen += len(label) + 1
        suffix = _escape_label(label) + ("." + suffix if slen > len(label) + 2 else ".")
        cache[start] = (suffix, slen)
    if slen > 255:
        raise _Malformed("name too long")
    return suffix, slen, end


def _read_name_wire(wire: bytes, pos: int, cache: dict[int, bytes]) -> tuple[bytes, int]:
    """The name at `pos` as canonical wire (uncompressed, lower-cased) and the
    position after it. `cache` maps label offsets -> canonical wire from there."""
    c = wire[pos]
    if c >= 0xC0:
        target = ((c & 0x3F) << 8) | wire[pos + 1]
        hit = cache.get(target)
        if hit is not None and target < pos:
            return hit, pos + 2
    labels: list[tuple[int, bytes]] = []
    end = -1
    floor = pos
    while True:
        c = wire[pos]
        if c >= 0xC0:
            if end < 0:
                end = pos + 2
            target = ((c & 0x3F) << 8) | wire[pos + 1]
            if target >= floor:
                raise _Malformed("bad compression pointer")
            floor = pos = target
            hit = cache.get(pos)
            if hit is not None:
                break
            continue
        if c == 0:
            if end < 0:
                end = pos + 1
            hit = b"\x00"
            break
        if c > 63:
            raise _Malformed("bad label type")
        nxt = pos + 1 + c
        if nxt >= len(wire):
            raise _Malformed("name runs past the message")
        labels.append((pos, wire[pos:nxt].lower()))  # the length octet (< 64) is unaffected
        pos = nxt
    for start, label in reversed(labels):
        hit = label + hit
        cache[start] = hit
    if len(hit) > 255:
        raise _Malformed("name too long")
    return hit, end


def _name_end_fast(wire: bytes, pos: int) -> int:
    """Position after the name at `pos` without decoding it."""
    while True:
        c = wire[pos]
        if c == 0:
            return pos + 1
        if c >= 0xC0:
            return pos + 2
        if c > 63:
            raise _Malformed("bad label type")
        pos += 1 + c


class WireZoneSnapshot(ZoneSnapshot):
    """A zone read by `read_zone_axfr`. Data is held as canonical rdata wire per
    RRset; see the module docstring for the value form."""

    def __init__(self, zone: str, serial: int, data: dict[tuple[str, str], tuple[int, Any]]) -> None:
        self.zone = zone
        self.serial = serial
        # (owner, type) -> (ttl, wire bytes) for a single record, or
        # (ttl, frozenset of wire bytes) for several.
        self._data = data
        self._origin = dns.name.from_text(zone)
        self._names: frozenset[str] | None = None

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[RRKey]:
        make = RRKey._make
        for key in self._data:
            yield make(key)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: RRKey) -> RRValue | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        ttl, wires = entry
        rdtype = dns.rdatatype.from_text(key[1])
        if isinstance(wires, bytes):
            wires = (wires,)
        texts = {dns.rdata.from_wire(dns.rdataclass.IN, rdtype, w, 0, len(w), None).to_text() for w in wires}
        return RRValue(ttl=ttl, rdatas=tuple(sorted(texts)))

    def has_name(self, name: str) -> bool:
        """True when any RRset is owned by `name` (absolute, lower-case)."""
        if self._names is None:
            self._names = frozenset(owner for owner, _ in self._data)
        return name in self._names

    def matches(self, key: RRKey, value: RRValue | None) -> bool:
        if key[1] == ANY:  # a guard: None means "the name is not in use"
            return value is None and not self.has_name(key[0])
        entry = self._data.get(key)
        if value is None or entry is None:
            return value is None and entry is None
        ttl, wires = entry
        if ttl != value.ttl:
            return False
        try:
            wanted = _value_wires(key[1], value.rdatas, self._origin)
        except (dns.exception.DNSException, ValueError):
            return False  # a value that cannot be encoded cannot be live
        if isinstance(wires, bytes):
            return wanted == {wires}
        return wanted == wires

    def wire_items(self) -> Iterator[tuple[RRKey, int, frozenset[bytes]]]:
        """(key, ttl, set of canonical rdata wire) for every RRset, unparsed."""
        make = RRKey._make
        for key, (ttl, wires) in self._data.items():
            yield make(key), ttl, (frozenset((wires,)) if isinstance(wires, bytes) else wires)


def _value_wires(rdtype_text: str, rdatas: tuple[str, ...], origin: dns.name.Name) -> frozenset[bytes]:
    rdtype = dns.rdatatype.from_text(rdtype_text)
    return frozenset(
        dns.rdata.from_text(dns.rdataclass.IN, rdtype, text, origin=origin, relativize=False).to_digestable()
        for text in rdatas
    )


def _resolve_key(keyring: Any, keyname: dns.name.Name | str | None) -> dns.tsig.Key:
    if isinstance(keyring, dns.tsig.Key):
        return keyring
    if not isinstance(keyring, Mapping) or not keyring:
        raise ConfigError("TSIG keyring must be a dns.tsig.Key or a non-empty {dns.name.Name: dns.tsig.Key} mapping")
    if keyname is None:
        if len(keyring) != 1:
            raise ConfigError("TSIG keyname is required when the keyring holds several keys")
        keyname = next(iter(keyring))
    if isinstance(keyname, str):
        keyname = dns.name.from_text(keyname)
    key = keyring.get(keyname)
    if key is None:
        raise ConfigError(f"TSIG key {keyname} is not in the keyring")
    if isinstance(key, bytes):  # old-style keyring: name -> secret
        key = dns.tsig.Key(keyname, key)
    if not isinstance(key, dns.tsig.Key):
        raise ConfigError("TSIG keyring values must be dns.tsig.Key objects")
    return key


_TSIG_ERRORS = {
    dns.tsig.PeerBadKey: "the server does not know our TSIG key (BADKEY)",
    dns.tsig.PeerBadSignature: "the server rejected our TSIG signature (BADSIG): wrong secret?",
    dns.tsig.PeerBadTime: "the server rejected our TSIG time (BADTIME): clock skew?",
    dns.tsig.PeerBadTruncation: "the server rejected our TSIG (BADTRUNC)",
    dns.tsig.BadSignature: "the response's TSIG signature does not verify",
    dns.tsig.BadKey: "the response is signed with a different TSIG key",
    dns.tsig.BadAlgorithm: "the response is signed with a different TSIG algorithm",
    dns.tsig.BadTime: "the response's TSIG time is outside the allowed skew: clock skew?",
}


def _tsig_message(exc: Exception) -> str:
    for cls, text in _TSIG_ERRORS.items():
        if isinstance(exc, cls):
            return text
    return f"TSIG verification failed ({type(exc).__name__})"


class _Reader:
    """Reads length-prefixed DNS messages from a TCP socket with large buffered reads."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self, need: int) -> None:
        while len(self.buf) < need:
            chunk = self.sock.recv(max(65536, need - len(self.buf)))
            if not chunk:
                raise EOFError
            self.buf += chunk

    def message(self) -> bytes:
        self._fill(2)
        (length,) = _unpack_h(self.buf, 0)
        self._fill(2 + length)
        wire = bytes(self.buf[2 : 2 + length])
        del self.buf[: 2 + length]
        return wire


def read_zone_axfr(
    *,
    host: str,
    port: int,
    zone: str,
    keyring: Any,
    keyname: dns.name.Name | str | None = None,
    timeout: float,
    lifetime: float | None = None,
) -> WireZoneSnapshot:
    """Transfer `zone` from `host`:`port` by AXFR over TCP, signed and verified
    with TSIG, and return it as a `WireZoneSnapshot`.

    keyring: a `dns.tsig.Key`, or a mapping {dns.name.Name: dns.tsig.Key} as made
      by `dns.tsigkeyring.from_text` / `from_file` (then `keyname` picks the key;
      it may be omitted when the mapping holds exactly one key).
    timeout: seconds allowed for the connect and for each wait for data (an
      idle timeout, so a large zone may take longer in total).
    lifetime: optional limit in seconds on the whole transfer.

    Raises ConfigError (refused, not authoritative, bad key, TSIG verification
    failure, malformed or inconsistent response) or TransientError (timeout,
    connection refused or dropped, SERVFAIL). Messages never include secrets.
    """
    key = _resolve_key(keyring, keyname)
    try:
        origin = dns.name.from_text(zone)
    except dns.exception.DNSException as exc:
        raise ConfigError(f"invalid zone name {zone!r}") from exc
    zone_text = origin.to_text().lower()
    where = f"{host}:{port}"

    query = dns.message.make_query(origin, dns.rdatatype.AXFR, dns.rdataclass.IN)
    query.flags = 0  # AXFR is not recursive
    try:
        query.use_tsig(key)
        qwire = query.to_wire()
    except (NotImplementedError, dns.exception.DNSException) as exc:
        raise ConfigError(f"TSIG key {key.name} cannot sign: unsupported algorithm {key.algorithm}") from exc
    request_mac = query.mac
    qid = query.id
    qname_wire = origin.canonicalize().to_wire()
    assert qname_wire is not None

    deadline = None if lifetime is None else time.monotonic() + lifetime
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except (TimeoutError, socket.timeout) as exc:
        raise TransientError(f"zone transfer of {zone_text} from {where}: connect timed out") from exc
    except OSError as exc:
        reason = exc.strerror or exc
        raise TransientError(f"zone transfer of {zone_text} from {where}: cannot connect ({reason})") from exc

    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(struct.pack("!H", len(qwire)) + qwire)
        return _transfer(
            _Reader(sock), qid, qname_wire, key, request_mac, origin, zone_text, where, timeout, deadline, sock
        )
    except (_Malformed, IndexError, struct.error, ValueError, dns.exception.DNSException) as exc:
        raise ConfigError(f"malformed zone transfer response for {zone_text} from {where}: {exc}") from exc
    except (TimeoutError, socket.timeout) as exc:
        raise TransientError(f"zone transfer of {zone_text} from {where} timed out") from exc
    except EOFError as exc:
        raise TransientError(f"zone transfer of {zone_text} from {where}: connection closed early") from exc
    except OSError as exc:
        raise TransientError(f"zone transfer of {zone_text} from {where}: {exc.strerror or exc}") from exc
    finally:
        sock.close()


def _transfer(
    reader: _Reader,
    qid: int,
    qname_wire: bytes,
    key: dns.tsig.Key,
    request_mac: bytes,
    origin: dns.name.Name,
    zone_text: str,
    where: str,
    timeout: float,
    deadline: float | None,
    sock: socket.socket,
) -> WireZoneSnapshot:
    # One function on purpose (over the 80-line rule, issue 11): this is the AXFR hot
    # loop, run once per record of the zone (100k+). Its helpers are bound to locals and
    # the record parsing is inlined because a split would add a Python call per record,
    # which is most of the cost at this size. Measured by `python -m bench.dns_bench`,
    # figure "(b) zone read" (read_zone_axfr vs from_xfr and dig; bench/README.md);
    # re-run it before and after any change here.
    groups: dict[tuple[str, str], list[Any]] = {}
    type_names: dict[int, str] = {}
    raw_types = _RAW_TYPES
    prefix_types = _PREFIX_NAME_TYPES
    plain = _PLAIN
    in_zone_suffix = "." + zone_text
    from_wire = dns.rdata.from_wire
    IN = dns.rdataclass.IN

    tsig_ctx: Any = None
    unsigned_run = 0
    first_message = True
    soa_wire: bytes | None = None
    serial = 0
    done = False

    while not done:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(min(timeout, left))
        wire = reader.message()
        if len(wire) < 12:
            raise _Malformed("short message")
        mid, flags, qdcount, ancount, nscount, arcount = _unpack_header(wire, 0)
        if mid != qid:
            raise _Malformed("response id does not match the query")
        if not flags & _QR or (flags >> 11) & 0xF != dns.opcode.QUERY:
            raise _Malformed("not a response to a QUERY")

        # --- locate the TSIG (last RR of the additional section) before trusting anything
        pos = 12
        for _ in range(qdcount):
            pos = _name_end_fast(wire, pos) + 4
        answer_start = pos
        for _ in range(ancount + nscount):
            pos = _name_end_fast(wire, pos)
            pos += 10 + _unpack_h(wire, pos + 8)[0]
        tsig_start = -1
        for i in range(arcount):
            rr_start = pos
            pos = _name_end_fast(wire, pos)
            rdtype = _unpack_h(wire, pos)[0]
            if rdtype == _TSIG:
                if i != arcount - 1:
                    raise _Malformed("TSIG is not the last record")
                tsig_start = rr_start
            pos += 10 + _unpack_h(wire, pos + 8)[0]
        if pos != len(wire):
            raise _Malformed("trailing data after the records" if pos < len(wire) else "records run past the message")

        rcode = flags & 0xF
        if tsig_start >= 0:
            owner, used = dns.name.from_wire(wire, tsig_start)
            rd_pos = tsig_start + used + 10
            rdlen = _unpack_h(wire, rd_pos - 2)[0]
            try:
                tsig_rd = from_wire(dns.rdataclass.ANY, _TSIG, wire, rd_pos, rdlen, None)
            except dns.exception.DNSException as exc:
                raise _Malformed("bad TSIG record") from exc
            try:
                tsig_ctx = dns.tsig.validate(
                    wire, key, owner, tsig_rd, int(time.time()), request_mac, tsig_start, tsig_ctx, True
                )
            except (dns.tsig.PeerError, dns.tsig.BadSignature, dns.tsig.BadKey, dns.tsig.BadAlgorithm) as exc:
                raise ConfigError(f"zone transfer of {zone_text} from {where}: {_tsig_message(exc)}") from exc
            except dns.exception.DNSException as exc:  # BadTime and FormError
                if rcode != dns.rcode.NOERROR:
                    _raise_rcode(rcode, zone_text, where)
                raise ConfigError(f"zone transfer of {zone_text} from {where}: {_tsig_message(exc)}") from exc
            unsigned_run = 0
        else:
            if rcode != dns.rcode.NOERROR:
                _raise_rcode(rcode, zone_text, where)
            if first_message:
                raise ConfigError(f"zone transfer of {zone_text} from {where}: the response is not TSIG-signed")
            unsigned_run += 1
            if unsigned_run > _MAX_UNSIGNED_RUN:
                raise ConfigError(f"zone transfer of {zone_text} from {where}: too many unsigned messages in a row")
            tsig_ctx.update(wire)

        if rcode != dns.rcode.NOERROR:
            _raise_rcode(rcode, zone_text, where)
        if flags & _TC:
            raise _Malformed("truncated message over TCP")

        # --- question: the zone's AXFR (may be absent after the first message)
        if qdcount > 1 or (first_message and qdcount != 1):
            raise _Malformed("bad question count")
        if qdcount == 1:
            qend = _name_end_fast(wire, 12)
            try:
                qname, _ = dns.name.from_wire(wire, 12)
            except dns.exception.DNSException as exc:
                raise _Malformed("bad question name") from exc
            if qname.canonicalize().to_wire() != qname_wire or wire[qend : qend + 4] != b"\x00\xfc\x00\x01":
                raise _Malformed("the question is not our AXFR")

        # --- answer records
        cache: dict[int, tuple[str, int]] = {}
        wcache: dict[int, bytes] = {}
        pos = answer_start
        for index in range(ancount):
            # Inline fast path for the usual owner: one label, then a pointer to a
            # name decoded before ("host-1" + pointer to "bench.test.").
            c = wire[pos]
            nxt = pos + 1 + c
            hit = None
            if 0 < c < 64 and wire[nxt] >= 0xC0:
                target = ((wire[nxt] & 0x3F) << 8) | wire[nxt + 1]
                if target < pos:
                    hit = cache.get(target)
            if hit is not None and hit[0] != "." and hit[1] + c < 255:
                label = wire[pos + 1 : nxt].lower()
                text = label.decode("ascii") if not label.translate(None, plain) else _escape_label(label)
                name = text + "." + hit[0]
                cache[pos] = (name, hit[1] + c + 1)
                pos = nxt + 2
            else:
                name, _, pos = _read_name(wire, pos, cache)
            rdtype, rdclass, ttl, rdlen = _unpack_rr(wire, pos)
            pos += 10
            end = pos + rdlen
            if done:
                raise _Malformed("records after the closing SOA")
            if rdclass != _IN:
                raise _Malformed("record of a class other than IN")
            if name != zone_text and (
                not name.endswith(in_zone_suffix)
                or ("\\" in name and not dns.name.from_text(name).is_subdomain(origin))
            ):
                raise _Malformed("record outside the zone")
            if ttl > 0x7FFFFFFF:
                ttl = 0
            want = raw_types.get(rdtype, -1)
            prefix = prefix_types.get(rdtype, -1)
            if prefix >= 0:
                if rdlen <= prefix:
                    raise _Malformed(f"bad {dns.rdatatype.to_text(rdtype)} rdata")
                target, name_end = _read_name_wire(wire, pos + prefix, wcache)
                if name_end != end:
                    raise _Malformed(f"bad {dns.rdatatype.to_text(rdtype)} rdata length")
                rdwire = wire[pos : pos + prefix] + target if prefix else target
            elif want == -1:
                if rdtype in (_TSIG, _OPT) or 128 <= rdtype <= 255:
                    raise _Malformed("meta type in the answer section")
                try:
                    rdwire = from_wire(IN, rdtype, wire, pos, rdlen, None).to_digestable()
                except dns.exception.DNSException as exc:
                    raise _Malformed(f"bad {dns.rdatatype.to_text(rdtype)} rdata") from exc
            else:
                if want is not None and rdlen != want:
                    raise _Malformed(f"bad {dns.rdatatype.to_text(rdtype)} rdata length")
                rdwire = wire[pos:end]
            pos = end

            if rdtype == _SOA:
                if name != zone_text:
                    raise _Malformed("SOA outside the zone apex")
                if soa_wire is None:
                    if not first_message or index != 0:
                        raise _Malformed("the first record is not the SOA")
                    soa_wire = rdwire
                    serial = struct.unpack_from("!I", rdwire, len(rdwire) - 20)[0]
                    groups[(name, "SOA")] = [ttl, rdwire]
                    continue
                if rdwire != soa_wire:
                    raise _Malformed("the closing SOA differs from the opening one (zone changed?)")
                done = True
                continue
            if soa_wire is None:
                raise _Malformed("the first record is not the SOA")

            tname = type_names.get(rdtype)
            if tname is None:
                tname = type_names[rdtype] = dns.rdatatype.to_text(rdtype)
            entry = groups.get((name, tname))
            if entry is None:
                groups[(name, tname)] = [ttl, rdwire]
            else:
                if ttl < entry[0]:
                    entry[0] = ttl
                entry.append(rdwire)

        if done and tsig_start < 0:
            raise ConfigError(f"zone transfer of {zone_text} from {where}: the last message is not TSIG-signed")
        first_message = False

    # Lists -> compact tuples, in place (no second dict at the peak); equal TTLs
    # share one int object.
    ttls: dict[int, int] = {}
    for k, entry in groups.items():
        ttl = ttls.setdefault(entry[0], entry[0])
        groups[k] = (ttl, entry[1]) if len(entry) == 2 else (ttl, frozenset(entry[1:]))  # type: ignore[assignment]
    return WireZoneSnapshot(zone_text, serial, groups)  # type: ignore[arg-type]


def _raise_rcode(rcode: int, zone_text: str, where: str) -> None:
    text = dns.rcode.to_text(rcode)
    if rcode == dns.rcode.SERVFAIL:
        raise TransientError(f"zone transfer of {zone_text} from {where}: server failure (SERVFAIL)")
    if rcode == dns.rcode.NOTAUTH:
        raise ConfigError(
            f"zone transfer of {zone_text} from {where} refused: NOTAUTH"
            " (server not authoritative for the zone, or our TSIG key was not accepted)"
        )
    if rcode == dns.rcode.REFUSED:
        raise ConfigError(
            f"zone transfer of {zone_text} from {where} refused: REFUSED"
            " (zone not served, or transfers not allowed for our key)"
        )
    raise ConfigError(f"zone transfer of {zone_text} from {where} failed: {text}")
