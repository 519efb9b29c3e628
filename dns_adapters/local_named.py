"""A throwaway BIND 9 `named` on a free loopback port, for tests, benchmarks and
`make run`. Never port 53, never the system named: everything lives in one
directory (config, zones, journals, TSIG key) and the process is stopped by its pid.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

NAMED_CANDIDATES = ("named", "/usr/sbin/named", "/usr/local/sbin/named")


def find_named() -> str | None:
    for candidate in NAMED_CANDIDATES:
        path = shutil.which(candidate)
        if path:
            return path
    return None


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free loopback port found")


def write_key_file(path: Path, key_name: str, secret: str, algorithm: str = "hmac-sha256") -> None:
    path.write_text(f'key "{key_name}" {{\n\talgorithm {algorithm};\n\tsecret "{secret}";\n}};\n')
    path.chmod(0o600)


def default_zone_text(zone: str, records: str = "") -> str:
    origin = zone.rstrip(".") + "."
    return (
        f"$ORIGIN {origin}\n$TTL 300\n"
        f"@ 3600 IN SOA ns1.{origin} hostmaster.{origin} 1 3600 600 604800 300\n"
        f"@ 3600 IN NS ns1.{origin}\n"
        f"ns1 3600 IN A 127.0.0.1\n" + records
    )


class ServerProcess:
    """What every throwaway DNS server of the tests, bench and demo shares: waiting
    until each zone answers, the log's tail, stopping (process group SIGTERM, then
    SIGKILL) and the context-manager form. Subclasses set `dir`, `port`, `zones`,
    `process`, `start_timeout` and `log_name`, and say whether `dir` is theirs."""

    dir: Path
    port: int
    zones: dict[str, str]
    process: subprocess.Popen[bytes] | None
    start_timeout: float
    log_name = "server.log"
    _own_dir = True

    def start(self) -> ServerProcess:  # pragma: no cover - every subclass starts its own way
        raise NotImplementedError

    def _wait_ready(self) -> bool:
        """Poll every zone's SOA over TCP until all answer (Knot loads zones in the
        background after it starts listening), the process exits, or time runs out."""
        deadline = time.monotonic() + self.start_timeout
        pending = list(self.zones)
        while pending and time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            query = dns.message.make_query(pending[0], dns.rdatatype.SOA)
            try:
                response = dns.query.tcp(query, "127.0.0.1", port=self.port, timeout=1.0)
            except (OSError, dns.exception.DNSException):
                time.sleep(0.05)  # retry interval of a readiness poll, not synchronization
                continue
            if response.rcode() == dns.rcode.NOERROR and response.answer:
                pending.pop(0)
            else:
                time.sleep(0.05)
        return not pending

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.dir / self.log_name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, *, cleanup: bool = True) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if cleanup and self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _options_head(directory: Path, port: int) -> str:
    """The start of a throwaway named's options block: its own files in `directory`,
    listening on loopback `port` only (never port 53, never IPv6)."""
    return ("options {\n"
            f'  directory "{directory}";\n'
            f'  pid-file "{directory}/named.pid";\n'
            f'  session-keyfile "{directory}/session.key";\n'
            f'  managed-keys-directory "{directory}";\n'
            f"  listen-on port {port} {{ 127.0.0.1; }};\n"
            "  listen-on-v6 { none; };\n")


_S = TypeVar("_S", bound="ServerProcess")


def _launch_named(server: _S, named: str, configure: Callable[[], Path], *, what: str) -> _S:
    """Start `named -g` on the config `configure()` writes (it also picks the port),
    up to three times: the free port can be taken between the probe and the bind."""
    last_error = ""
    for _attempt in range(3):
        conf = configure()
        log = open(server.dir / server.log_name, "wb")  # noqa: SIM115 - lives as long as the process
        cmd = [named, "-g", "-c", str(conf)]
        if os.geteuid() == 0:
            cmd += ["-u", "root"]
        server.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        if server._wait_ready():
            return server
        last_error = server.log_tail()
        server.stop(cleanup=False)
    raise RuntimeError(f"{what} did not start:\n{last_error}")


class LocalNamed(ServerProcess):
    """Start with `start()` (or as a context manager); `primary` is "127.0.0.1:PORT".

    `zones` maps zone name -> zone-file text (see `default_zone_text`). Every zone
    allows update and transfer only with the generated TSIG key, whose BIND-format
    file is `key_file`: in `key_dir` if given (the gateway reads keys only from its
    CHANGEGATE_KEY_DIR), else in the working directory.
    """

    log_name = "named.log"

    def __init__(
        self,
        zones: Mapping[str, str],
        *,
        workdir: str | os.PathLike[str] | None = None,
        key_name: str = "changegate-key",
        extra_keys: Iterable[str] = (),
        key_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.zones = dict(zones)
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="changegate-named-"))
        self.key_name = key_name
        self.secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self.key_dir = Path(key_dir) if key_dir else self.dir
        self.key_file = self.key_dir / f"{key_name}.key"
        # Extra keys are known to named but not allowed to update: for "wrong key" tests.
        self.extra_keys = {name: base64.b64encode(secrets.token_bytes(32)).decode() for name in extra_keys}
        self.start_timeout = start_timeout
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def primary(self) -> str:
        return f"127.0.0.1:{self.port}"

    def extra_key_file(self, name: str) -> Path:
        return self.key_dir / f"{name}.key"

    def zone_file(self, zone: str) -> Path:
        return self.dir / f"{zone.rstrip('.')}.db"

    def _write_config(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_key_file(self.key_file, self.key_name, self.secret)
        keys = [(self.key_name, self.secret)]
        for name, secret in self.extra_keys.items():
            write_key_file(self.extra_key_file(name), name, secret)
            keys.append((name, secret))
        key_blocks = "".join(
            f'key "{name}" {{ algorithm hmac-sha256; secret "{secret}"; }};\n' for name, secret in keys
        )
        zone_blocks = ""
        for zone, text in self.zones.items():
            path = self.zone_file(zone)
            path.write_text(text)
            zone_blocks += (
                f'zone "{zone.rstrip(".")}" {{ type primary; file "{path}";'
                f' allow-update {{ key "{self.key_name}"; }};'
                f' allow-transfer {{ key "{self.key_name}"; }}; }};\n'
            )
        conf = self.dir / "named.conf"
        conf.write_text(
            _options_head(self.dir, self.port) +
            "  recursion no;\n  dnssec-validation no;\n  notify no;\n"
            "  allow-query { 127.0.0.1; };\n"
            "  max-journal-size 64m;\n"
            "};\n"
            "controls { };\n" + key_blocks + zone_blocks
        )
        return conf

    def start(self, *, port: int | None = None) -> LocalNamed:
        """Start named; `port` reuses a known port (a restart the clients can follow)."""
        named = find_named()
        if named is None:
            raise FileNotFoundError("BIND 9 named not found (apt-get install bind9)")

        def configure() -> Path:
            self.port = port or free_port()
            return self._rewrite_port() if port and (self.dir / "named.conf").exists() else self._write_config()

        return _launch_named(self, named, configure, what="named")

    def _rewrite_port(self) -> Path:
        """Keep zones and journals (the zone's current content) and only listen again."""
        conf = self.dir / "named.conf"
        text = conf.read_text()
        start = text.index("listen-on port ") + len("listen-on port ")
        end = text.index(" ", start)
        conf.write_text(text[:start] + str(self.port) + text[end:])
        return conf


class LocalResolver(ServerProcess):
    """A throwaway caching resolver (BIND 9 `named`, recursion on) on a free loopback
    port that forwards every query to `upstream` ("127.0.0.1:PORT", a LocalNamed):
    what the company's resolvers are to changegate's resolver checks. It caches
    answers for their TTL like any resolver, so a test sees the old answer served
    until its TTL runs out. `address` is "127.0.0.1:PORT"; `zones` are only waited for
    at start (their SOA answers through the resolver).

    Forward-only, to the upstream alone: no root priming, nothing leaves the loopback.
    Prefetch and serve-stale are off so an answer lives exactly its TTL."""

    log_name = "named.log"

    def __init__(
        self,
        upstream: str,
        *,
        zones: Iterable[str] = (),
        workdir: str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host.strip("[]"), int(port))
        self.zones = {zone: "" for zone in zones}
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="changegate-resolver-"))
        self.start_timeout = start_timeout
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        host, port = self.upstream
        conf = self.dir / "named.conf"
        conf.write_text(
            _options_head(self.dir, self.port) +
            "  recursion yes;\n  allow-recursion { 127.0.0.1; };\n  allow-query { 127.0.0.1; };\n"
            "  dnssec-validation no;\n  notify no;\n"
            f"  forward only;\n  forwarders {{ {host} port {port}; }};\n"
            "  prefetch 0;\n  stale-answer-enable no;\n  stale-cache-enable no;\n"
            "};\n"
            "controls { };\n"
        )
        return conf

    def start(self) -> LocalResolver:
        named = find_named()
        if named is None:
            raise FileNotFoundError("BIND 9 named not found (apt-get install bind9)")

        def configure() -> Path:
            self.port = free_port()
            return self._write_config()

        return _launch_named(self, named, configure, what="the resolver named")
