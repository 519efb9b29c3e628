"""The DNS adapter for any server that speaks RFC 2136 UPDATE + TSIG + AXFR
(BIND 9, Knot, PowerDNS, Windows DNS).

Reads are TSIG-signed queries pipelined on one TCP connection to the primary, so
the "before" a reviewer approves is authenticated and the cost follows the size of
the change, not of the zone. Apply is ONE signed UPDATE message whose
prerequisites (RFC 2136 section 2.4) require every step's `before` to be live; the
server applies all of it or none of it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.update

from .base import (
    ANY,
    ApplyResult,
    ChangeItem,
    ConfigError,
    DNSAdapter,
    DriftError,
    FieldError,
    ItemValidationError,
    Options,
    Plan,
    RRKey,
    RRValue,
    ServerCheck,
    TransientError,
    VerifyReport,
    ZoneSnapshot,
    allow_apex_of,
)
from .key_files import read_key_file
from .planning import LiveRead, NameInfo, build_plan, keys_to_read, rrvalue, validate_items, zone_name

DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 120.0
TSIG_ALGORITHMS = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
    "hmac-md5": dns.tsig.HMAC_MD5,
}
_KEY_RE = re.compile(
    r'key\s+"?(?P<name>[^"\s{]+)"?\s*\{(?P<body>.*?)\}\s*;', re.DOTALL
)
_ALGO_RE = re.compile(r'algorithm\s+"?(?P<algo>[A-Za-z0-9.-]+)"?\s*;')
_SECRET_RE = re.compile(r'secret\s+"(?P<secret>[A-Za-z0-9+/=\s]+)"\s*;')
# Prerequisite failures (RFC 2136 section 3.2): the zone is not what the plan read.
_PREREQ_RCODES = {dns.rcode.NXRRSET, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN, dns.rcode.YXDOMAIN}
_CONFIG_RCODES = {dns.rcode.REFUSED, dns.rcode.NOTAUTH, dns.rcode.NOTZONE, dns.rcode.NOTIMP, dns.rcode.FORMERR}


# ---------------------------------------------------------------------------
# Configuration


def parse_hostport(text: Any) -> tuple[str, int]:
    """"192.0.2.1:53", "[2001:db8::1]:5353" -> (address, port). Addresses only:
    resolving a name here would make the target depend on the resolver."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("expected host:port")
    raw = text.strip()
    if raw.startswith("["):
        host, sep, port = raw[1:].partition("]:")
    else:
        host, sep, port = raw.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()):
        raise ValueError(f"{raw!r} is not host:port")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    port_number = int(port)
    if not 0 < port_number < 65536:
        raise ValueError(f"port {port_number} is out of range")
    return host, port_number


