"""One lookup through a given resolver, for `dns_resolve` health checks.

This is what a client behind that resolver sees: a recursion-desired query over
UDP (TCP when the answer is truncated), the CNAME chain in the answer followed to
the final name, and the RRset of the asked type there. The answer is compared as
a set of canonical rdata strings, so TTLs and record order do not matter.
"""

from __future__ import annotations

import time

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from .base import ConfigError, TransientError
from .hostport import parse_hostport
from .planning import canonical_rdata

# A CNAME chain longer than this is a loop or an abuse (BIND stops at 16 too).
MAX_CNAME_CHAIN = 16
# EDNS buffer size of the DNS Flag Day 2020: no IP fragmentation, TCP beyond it.
EDNS_PAYLOAD = 1232


def resolve(*, resolver: str, name: str, rdtype: str, timeout: float) -> list[str] | None:
    """Ask `resolver` ("ip:port", "[v6]:port") for `name`/`rdtype` with RD set.

    Returns the sorted canonical rdata of the final name's RRset after following
    CNAMEs in the answer section, [] when the name exists without that type
    (NODATA, or a chain that ends without data), None for NXDOMAIN. `timeout`
    bounds the whole lookup, TCP fallback included.

    Raises ConfigError for a resolver, name or type that cannot be queried at all,
    TransientError when no usable answer came back (timeout, connection refused,
    SERVFAIL, REFUSED or any other error rcode, a malformed response).
    """
    try:
        host, port = parse_hostport(resolver)
    except ValueError as exc:
        raise ConfigError(f"resolver {resolver!r}: {exc}") from None
    try:
        qname = dns.name.from_text(name, origin=dns.name.root)
        qtype = dns.rdatatype.from_text(rdtype.upper())
    except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
        raise ConfigError(f"cannot query {name!r} {rdtype!r}: {exc}") from None
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    query = dns.message.make_query(qname, qtype, use_edns=0, payload=EDNS_PAYLOAD)
    query.flags |= dns.flags.RD

    deadline = time.monotonic() + timeout
    try:
        try:
            response = dns.query.udp(query, host, port=port, timeout=timeout, raise_on_truncation=True)
        except dns.message.Truncated:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise dns.exception.Timeout(timeout=timeout) from None
            response = dns.query.tcp(query, host, port=port, timeout=remaining)
    except dns.exception.Timeout:
        raise TransientError(f"resolver {where}: no answer within {timeout:g}s") from None
    except OSError as exc:
        raise TransientError(f"resolver {where}: {exc.strerror or exc}") from None
    except (EOFError, dns.exception.DNSException) as exc:
        raise TransientError(f"resolver {where}: bad response ({type(exc).__name__}: {exc})") from None

    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        # RFC 6604: with a CNAME chain the rcode describes the last name of it.
        return None
    if rcode != dns.rcode.NOERROR:
        raise TransientError(f"resolver {where} answered {dns.rcode.to_text(rcode)} for {qname} {rdtype.upper()}")

    current = qname
    for _ in range(MAX_CNAME_CHAIN + 1):
        rrset = response.get_rrset(response.answer, current, dns.rdataclass.IN, qtype)
        if rrset is not None:
            return sorted({canonical_rdata(rdata) for rdata in rrset})
        cname = response.get_rrset(response.answer, current, dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is None:
            return []
        current = cname[0].target
    raise TransientError(f"resolver {where}: CNAME chain for {qname} longer than {MAX_CNAME_CHAIN}")
