"""The one RFC 2136 UPDATE message a plan is applied with. Pure: no network.

Prerequisites (section 2.4) make it a compare-and-swap on every step's `before`
and every guard. The updates are chosen so that no server can silently drop or
half-apply them (issue 12, proven against BIND 9, Knot DNS and PowerDNS):

* An RRset that stays is replaced whole (delete the RRset, add every record),
  never edited record by record: PowerDNS matches a single-record delete against
  its stored text case-sensitively (`20 Mail2.example.` survives a delete of
  `20 mail2.example.`), and Knot ignores an add that changes only the TTL. The
  exceptions are the apex NS RRset (deleting it whole is silently ignored,
  section 3.4.2.4, so its records leave one by one) and the SOA (an add replaces it).
* Deletes of whole RRsets go first, so a CNAME replacing data (or data replacing
  a CNAME) never meets what it replaces, whatever order the items came in.
* A CNAME arriving at a name that held other data: RFC 2136 section 3.4.2.2 lets a
  server ignore the CNAME if any other data is there when the update runs (BIND and
  Knot do, after deleting what the plan deletes). So the message also requires
  "no RRset of type T" at that name for every data type T the plan does not touch;
  data that appeared since the plan was read makes the prerequisite fail instead.
* A TXT string of exactly 255 bytes may be half of one longer string as PowerDNS
  stores it; PowerDNS compares a value-dependent prerequisite with the stored form
  and fails it. Such an RRset gets a value-independent prerequisite ("exists"), and
  the adapter compares the exact value by a read just before sending.
"""

from __future__ import annotations

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update

from .base import ANY, Plan, RRValue

MAX_MESSAGE = 65535  # a DNS message over TCP: the 16-bit length prefix (RFC 1035 section 4.2.2)
# Types whose rdata hold case-sensitive text: PowerDNS compares their prerequisites
# case-insensitively, so the adapter re-reads them exactly before sending.
CASE_SENSITIVE_TYPES = frozenset({"TXT", "SPF", "CAA", "HINFO", "NAPTR", "URI"})
# Types that may sit beside a CNAME (DNSSEC, RFC 4035 section 2.5; and the obsolete SIG/NXT/KEY).
_BESIDE_CNAME = frozenset({"CNAME", "RRSIG", "NSEC", "NSEC3", "SIG", "NXT", "KEY"})


def data_types() -> tuple[str, ...]:
    """Every data type dnspython knows, except those allowed beside a CNAME."""
    names = []
    for value in dns.rdatatype.RdataType:
        if value == 0 or dns.rdatatype.is_metatype(value):
            continue
        name = dns.rdatatype.to_text(value)
        if name not in _BESIDE_CNAME and not name.startswith("TYPE"):
            names.append(name)
    return tuple(sorted(set(names)))


_DATA_TYPES = data_types()


def needs_exact_reread(rdtype: str, value: RRValue | None) -> bool:
    """True when the server's own prerequisite check cannot be trusted with `value`."""
    return value is not None and rdtype in CASE_SENSITIVE_TYPES


def loose_prerequisite(rdtype: str, value: RRValue) -> bool:
    """A TXT/SPF value holding a 255-byte string (see the module docstring)."""
    if rdtype not in ("TXT", "SPF"):
        return False
    for text in value.rdatas:
        rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)
        if any(len(s) == 255 for s in rdata.strings):
            return True
    return False


def rdatas(rdtype: str, value: RRValue) -> list[dns.rdata.Rdata]:
    return [dns.rdata.from_text(dns.rdataclass.IN, rdtype, text) for text in value.rdatas]


def _prerequisites(update: dns.update.UpdateMessage, plan: Plan) -> None:
    for guard in plan.guards:
        name = dns.name.from_text(guard.key.name)
        if guard.key.rdtype == ANY:
            update.absent(name)  # "name is not in use" (RFC 2136 section 2.4.5)
        elif guard.value is None:
            update.absent(name, guard.key.rdtype)
        else:
            update.present(name, *rdatas(guard.key.rdtype, guard.value))
    for step in plan.steps:
        name = dns.name.from_text(step.key.name)
        if step.before is None:
            update.absent(name, step.key.rdtype)  # RRset does not exist (2.4.3)
        elif loose_prerequisite(step.key.rdtype, step.before):
            update.present(name, step.key.rdtype)  # RRset exists (2.4.1); exact value re-read by the adapter
        else:
            update.present(name, *rdatas(step.key.rdtype, step.before))  # exactly these rdata (2.4.2)
    _cname_guards(update, plan)


def _cname_guards(update: dns.update.UpdateMessage, plan: Plan) -> None:
    """No other data may have appeared where the plan puts a new CNAME."""
    unused = {g.key.name for g in plan.guards if g.key.rdtype == ANY}
    touched = {step.key for step in plan.steps}
    for step in plan.steps:
        if step.key.rdtype != "CNAME" or step.after is None or step.before is not None or step.key.name in unused:
            continue
        name = dns.name.from_text(step.key.name)
        for rdtype in _DATA_TYPES:
            if (step.key.name, rdtype) not in touched:
                update.absent(name, rdtype)


def _updates(update: dns.update.UpdateMessage, plan: Plan) -> None:
    """Whole-RRset deletes first: a server processes updates in order, and a CNAME
    added while the data it replaces is still there would be ignored (or data
    added beside a CNAME about to go), whatever order the items came in."""
    apex = plan.zone
    for step in sorted(plan.steps, key=lambda s: s.after is not None):
        name = dns.name.from_text(step.key.name)
        rdtype = step.key.rdtype
        if step.after is None:
            update.delete(name, rdtype)
        elif step.before is None or rdtype == "SOA":
            update.add(name, step.after.ttl, *rdatas(rdtype, step.after))
        elif rdtype == "NS" and step.key.name == apex:
            gone = set(step.before.rdatas) - set(step.after.rdatas)
            if gone:
                update.delete(name, *rdatas(rdtype, RRValue(0, tuple(sorted(gone)))))
            update.add(name, step.after.ttl, *rdatas(rdtype, step.after))
        else:
            update.delete(name, rdtype)
            update.add(name, step.after.ttl, *rdatas(rdtype, step.after))


def build_update(plan: Plan, *, origin: dns.name.Name, key: dns.tsig.Key) -> dns.update.UpdateMessage:
    update = dns.update.UpdateMessage(origin, keyring={key.name: key}, keyname=key.name, keyalgorithm=key.algorithm)
    _prerequisites(update, plan)
    _updates(update, plan)
    return update


def wire_size(update: dns.update.UpdateMessage) -> int:
    """The signed message's size in bytes, measured by rendering it (TSIG included)."""
    try:
        return len(update.to_wire(max_size=1 << 30))
    except dns.exception.TooBig:  # pragma: no cover - over a gigabyte
        return 1 << 30