def load_tsig_key(path: str, *, key_dir: str | os.PathLike[str]) -> dns.tsig.Key:
    """Read a BIND-format key file from inside `key_dir` (see `key_files`). Error
    messages are fixed texts naming the path: never the secret, nor any other part
    of the file (the path might have been somebody else's file)."""
    data = read_key_file(path, key_dir=key_dir)
    not_a_key = ConfigError(f"TSIG key file {path}: not a BIND key file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise not_a_key from None
    match = _KEY_RE.search(text)
    if not match:
        raise not_a_key
    body = match.group("body")
    algo_match = _ALGO_RE.search(body)
    secret_match = _SECRET_RE.search(body)
    algorithm = algo_match.group("algo").lower() if algo_match else "hmac-sha256"
    if algorithm not in TSIG_ALGORITHMS:
        raise ConfigError(f"TSIG key file {path}: not a BIND key file (unsupported algorithm)")
    if not secret_match:
        raise ConfigError(f"TSIG key file {path}: not a BIND key file (no secret)")
    try:
        return dns.tsig.Key(
            match.group("name"), "".join(secret_match.group("secret").split()), TSIG_ALGORITHMS[algorithm]
        )
    except Exception:  # binascii.Error and friends: do not echo any part of the secret
        raise ConfigError(f"TSIG key file {path}: not a BIND key file (the secret is not valid base64)") from None


# ---------------------------------------------------------------------------
# A TCP connection that pipelines signed queries


class _Connection:
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
            response = dns.message.from_wire(
                wire, keyring=query.keyring, request_mac=query.mac, one_rr_per_rrset=False
            )
            if not query.is_response(response):
                raise dns.exception.FormError("response does not match its query")
            responses[index] = response
        return [r for r in responses if r is not None]


# ---------------------------------------------------------------------------
# The adapter


class RFC2136Adapter(DNSAdapter):
    """Config: zone, primary ("host:port"), tsig_key_file, nameservers (list of
    "host:port", default [primary]), timeout (seconds). The key's secret is read
    from the file when the adapter is built and is never part of config, repr,
    errors or results. `key_dir` is the one directory key files may come from: the
    deployment's choice, never part of the (user-supplied) config."""

    def __init__(self, config: Mapping[str, Any], *, key_dir: str | os.PathLike[str]) -> None:
        try:
            normalized = self.validate_config(config, key_dir=key_dir)
        except ItemValidationError as exc:
            raise ConfigError(exc.message) from None
        self.config = normalized
        self.zone = normalized["zone"]
        self.origin = zone_name(self.zone)
        self.primary = parse_hostport(normalized["primary"])
        self.nameservers = [parse_hostport(ns) for ns in normalized["nameservers"]]
        self.timeout = float(normalized["timeout"])
        self._key = load_tsig_key(normalized["tsig_key_file"], key_dir=key_dir)
        self._keyring = {self._key.name: self._key}
        self._conn = _Connection(*self.primary, self.timeout)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<RFC2136Adapter zone={self.zone} primary={self.config['primary']}>"

    # -- configuration -------------------------------------------------------

    @classmethod
    def validate_config(cls, config: Mapping[str, Any], *, key_dir: str | os.PathLike[str]) -> dict[str, Any]:
        errors: list[FieldError] = []
        if not isinstance(config, Mapping):
            raise ItemValidationError([FieldError(None, "config", "config must be an object")])
        unknown = set(config) - {"zone", "primary", "tsig_key_file", "nameservers", "timeout"}
        for key in sorted(unknown, key=str):
            errors.append(FieldError(None, str(key), "unknown setting (secrets go in tsig_key_file, not in config)"))
        zone = config.get("zone")
        normalized_zone = ""
        try:
            if not isinstance(zone, str) or not zone.strip():
                raise ValueError("zone is required")
            normalized_zone = zone_name(zone.strip()).to_text(omit_final_dot=True)
            if not normalized_zone or normalized_zone == "@":
                raise ValueError("the root zone is not supported")
        except (ValueError, dns.exception.DNSException) as exc:
            errors.append(FieldError(None, "zone", str(exc)))
        primary = config.get("primary")
        try:
            parse_hostport(primary)
        except ValueError as exc:
            errors.append(FieldError(None, "primary", str(exc)))
        key_file = config.get("tsig_key_file")
        if not isinstance(key_file, str) or not key_file.strip():
            errors.append(FieldError(None, "tsig_key_file", "path to a BIND-format key file is required"))
        elif not Path(key_file).is_absolute():
            errors.append(FieldError(None, "tsig_key_file", "must be an absolute path"))
        else:
            try:
                load_tsig_key(key_file, key_dir=key_dir)
            except ConfigError as exc:
                errors.append(FieldError(None, "tsig_key_file", exc.message))
        explicit = config.get("nameservers")
        nameservers = explicit or []
        if not isinstance(nameservers, list | tuple):
            errors.append(FieldError(None, "nameservers", "must be a list of host:port"))
            nameservers = []
        for j, ns in enumerate(nameservers):
            try:
                parse_hostport(ns)
            except ValueError as exc:
                errors.append(FieldError(None, f"nameservers[{j}]", str(exc)))
        timeout = config.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT:
            errors.append(FieldError(None, "timeout", f"must be a number of seconds in (0, {MAX_TIMEOUT:g}]"))
        if errors:
            raise ItemValidationError(errors)
        return {
            "zone": normalized_zone,
            "primary": str(primary).strip(),
            "tsig_key_file": str(key_file).strip(),
            "nameservers": [str(ns).strip() for ns in nameservers] or [str(primary).strip()],
            "timeout": float(timeout),
        }

    def validate_items(self, items: Sequence[Mapping[str, Any]], *, options: Options | None = None,
                       allow_apex: bool = False) -> list[ChangeItem]:
        return validate_items(items, zone=self.zone, allow_apex=allow_apex_of(options, allow_apex))

    # -- low-level exchange --------------------------------------------------

    def _query(self, name: str, rdtype: str, *, sign: bool = True) -> dns.message.Message:
        query = dns.message.make_query(name, rdtype, use_edns=False)
        query.flags &= ~dns.flags.RD
        query.id = secrets.randbelow(65536)
        if sign:
            query.use_tsig(self._keyring, keyname=self._key.name, algorithm=self._key.algorithm)
        return query

    def _exchange_primary(self, queries: list[dns.message.Message]) -> list[dns.message.Message]:
        """Exchange on the reused primary connection; reconnect once if the server
        closed it while idle (reads are idempotent, so resending is safe)."""
        _unique_ids(queries)
        with self._lock:
            for attempt in (1, 2):
                try:
                    return self._conn.exchange(queries)
                except (EOFError, ConnectionResetError, BrokenPipeError) as exc:
                    self._conn.close()
                    if attempt == 2:
                        raise TransientError(f"{self._where()}: connection lost ({exc})") from None
                except dns.tsig.PeerError as exc:
                    self._conn.close()
                    raise ConfigError(f"{self._where()} rejected the TSIG key {self._key.name} ({_tsig_reason(exc)})") from None
                except dns.tsig.BadSignature:
                    self._conn.close()
                    raise ConfigError(f"{self._where()}: response signature does not verify with key {self._key.name}") from None
                except (TimeoutError, socket.timeout):
                    self._conn.close()
                    raise TransientError(f"{self._where()}: timed out after {self.timeout:g}s") from None
                except OSError as exc:
                    self._conn.close()
                    raise TransientError(f"{self._where()}: {exc.strerror or exc}") from None
                except dns.exception.DNSException as exc:
                    self._conn.close()
                    raise TransientError(f"{self._where()}: bad response ({exc})") from None
        raise AssertionError("unreachable")

    def _where(self, address: tuple[str, int] | None = None) -> str:
        host, port = address or self.primary
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- reads -----------------------------------------------------------------

    def check_reachable(self) -> int:
        (response,) = self._exchange_primary([self._query(self.origin.to_text(), "SOA")])
        self._raise_for_rcode(response, expect_auth=True)
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.SOA and rrset.name == self.origin:
                return int(rrset[0].serial)
        raise ConfigError(f"{self._where()} has no SOA for {self.zone}: it does not serve this zone")

    def _raise_for_rcode(self, response: dns.message.Message, *, expect_auth: bool) -> None:
        rcode = response.rcode()
        if rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH):
            raise ConfigError(f"{self._where()} answered {dns.rcode.to_text(rcode)} for zone {self.zone}")
        if rcode == dns.rcode.SERVFAIL:
            raise TransientError(f"{self._where()} answered SERVFAIL for zone {self.zone}")
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise ConfigError(f"{self._where()} answered {dns.rcode.to_text(rcode)}")
        if expect_auth and not response.flags & dns.flags.AA:
            raise ConfigError(f"{self._where()} is not authoritative for {self.zone}")

    def _interpret(self, key: RRKey, response: dns.message.Message, live: LiveRead) -> None:
        """Record what a typed answer says about `key` and its owner name."""
        name = dns.name.from_text(key.name)
        info = live.names.setdefault(key.name, NameInfo())
        if not response.flags & dns.flags.AA:
            # A referral: the name is at or below a zone cut. The NS at the cut is
            # in the authority section; nothing below it is ours to read.
            self._raise_for_rcode(response, expect_auth=False)
            cut = next((r for r in response.authority if r.rdtype == dns.rdatatype.NS), None)
            if cut is None:
                raise ConfigError(f"{self._where()} is not authoritative for {key.name}")
            info.referral = cut.name.to_text()
            live.values[key] = rrvalue(cut.ttl, list(cut)) if cut.name == name and key.rdtype == "NS" else None
            return
        self._raise_for_rcode(response, expect_auth=True)
        if response.rcode() == dns.rcode.NXDOMAIN:
            info.exists = False
            live.values[key] = None
            return
        value = None
        rdtype = dns.rdatatype.from_text(key.rdtype)
        for rrset in response.answer:
            if rrset.name != name:
                continue  # CNAME chase targets
            if rrset.rdtype == rdtype:
                value = rrvalue(rrset.ttl, list(rrset))
            if rrset.rdtype == dns.rdatatype.CNAME:
                info.cname = rrvalue(rrset.ttl, list(rrset))
        live.values[key] = value

    def _read_live(self, keys: Sequence[RRKey]) -> LiveRead:
        live = LiveRead()
        if not keys:
            return live
        responses = self._exchange_primary([self._query(k.name, k.rdtype) for k in keys])
        for key, response in zip(keys, responses, strict=True):
            self._interpret(key, response, live)
        return live

    def read(self, keys: Iterable[RRKey]) -> dict[RRKey, RRValue | None]:
        return self._read_live(list(dict.fromkeys(keys))).values

    def _read_types(self, names: Sequence[str], live: LiveRead) -> None:
        """Fill NameInfo.types with every RRset at each name (ANY over TCP to the
        authoritative primary answers in full; RFC 8482 minimization is for UDP)."""
        responses = self._exchange_primary([self._query(n, "ANY") for n in names])
        for name_text, response in zip(names, responses, strict=True):
            self._raise_for_rcode(response, expect_auth=True)
            name = dns.name.from_text(name_text)
            types: dict[str, RRValue] = {}
            for rrset in response.answer:
                if rrset.name == name and rrset.rdtype not in (dns.rdatatype.RRSIG, dns.rdatatype.NSEC):
                    types[dns.rdatatype.to_text(rrset.rdtype)] = rrvalue(rrset.ttl, list(rrset))
            info = live.names.setdefault(name_text, NameInfo())
            info.types = types
            info.exists = info.exists and response.rcode() != dns.rcode.NXDOMAIN

    def read_zone(self) -> ZoneSnapshot:
        from .axfr import read_zone_axfr

        return read_zone_axfr(
            host=self.primary[0],
            port=self.primary[1],
            zone=self.zone,
            keyring=self._keyring,
            keyname=self._key.name,
            timeout=self.timeout,
        )

    # -- plan ------------------------------------------------------------------

    def plan(self, items: Sequence[ChangeItem], *, options: Options | None = None,
             allow_apex: bool = False) -> Plan:
        keys = keys_to_read(items)
        live = self._read_live(keys)
        # A new CNAME at a name that exists needs the list of what is there.
        cname_names = [
            item.name
            for item in items
            if item.rdtype == "CNAME"
            and item.op in ("upsert", "add")
            and live.names.get(item.name, NameInfo()).exists
            and live.values.get(item.key) is None
        ]
        if cname_names:
            self._read_types(list(dict.fromkeys(cname_names)), live)
        return build_plan(zone=self.zone, items=items, live=live, allow_apex=allow_apex_of(options, allow_apex))

    # -- apply -------------------------------------------------------------------

    def _update_message(self, plan: Plan) -> dns.update.UpdateMessage:
        update = dns.update.UpdateMessage(self.origin, keyring=self._keyring, keyname=self._key.name,
                                          keyalgorithm=self._key.algorithm)
        for guard in plan.guards:
            name = dns.name.from_text(guard.key.name)
            if guard.key.rdtype == ANY:
                update.absent(name)  # "name is not in use" (RFC 2136 section 2.4.5)
            elif guard.value is None:
                update.absent(name, guard.key.rdtype)
            else:
                update.present(name, *self._rdatas(guard.key.rdtype, guard.value))
        for step in plan.steps:
            name = dns.name.from_text(step.key.name)
            if step.before is None:
                update.absent(name, step.key.rdtype)  # RRset does not exist (2.4.3)
            else:
                # RRset exists, value dependent (2.4.2): exactly these rdata.
                update.present(name, *self._rdatas(step.key.rdtype, step.before))
        for step in plan.steps:
            name = dns.name.from_text(step.key.name)
            if step.after is None:
                update.delete(name, step.key.rdtype)
                continue
            gone = set(step.before.rdatas) - set(step.after.rdatas) if step.before else set()
            if gone:
                update.delete(name, *self._rdatas(step.key.rdtype, RRValue(0, tuple(sorted(gone)))))
            # Adding every rdata with the new TTL also sets the RRset's TTL.
            update.add(name, step.after.ttl, *self._rdatas(step.key.rdtype, step.after))
        return update

    def _rdatas(self, rdtype: str, value: RRValue) -> list[dns.rdata.Rdata]:
        return [dns.rdata.from_text(dns.rdataclass.IN, rdtype, text) for text in value.rdatas]

    def _send_update(self, update: dns.update.UpdateMessage) -> dns.message.Message:
        """One UPDATE on a fresh connection (an idle reused one may be half-closed,
        which would make the outcome ambiguous for no reason)."""
        conn = _Connection(*self.primary, self.timeout)
        try:
            (response,) = conn.exchange([update])
            return response
        finally:
            conn.close()

    def apply(self, plan: Plan) -> ApplyResult:
        if plan.zone != self.origin.to_text():
            raise ConfigError(f"plan is for zone {plan.zone}, this target is {self.zone}")
        if plan.is_empty:
            return ApplyResult(applied=False, rcode="NOERROR", detail="empty plan: nothing to do")
        update = self._update_message(plan)
        try:
            response = self._send_update(update)
        except dns.tsig.PeerError as exc:
            raise ConfigError(f"{self._where()} rejected the TSIG key {self._key.name} ({_tsig_reason(exc)})") from None
        except dns.tsig.BadSignature:
            raise ConfigError(f"{self._where()}: update response signature does not verify") from None
        except (OSError, EOFError, dns.exception.DNSException) as exc:
            # The server may or may not have applied it: the zone itself tells.
            return self._resolve_ambiguous(plan, reason=f"{type(exc).__name__}: {exc}")
        rcode = response.rcode()
        rcode_text = dns.rcode.to_text(rcode)
        if rcode == dns.rcode.NOERROR:
            return ApplyResult(applied=True, rcode=rcode_text, detail=f"applied {len(plan.steps)} step(s) in one update")
        if rcode in _PREREQ_RCODES:
            return self._resolve_prerequisite_failure(plan, rcode_text)
        if rcode in _CONFIG_RCODES:
            raise ConfigError(f"{self._where()} refused the update for {self.zone}: {rcode_text}")
        return self._resolve_ambiguous(plan, reason=f"server answered {rcode_text}")

    def _compare(self, plan: Plan) -> tuple[dict[RRKey, RRValue | None], list[RRKey], bool, bool]:
        """Re-read the plan's keys: (live, keys that are neither before nor after,
        all at after, all at before)."""
        live = self.read(plan.keys())
        at_after = all(live.get(s.key) == s.after for s in plan.steps)
        at_before = all(live.get(s.key) == s.before for s in plan.steps)
        moved = [s.key for s in plan.steps if live.get(s.key) not in (s.before, s.after)]
        return live, moved, at_after, at_before

    def _resolve_prerequisite_failure(self, plan: Plan, rcode_text: str) -> ApplyResult:
        live, moved, at_after, at_before = self._compare(plan)
        if at_after:
            return ApplyResult(applied=False, rcode=rcode_text, detail="already applied: the zone holds the plan's after")
        if not moved:
            # Every step key is at before or after but not all at one of them, or a
            # guard failed (a CNAME or data appeared at a guarded name).
            moved = [s.key for s in plan.steps if live.get(s.key) != s.before] or [g.key for g in plan.guards]
        raise DriftError(
            f"the zone changed since the plan was read ({rcode_text}): {', '.join(map(str, moved))}",
            keys=moved,
            live=live,
        )

    def _resolve_ambiguous(self, plan: Plan, *, reason: str) -> ApplyResult:
        try:
            live, moved, at_after, at_before = self._compare(plan)
        except TransientError as exc:
            raise TransientError(f"update outcome unknown ({reason}); re-read failed: {exc.message}") from None
        if at_after:
            return ApplyResult(applied=True, rcode="NOERROR", detail=f"applied (confirmed by re-read after {reason})")
        if at_before:
            raise TransientError(f"update not applied ({reason}); the zone still holds before: safe to retry")
        raise DriftError(
            f"update outcome unclear ({reason}) and the zone matches neither plan: {', '.join(map(str, moved))}",
            keys=moved or plan.keys(),
            live=live,
        )

    # -- verify ------------------------------------------------------------------

    def verify(self, plan: Plan) -> VerifyReport:
        checks: list[ServerCheck] = []
        keys = plan.keys()
        if not keys:
            return VerifyReport(())
        for address in self.nameservers:
            server = self._where(address)
            conn = _Connection(*address, self.timeout)
            try:
                # Unsigned: secondaries need not know our key, and this is a check, not a decision input.
                responses = conn.exchange([self._query(k.name, k.rdtype, sign=False) for k in keys])
            except (OSError, EOFError, dns.exception.DNSException) as exc:
                checks.extend(
                    ServerCheck(server=server, key=s.key, ok=False, answer=None, error=f"{type(exc).__name__}: {exc}")
                    for s in plan.steps
                )
                continue
            finally:
                conn.close()
            for step, response in zip(plan.steps, responses, strict=True):
                checks.append(self._check_answer(server, step.key, step.after, response))
        return VerifyReport(tuple(checks))

    def _check_answer(self, server: str, key: RRKey, expected: RRValue | None, response: dns.message.Message) -> ServerCheck:
        rcode = response.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return ServerCheck(server=server, key=key, ok=False, answer=None, error=dns.rcode.to_text(rcode))
        name = dns.name.from_text(key.name)
        rdtype = dns.rdatatype.from_text(key.rdtype)
        answer = None
        for rrset in response.answer:
            if rrset.name == name and rrset.rdtype == rdtype:
                answer = rrvalue(rrset.ttl, list(rrset))
        return ServerCheck(server=server, key=key, ok=answer == expected, answer=answer)


def _unique_ids(queries: Sequence[dns.message.Message]) -> None:
    seen: set[int] = set()
    for query in queries:
        while query.id in seen:
            query.id = secrets.randbelow(65536)
        seen.add(query.id)


def _tsig_reason(exc: Exception) -> str:
    return type(exc).__name__.replace("Peer", "").upper() or "TSIG error"
