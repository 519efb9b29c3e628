"""A throwaway Knot DNS `knotd` and a throwaway PowerDNS Authoritative `pdns_server`
on free loopback ports, for tests and benchmarks, like `local_named.LocalNamed`.

Never port 53, never the system service: each lives in one temporary directory
(config, zone files or SQLite database, journal, TSIG key file) and is stopped by
its pid. Both allow UPDATE and AXFR only with the generated TSIG key, whose
BIND-format file is `key_file`, so the adapter reads it exactly as for `named`.
"""

from __future__ import annotations

import base64
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from .local_named import ServerProcess, free_port, write_key_file

KNOTD_CANDIDATES = ("knotd", "/usr/sbin/knotd")
PDNS_CANDIDATES = ("pdns_server", "/usr/sbin/pdns_server")
PDNSUTIL_CANDIDATES = ("pdnsutil", "/usr/bin/pdnsutil")
PDNS_SCHEMA = Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")


def _find(candidates: Iterable[str]) -> str | None:
    for candidate in candidates:
        path = shutil.which(candidate)
        if path:
            return path
    return None


def find_knotd() -> str | None:
    return _find(KNOTD_CANDIDATES)


def find_pdns() -> str | None:
    """pdns_server, if it and pdnsutil and the gsqlite3 schema are all installed."""
    server = _find(PDNS_CANDIDATES)
    return server if server and _find(PDNSUTIL_CANDIDATES) and PDNS_SCHEMA.exists() else None


class _LocalServer(ServerProcess):
    """What both servers share: a directory, a generated key, a process, a port."""

    label = "server"

    def __init__(self, zones: Mapping[str, str], *, key_name: str = "changegate-key",
                 extra_keys: Iterable[str] = (), start_timeout: float = 30.0) -> None:
        self.zones = dict(zones)
        self.dir = Path(tempfile.mkdtemp(prefix=f"changegate-{self.label}-"))
        self.key_name = key_name
        self.secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self.key_dir = self.dir
        self.key_file = self.dir / f"{key_name}.key"
        # Extra keys are known to the server but may not update: for "wrong key" tests.
        self.extra_keys = {name: base64.b64encode(secrets.token_bytes(32)).decode() for name in extra_keys}
        self.start_timeout = start_timeout
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def primary(self) -> str:
        return f"127.0.0.1:{self.port}"

    def extra_key_file(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def _write_keys(self) -> None:
        write_key_file(self.key_file, self.key_name, self.secret)
        for name, secret in self.extra_keys.items():
            write_key_file(self.extra_key_file(name), name, secret)

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        raise NotImplementedError

    def start(self) -> _LocalServer:
        last_error = ""
        for _attempt in range(3):  # the free port can be taken between probe and bind
            self.port = free_port()
            self._prepare()
            with open(self.dir / "server.log", "ab") as log:
                self.process = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True, cwd=self.dir)
            if self._wait_ready():
                return self
            last_error = self.log_tail()
            self.stop(cleanup=False)
        raise RuntimeError(f"{self.label} did not start:\n{last_error}")


class LocalKnot(_LocalServer):
    """knotd serving `zones` (zone name -> zone-file text), declared up front.

    Zone files are never written back (zonefile-sync -1): updates live in the
    journal in the server's directory."""

    label = "knot"

    def _command(self) -> list[str]:
        knotd = find_knotd()
        if knotd is None:
            raise FileNotFoundError("Knot DNS knotd not found (apt-get install knot)")
        return [knotd, "-c", str(self.dir / "knot.conf")]

    def _prepare(self) -> None:
        self._write_keys()
        (self.dir / "db").mkdir(exist_ok=True)
        keys = [(self.key_name, self.secret), *self.extra_keys.items()]
        key_lines = "".join(f"  - id: {name}\n    algorithm: hmac-sha256\n    secret: {secret}\n"
                            for name, secret in keys)
        zone_lines = ""
        for zone, text in self.zones.items():
            path = self.dir / f"{zone.rstrip('.')}.zone"
            path.write_text(text)
            zone_lines += f"  - domain: {zone.rstrip('.')}\n    file: \"{path}\"\n    acl: changegate\n"
        (self.dir / "knot.conf").write_text(
            f"server:\n  rundir: \"{self.dir}\"\n  listen: 127.0.0.1@{self.port}\n"
            f"database:\n  storage: \"{self.dir}/db\"\n"
            f"key:\n{key_lines}"
            f"acl:\n  - id: changegate\n    key: {self.key_name}\n    action: [update, transfer]\n"
            "template:\n  - id: default\n    zonefile-sync: -1\n    zonefile-load: whole\n"
            "    journal-content: changes\n    semantic-checks: off\n"
            f"zone:\n{zone_lines}"
            "log:\n  - target: stderr\n    any: info\n"
        )


