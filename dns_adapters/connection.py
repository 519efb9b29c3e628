"""One TCP connection to a DNS server that pipelines TSIG-signed messages.

BIND, Knot and PowerDNS all answer pipelined queries on one connection. A server
that does not know or does not accept our key answers NOTAUTH or REFUSED *without*
a TSIG record (PowerDNS does for every query); dnspython then reports "response
requires a TSIG", which says nothing about why. `exchange` raises `UnsignedRefusal`
with the rcode instead, so the adapter can call it what it is: a key problem.
"""

from __future__ import annotations

import secrets
import socket
import struct
from collections.abc import Sequence

import dns.exception
import dns.message
import dns.rcode


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


class UnsignedRefusal(dns.exception.DNSException):
    """A signed request got an unsigned NOTAUTH/REFUSED answer: the server did not
    accept the key (unknown name, wrong secret or algorithm, or not allowed)."""

    def __init__(self, rcode: dns.rcode.Rcode) -> None:
        super().__init__(dns.rcode.to_text(rcode))
        self.rcode = rcode


class Connection:
    """One TCP connection to a DNS server. Queries are pipelined (all sent, then all
    responses read and matched by id), which BIND, Knot and PowerDNS support."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.address = (host, port)
        self.timeout = timeout
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self.sock is None:
            family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                sock.connect(self.address)
            except BaseException:
                sock.close()
                raise
            self.sock = sock
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _recv_exact(self, sock: socket.socket, count: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < count:
            chunk = sock.recv(count - len(chunks))
            if not chunk:
                raise EOFError("connection closed by the server")
            chunks += chunk
            if _QUICKACK is not None:
                # ACK at once: a server that writes the length prefix and the message
                # separately (PowerDNS) otherwise waits on our delayed ACK (Nagle),
                # up to 40 ms per pipelined answer on Linux. Linux resets the flag, so
                # it is set again after every read.
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        return bytes(chunks)

    def exchange(self, queries: Sequence[dns.message.Message]) -> list[dns.message.Message]:
        """Send all queries, return the responses in query order. Raises OSError,
        EOFError, dns exceptions (TSIG failures included)."""
        sock = self._connect()
        by_id: dict[int, int] = {}
        payload = bytearray()
        wires = []
        for index, query in enumerate(queries):
            wire = query.to_wire()
            wires.append(wire)
            by_id[query.id] = index
            payload += struct.pack("!H", len(wire)) + wire
        sock.sendall(payload)
        responses: list[dns.message.Message | None] = [None] * len(queries)
        for _ in queries:
            (length,) = struct.unpack("!H", self._recv_exact(sock, 2))
            wire = self._recv_exact(sock, length)
            index = by_id.get(struct.unpack("!H", wire[:2])[0])
            if index is None or responses[index] is not None:
                raise dns.exception.FormError("response id matches no outstanding query")
            query = queries[index]
            response = _parse(query, wire)
            if not query.is_response(response):
                raise dns.exception.FormError("response does not match its query")
            responses[index] = response
        return [r for r in responses if r is not None]


def _parse(query: dns.message.Message, wire: bytes) -> dns.message.Message:
    try:
        return dns.message.from_wire(wire, keyring=query.keyring, request_mac=query.mac, one_rr_per_rrset=False)
    except dns.exception.FormError:
        if query.tsig is None:
            raise
        # Unsigned answer to a signed request: read it unverified only to learn the rcode.
        unsigned = dns.message.from_wire(wire, keyring=False, one_rr_per_rrset=False)
        if unsigned.tsig is None and unsigned.rcode() in (dns.rcode.NOTAUTH, dns.rcode.REFUSED):
            raise UnsignedRefusal(unsigned.rcode()) from None
        raise


def unique_ids(queries: Sequence[dns.message.Message]) -> None:
    seen: set[int] = set()
    for query in queries:
        while query.id in seen:
            query.id = secrets.randbelow(65536)
        seen.add(query.id)
