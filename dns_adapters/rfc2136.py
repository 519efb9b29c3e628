"""The DNS adapter for servers that speak RFC 2136 UPDATE + TSIG + AXFR; tested
against BIND 9, Knot DNS and PowerDNS Authoritative (tests/dns_servers.py).

Reads are TSIG-signed queries pipelined on one TCP connection to the primary, so
the "before" a reviewer approves is authenticated and the cost follows the size of
the change, not of the zone. Apply is ONE signed UPDATE message whose
prerequisites (RFC 2136 section 2.4) require every step's `before` to be live; the
server applies all of it or none of it, and a read-back proves which (`apply`).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
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

from adapters.interface import CacheCheck

from .apply import apply_plan, check_size, key_error
from .base import (
    AdapterError,
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
from .connection import Connection, UnsignedRefusal, unique_ids
from .hostport import parse_hostport
from .key_files import load_tsig_key
from .planning import LiveRead, NameInfo, build_plan, keys_to_read, rrvalue, validate_items, zone_name
from .resolver_checks import RESOLVER_TIMEOUT, negative_cache_ttl, verify_resolver
from .review_warnings import plan_warnings

DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 120.0
# Caching resolvers asked during every bake round (one query per changed key each).
MAX_RESOLVERS = 16


# ---------------------------------------------------------------------------
# The adapter



def _hostport_list(raw: Any, field: str, errors: list[FieldError], *, what: str, most: int | None = None,
                   unique: bool = False) -> list[Any]:
    """A config list of servers (nameservers, resolvers): every entry a host:port, each
    error naming `field[j]`. Returns the list to normalize ([] when it is not one)."""
    entries = raw or []
    if not isinstance(entries, list | tuple):
        errors.append(FieldError(None, field, f"must be a list of {what}"))
        return []
    if most is not None and len(entries) > most:
        errors.append(FieldError(None, field, f"at most {most} {field}"))
        return []
    for j, entry in enumerate(entries):
        try:
            parse_hostport(entry)
        except ValueError as exc:
            errors.append(FieldError(None, f"{field}[{j}]", str(exc)))
            continue
        if unique and str(entry).strip() in (str(e).strip() for e in entries[:j]):
            errors.append(FieldError(None, f"{field}[{j}]", f"{str(entry).strip()} is listed twice"))
    return list(entries)

class RFC2136Adapter(DNSAdapter):
    """Config: zone, primary ("host:port"), tsig_key_file, nameservers (list of
    "host:port", default [primary]), timeout (seconds), resolvers (list of
    "ip:port" caching resolvers the bake asks through, default []). The key's secret is read
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
        self.resolvers = list(normalized["resolvers"])
        self._negative_ttl: int | None = None
        self._key = load_tsig_key(normalized["tsig_key_file"], key_dir=key_dir)
        self._keyring = {self._key.name: self._key}
        self._conn = Connection(*self.primary, self.timeout)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<RFC2136Adapter zone={self.zone} primary={self.config['primary']}>"

    # -- configuration -------------------------------------------------------

    @classmethod
    def validate_config(cls, config: Mapping[str, Any], *, key_dir: str | os.PathLike[str]) -> dict[str, Any]:
        errors: list[FieldError] = []
        if not isinstance(config, Mapping):
            raise ItemValidationError([FieldError(None, "config", "config must be an object")])
        unknown = set(config) - {"zone", "primary", "tsig_key_file", "nameservers", "timeout", "resolvers"}
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
        nameservers = _hostport_list(config.get("nameservers"), "nameservers", errors, what="host:port")
        resolvers = _hostport_list(config.get("resolvers"), "resolvers", errors, what="ip:port (caching resolvers)",
                                   most=MAX_RESOLVERS, unique=True)
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
            "resolvers": [str(r).strip() for r in resolvers],
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
        unique_ids(queries)
        with self._lock:
            for attempt in (1, 2):
                try:
                    return self._conn.exchange(queries)
                except (EOFError, ConnectionResetError, BrokenPipeError) as exc:
                    self._conn.close()
                    if attempt == 2:
                        raise TransientError(f"{self._where()}: connection lost ({exc})") from None
                except UnsignedRefusal as exc:
                    self._conn.close()
                    raise key_error(self, exc.rcode) from None
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

    def check_reachable(self, *, prepare: bool = False) -> int:
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
        plan = build_plan(zone=self.zone, items=items, live=live, allow_apex=allow_apex_of(options, allow_apex))
        check_size(self, plan)
        warnings = plan_warnings(plan, origin=self.origin, read=self.read, snapshot=self.read_zone)
        return replace(plan, warnings=warnings) if warnings else plan

    # -- apply -------------------------------------------------------------------

    def _send_update(self, update: dns.update.UpdateMessage) -> dns.message.Message:
        """One UPDATE on a fresh connection (an idle reused one may be half-closed,
        which would make the outcome ambiguous for no reason)."""
        conn = Connection(*self.primary, self.timeout)
        try:
            (response,) = conn.exchange([update])
            return response
        finally:
            conn.close()

    def apply(self, plan: Plan) -> ApplyResult:
        """One signed UPDATE, then a read-back of every key (see `apply`)."""
        return apply_plan(self, plan)

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
            conn = Connection(*address, self.timeout)
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

    def verify_caches(self, plan: Plan, *, applied_at: datetime) -> list[CacheCheck]:
        """One CacheCheck per declared resolver, all asked at once (see
        dns_adapters.resolver_checks for the stale rule)."""
        if not self.resolvers or not plan.steps:
            return []
        negative_ttl = self._negative_ttl_for(plan)
        timeout = min(self.timeout, RESOLVER_TIMEOUT)
        with ThreadPoolExecutor(max_workers=len(self.resolvers), thread_name_prefix="resolver") as pool:
            return list(pool.map(lambda resolver: verify_resolver(
                resolver, plan, applied_at=applied_at, negative_ttl=negative_ttl, timeout=timeout), self.resolvers))

    def _negative_ttl_for(self, plan: Plan) -> int | None:
        """The zone's negative-caching TTL when the plan creates an RRset (a resolver
        may keep answering "no such record" that long), read once per adapter: from
        the plan's own SOA step if it has one, else from the primary. None when no
        step creates anything, or the read failed (tried again next round)."""
        if all(step.before is not None for step in plan.steps):
            return None
        if self._negative_ttl is None:
            soa_key = RRKey(self.origin.to_text(), "SOA")
            soa = next((step.before for step in plan.steps if step.key == soa_key and step.before), None)
            if soa is None:
                try:
                    soa = self.read([soa_key]).get(soa_key)
                except AdapterError:
                    return None
            self._negative_ttl = negative_cache_ttl(soa)
        return self._negative_ttl

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


def _tsig_reason(exc: Exception) -> str:
    return type(exc).__name__.replace("Peer", "").upper() or "TSIG error"