class LocalPdns(_LocalServer):
    """pdns_server with the gsqlite3 backend, RFC 2136 updates on (dnsupdate=yes,
    from 127.0.0.0/8 only) and every cache off, so a read right after a write sees it.
    Zones are loaded with `pdnsutil load-zone`; the key is imported with
    `pdnsutil import-tsig-key` and allowed per zone with TSIG-ALLOW-DNSUPDATE and
    TSIG-ALLOW-AXFR metadata. `add_zone` loads another zone while the server runs
    (the backend is asked on every query: nothing to reload)."""

    label = "pdns"

    def _pdnsutil(self, *args: str) -> None:
        pdnsutil = _find(PDNSUTIL_CANDIDATES)
        if pdnsutil is None:
            raise FileNotFoundError("pdnsutil not found (apt-get install pdns-server)")
        result = subprocess.run([pdnsutil, f"--config-dir={self.dir}", *args], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            # Never echo the arguments: one of them may be a secret.
            raise RuntimeError(f"pdnsutil {args[0]} failed: {result.stderr.strip()[-500:]}")

    def _command(self) -> list[str]:
        server = find_pdns()
        if server is None:
            raise FileNotFoundError("PowerDNS not found (apt-get install pdns-server pdns-backend-sqlite3)")
        return [server, f"--config-dir={self.dir}"]

    def _prepare(self) -> None:
        self._write_keys()
        database = self.dir / "pdns.sqlite3"
        (self.dir / "pdns.conf").write_text(
            "launch=gsqlite3\n"
            f"gsqlite3-database={database}\n"
            f"local-address=127.0.0.1\nlocal-port={self.port}\n"
            "dnsupdate=yes\nallow-dnsupdate-from=127.0.0.0/8\n"
            "disable-axfr=no\nallow-axfr-ips=127.0.0.0/8\n"
            f"socket-dir={self.dir}\n"
            "cache-ttl=0\nquery-cache-ttl=0\nnegquery-cache-ttl=0\nzone-cache-refresh-interval=0\n"
            "webserver=no\napi=no\nguardian=no\ndaemon=no\nwrite-pid=no\nsecurity-poll-suffix=\n"
        )
        if database.exists():
            return  # a restart keeps the zones
        with sqlite3.connect(database) as db:
            db.executescript(PDNS_SCHEMA.read_text())
        self._pdnsutil("import-tsig-key", self.key_name, "hmac-sha256", self.secret)
        for name, secret in self.extra_keys.items():
            self._pdnsutil("import-tsig-key", name, "hmac-sha256", secret)
        for zone, text in self.zones.items():
            self._load_zone(zone, text)

    def _load_zone(self, zone: str, text: str) -> None:
        zone = zone.rstrip(".")
        path = self.dir / f"{zone}.zone"
        path.write_text(text)
        self._pdnsutil("load-zone", zone, str(path))
        self._pdnsutil("set-meta", zone, "TSIG-ALLOW-DNSUPDATE", self.key_name)
        self._pdnsutil("set-meta", zone, "TSIG-ALLOW-AXFR", self.key_name)

    def add_zone(self, zone: str, text: str) -> None:
        self.zones[zone] = text
        self._load_zone(zone, text)

