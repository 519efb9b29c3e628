#!/usr/bin/env python
"""`make run`: the whole changegate demo on one machine, stopped by one Ctrl-C.

Runs with the project's virtualenv python from the repository root:

1. checks that the web port is free (clear error naming its owner when not);
2. `manage.py migrate` on the default database (SQLite in var/ unless DATABASE_URL),
   then `manage.py audit_keygen --if-missing`: the audit checkpoint signing key
   var/audit-signing.pem (public key var/audit-signing.pub) is made once and
   kept; every process gets CHANGEGATE_AUDIT_SIGNING_KEY_FILE and
   CHANGEGATE_AUDIT_CHECKPOINT_FILE (var/audit-checkpoints.jsonl) unless set;
3. redis: reuses the one answering at CELERY_BROKER_URL (default 127.0.0.1:6379),
   else starts `redis-server` on that port, or on a free port when that one is
   taken by something that is not redis;
4. a throwaway BIND 9 `named` (dns_adapters.local_named.LocalNamed) serving the
   demo zone `demo.test` with a TSIG key on a free loopback port; its directory
   var/named survives restarts (zone, journal and key are reused; --fresh-zone
   starts over). Its TSIG key is in var/keys (CHANGEGATE_KEY_DIR, the only place
   the gateway reads keys from). Where it listens and the key file go to var/demo.env;
5. the firewall demo when run as root with nft (scripts/firewall_demo.py): a
   namespace `cgdemo-fw` with table `inet changegate` and a small TCP service,
   torn down at exit; skipped with a one-line reason otherwise;
   then `manage.py demo_setup` (demo users, role groups, the demo targets);
6. a Celery worker, Celery beat and `manage.py runserver 127.0.0.1:8000 --noreload`;
7. prints where to log in, then supervises: SIGINT/SIGTERM/SIGHUP (Ctrl-C) or any
   child dying stops everything it started. Each child runs in its own process
   group (and, where util-linux `setpriv` exists, dies with this process even if
   it is SIGKILLed); a second Ctrl-C kills at once.

Children's output is shown prefixed with their name and kept in var/log/NAME.log.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dns_adapters.local_named import LocalNamed, default_zone_text, find_named, free_port  # noqa: E402
from firewall_demo import FirewallDemo, skip_reason as firewall_skip_reason  # noqa: E402 - beside this script

VAR = Path(os.environ.get("CHANGEGATE_VAR_DIR", str(ROOT / "var"))).resolve()
NAMED_DIR = VAR / "named"
# The gateway reads TSIG keys only from CHANGEGATE_KEY_DIR (default var/keys): the
# demo key lives there, not beside named's files.
KEY_DIR = Path(os.environ.get("CHANGEGATE_KEY_DIR") or str(VAR / "keys")).resolve()
# Audit checkpoints are signed by default (issue 9): the Ed25519 key is made once
# and kept across restarts, outside the TSIG key directory (a target's key file
# can never name it); checkpoints are published to an append-only file beside it.
AUDIT_KEY = Path(os.environ.get("CHANGEGATE_AUDIT_SIGNING_KEY_FILE") or str(VAR / "audit-signing.pem")).resolve()
AUDIT_PUB = AUDIT_KEY.with_suffix(".pub")
AUDIT_CHECKPOINTS = Path(os.environ.get("CHANGEGATE_AUDIT_CHECKPOINT_FILE")
                         or str(VAR / "audit-checkpoints.jsonl")).resolve()
LOG_DIR = VAR / "log"
PID_FILE = VAR / "devrun.pid"
CHILDREN_FILE = VAR / "devrun.children.json"
DEMO_ENV = VAR / "demo.env"

DEMO_ZONE = "demo.test"
DEMO_KEY_NAME = "changegate-key"
DEMO_RECORDS = (
    "www 300 IN A 192.0.2.10\n"
    "www 300 IN A 192.0.2.11\n"
    "api 300 IN A 192.0.2.20\n"
    "pay 300 IN A 192.0.2.30\n"
    "pay 300 IN AAAA 2001:db8::30\n"
    "mail 300 IN A 192.0.2.25\n"
    "@ 300 IN MX 10 mail\n"
    "alias 300 IN CNAME www\n"
    'txt 300 IN TXT "v=spf1 -all"\n'
)
DEMO_USERS = (
    ("admin", "superuser"),
    ("alice", "engineer"),
    ("bob", "reviewer"),
    ("carol", "second reviewer"),
    ("dave", "auditor"),
)
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

_print_lock = threading.Lock()


def say(message: str, *, prefix: str = "devrun") -> None:
    with _print_lock:
        print(f"{prefix:>7} | {message}", flush=True)


class Fatal(Exception):
    """A clear, user-facing reason to stop."""


class Stop(BaseException):
    """Raised in the main thread by the first SIGINT/SIGTERM/SIGHUP."""


# --------------------------------------------------------------------------- processes


class Child:
    def __init__(self, name: str, process: subprocess.Popen[bytes], cmd: list[str]) -> None:
        self.name = name
        self.process = process
        self.cmd = cmd
        self.pgid = process.pid  # start_new_session: the child leads its own group


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Supervisor:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.children: list[Child] = []
        self.named: LocalNamed | None = None
        self.setpriv = shutil.which("setpriv")
        self.stopping = False

    # -- starting

    def spawn(self, name: str, cmd: list[str]) -> Child:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        full = cmd
        if self.setpriv:  # dies with us even if we are SIGKILLed: no orphans
            full = [self.setpriv, "--pdeathsig", "TERM", "--", *cmd]
        process = subprocess.Popen(
            full,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child = Child(name, process, cmd)
        self.children.append(child)
        self._record_children()
        threading.Thread(target=self._pump, args=(child,), daemon=True).start()
        return child

    def _pump(self, child: Child) -> None:
        assert child.process.stdout is not None
        with open(LOG_DIR / f"{child.name}.log", "ab") as log:
            for raw in iter(child.process.stdout.readline, b""):
                log.write(raw)
                log.flush()
                say(raw.decode(errors="replace").rstrip("\n"), prefix=child.name)

    def run_once(self, name: str, cmd: list[str]) -> None:
        """Run a setup command to completion, output shown prefixed; fail loudly."""
        child = self.spawn(name, cmd)
        code = child.process.wait()
        self.children.remove(child)
        self._record_children()
        if code != 0:
            raise Fatal(f"`{' '.join(cmd[1:])}` failed with exit code {code} (see above)")

    def _record_children(self) -> None:
        """Remember what runs, so a later run can clean up after a SIGKILLed one."""
        # The command as exec'd (setpriv execs it in turn): /proc/PID/cmdline shows exactly this.
        rows = [{"name": c.name, "pid": c.process.pid, "cmdline": c.cmd} for c in self.children]
        CHILDREN_FILE.write_text(json.dumps(rows))

    # -- watching

    def first_dead(self) -> Child | None:
        for child in self.children:
            if child.process.poll() is not None:
                return child
        return None

    # -- stopping

    def stop_all(self, timeout: float = 15.0) -> None:
        self.stopping = True
        running = [c for c in self.children if c.process.poll() is None]
        if running:
            say("stopping " + ", ".join(c.name for c in running))
        for child in running:
            _killpg(child.pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                say(f"{child.name} did not stop in {timeout:.0f}s; killing it")
            _killpg(child.pgid, signal.SIGKILL)  # whatever is left of its group (pool workers)
            try:
                child.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                say(f"{child.name} (pid {child.process.pid}) survived SIGKILL")
        if self.named is not None:
            say("stopping named")
            self.named.stop(cleanup=False)
            self.named = None
        self.children = [c for c in self.children if c.process.poll() is None]

    def kill_all_now(self) -> None:
        for child in self.children:
            _killpg(child.pgid, signal.SIGKILL)
        if self.named is not None and self.named.process is not None:
            _killpg(self.named.process.pid, signal.SIGKILL)


# --------------------------------------------------------------------------- checks


def port_owner(port: int) -> str:
    """Best effort: who listens on TCP port `port` (needs ss from iproute2)."""
    ss = shutil.which("ss")
    if not ss:
        return ""
    try:
        out = subprocess.run(
            [ss, "-H", "-ltnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    users = re.findall(r'\(\("([^"]+)",pid=(\d+)', out)
    return ", ".join(f"{name} (pid {pid})" for name, pid in users)


def require_free_port(host: str, port: int, what: str, hint: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as runserver does
        try:
            sock.bind((host, port))
        except OSError as exc:
            owner = port_owner(port)
            raise Fatal(
                f"{host}:{port} is already in use{' by ' + owner if owner else ''} ({exc.strerror}); "
                f"{what} cannot start there." + (f" {hint}" if hint else "")
            ) from None


def check_not_running() -> None:
    if PID_FILE.exists():
        try:
            pid = int(PID_FILE.read_text().strip())
        except ValueError:
            pid = 0
        cmdline = _proc_cmdline(pid) if pid else None
        if pid and pid != os.getpid() and cmdline and any("devrun.py" in part for part in cmdline):
            raise Fatal(f"make run is already running (pid {pid}); stop it with Ctrl-C in its terminal or `kill {pid}`")


def reap_stale() -> None:
    """Stop what a SIGKILLed earlier run left behind: its named and recorded children.

    Only processes whose command line is exactly what we recorded (or our own
    named.conf) are touched, so a reused pid is never hit.
    """
    victims: list[tuple[str, int]] = []
    try:
        rows = json.loads(CHILDREN_FILE.read_text())
    except (OSError, ValueError):
        rows = []
    for row in rows:
        pid, cmdline = row.get("pid"), row.get("cmdline")
        if isinstance(pid, int) and pid != os.getpid() and cmdline and _proc_cmdline(pid) == cmdline:
            victims.append((row.get("name", "?"), pid))
    named_pid_file = NAMED_DIR / "named.pid"
    try:
        named_pid = int(named_pid_file.read_text().strip())
    except (OSError, ValueError):
        named_pid = 0
    cmdline = _proc_cmdline(named_pid) if named_pid else None
    if cmdline and str(NAMED_DIR / "named.conf") in cmdline:
        victims.append(("named", named_pid))
    for name, pid in victims:
        say(f"stopping {name} (pid {pid}) left over from an earlier run")
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 10
    for _name, pid in victims:
        while _alive(pid) and _proc_cmdline(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid) and _proc_cmdline(pid) is not None:
            os.kill(pid, signal.SIGKILL)
    CHILDREN_FILE.unlink(missing_ok=True)


# --------------------------------------------------------------------------- redis


def redis_answers(url: str) -> bool:
    import redis  # celery[redis] brings it

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.exceptions.AuthenticationError as exc:
        raise Fatal(f"redis at {urlsplit(url).netloc} wants credentials ({exc}); put them in CELERY_BROKER_URL") from None
    except (redis.exceptions.RedisError, OSError):
        return False
    finally:
        client.close()


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    auth = parts.netloc.rpartition("@")[0]
    netloc = (auth + "@" if auth else "") + (f"[{host}]" if ":" in host else host) + f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def ensure_redis(sup: Supervisor, broker: str) -> str:
    """Return the broker URL to use, starting a redis-server child when needed."""
    parts = urlsplit(broker)
    if parts.scheme not in ("redis", "rediss"):
        say(f"CELERY_BROKER_URL is {parts.scheme}://, not redis: using it as it is")
        return broker
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if redis_answers(broker):
        say(f"using the redis that answers on {host}:{port}")
        return broker
    if host not in LOOPBACK:
        raise Fatal(f"no redis answers at {host}:{port} (CELERY_BROKER_URL); start it or unset the variable")
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise Fatal("redis-server is not installed (as root: apt-get install redis-server; make run does it)")
    try:
        require_free_port("127.0.0.1", port, "redis", "")
    except Fatal as exc:
        new_port = free_port()
        say(f"{exc} Starting redis on free port {new_port} instead.")
        port = new_port
        broker = with_port(broker, port)
    if parts.password:
        raise Fatal("CELERY_BROKER_URL has a password but no redis answers there; start that redis yourself")
    say(f"starting redis-server on 127.0.0.1:{port}")
    child = sup.spawn(
        "redis",
        [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    )
    deadline = time.monotonic() + 15
    while not redis_answers(broker):
        if child.process.poll() is not None:
            raise Fatal(f"redis-server exited with code {child.process.returncode} (see above)")
        if time.monotonic() > deadline:
            raise Fatal(f"redis-server did not answer on 127.0.0.1:{port} within 15 s")
        time.sleep(0.1)  # readiness poll
    return broker


# --------------------------------------------------------------------------- named


def _saved_secret(key_file: Path) -> str | None:
    try:
        match = re.search(r'secret\s+"([^"]+)"', key_file.read_text())
    except OSError:
        return None
    return match.group(1) if match else None


def start_named(sup: Supervisor, fresh: bool) -> LocalNamed:
    if find_named() is None:
        raise Fatal("BIND 9 named is not installed (as root: apt-get install bind9; make run does it)")
    zone_file = NAMED_DIR / f"{DEMO_ZONE}.db"
    if fresh and NAMED_DIR.exists():
        say(f"--fresh-zone: removing {NAMED_DIR}")
        shutil.rmtree(NAMED_DIR)
    if zone_file.exists():
        # Keep the zone as the demo left it: named replays its journal on top.
        zone_text = zone_file.read_text()
        say(f"reusing zone {DEMO_ZONE} from {zone_file} (make run RUN_ARGS=--fresh-zone to start over)")
    else:
        zone_text = default_zone_text(DEMO_ZONE, DEMO_RECORDS)
        for journal in NAMED_DIR.glob("*.jnl"):
            journal.unlink()
    server = LocalNamed({DEMO_ZONE: zone_text}, workdir=NAMED_DIR, key_name=DEMO_KEY_NAME, key_dir=KEY_DIR)
    # Before the key directory existed the demo key lived in var/named: keep using it.
    secret = _saved_secret(server.key_file) or _saved_secret(NAMED_DIR / f"{DEMO_KEY_NAME}.key")
    if secret:
        server.secret = secret  # same TSIG key across restarts
    sup.named = server
    try:
        server.start()
    except RuntimeError as exc:
        sup.named = None
        raise Fatal(
            f"{exc}\n(named log: {NAMED_DIR / 'named.log'}; `make run RUN_ARGS=--fresh-zone` starts the zone over)"
        ) from None
    say(f"named serves {DEMO_ZONE} on {server.primary} (pid {server.process.pid if server.process else '?'})")
    return server


def write_demo_env(values: dict[str, str]) -> None:
    lines = ["# Written by scripts/devrun.py (make run); valid while it runs.\n"]
    lines += [f"{key}={value}\n" for key, value in values.items()]
    DEMO_ENV.write_text("".join(lines))


# --------------------------------------------------------------------------- main


def wait_for_web(web: Child, url: str, timeout: float = 60.0) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via http_proxy
    deadline = time.monotonic() + timeout
    while True:
        if web.process.poll() is not None:
            raise Fatal(f"the web server exited with code {web.process.returncode} (see above)")
        try:
            with opener.open(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise Fatal(f"{url} did not answer 200 within {timeout:.0f} s")
        time.sleep(0.2)  # readiness poll


def _rel(path: Path) -> str:
    return os.path.relpath(path, Path.cwd()) if path.is_relative_to(ROOT) else str(path)


def start_firewall(sup: Supervisor) -> FirewallDemo | None:
    """The firewall demo (namespace, ruleset, service), or None with the reason said."""
    reason = firewall_skip_reason()
    if reason:
        say(f"firewall demo skipped: {reason}")
        return None
    demo = FirewallDemo(VAR / "fw-demo")
    try:
        demo.start()
        sup.spawn("fw-svc", demo.service_command())
        demo.wait_for_service()
    except RuntimeError as exc:
        demo.stop()
        raise Fatal(f"firewall demo: {exc}") from None
    return demo


def banner(base_url: str, password: str, named: LocalNamed, broker: str, fw: FirewallDemo | None = None) -> None:
    users = "\n".join(f"      {name:<6} {role}" for name, role in DEMO_USERS)
    rel_key = os.path.relpath(named.key_file, Path.cwd())
    text = f"""
  changegate demo is up.

  Log in:    {base_url}admin/
  API:       {base_url}api/v1/   (docs: {base_url}api/docs/, {base_url}api/redoc/)
  CLI:       .venv/bin/changegate --help   (or `source .venv/bin/activate`, then `changegate ...`);
             CHANGEGATE_URL={base_url} CHANGEGATE_TOKEN=$(.venv/bin/python manage.py drf_create_token alice | awk '{{print $3}}')
             .venv/bin/changegate-audit verify EXPORT ...   (the offline verifier, see Audit below)
  Health:    {base_url}healthz
  Users (password for all: {password}):
{users}

  DNS:       zone {DEMO_ZONE} on {named.primary}, TSIG key {named.key_name} in {rel_key}
             dig @127.0.0.1 -p {named.port} -k {rel_key} {DEMO_ZONE} AXFR
{fw.banner_lines() if fw else "  Firewall:  skipped (needs root and nft)"}
  Broker:    {broker}
  Audit:     checkpoints signed by {_rel(AUDIT_KEY)} (public key {_rel(AUDIT_PUB)}), published to {_rel(AUDIT_CHECKPOINTS)}
             changegate-audit verify EXPORT --pubkey {_rel(AUDIT_PUB)} --checkpoints {_rel(AUDIT_CHECKPOINTS)}
  Settings:  {DEMO_ENV.relative_to(ROOT) if DEMO_ENV.is_relative_to(ROOT) else DEMO_ENV}   logs: {LOG_DIR}/

  Ctrl-C stops everything.
"""
    with _print_lock:
        print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("CHANGEGATE_PORT", "8000")),
                        help="web port on 127.0.0.1 (default 8000, or CHANGEGATE_PORT)")
    parser.add_argument("--password", default=os.environ.get("CHANGEGATE_DEMO_PASSWORD", "changegate-demo"),
                        help="password of the demo users (default changegate-demo)")
    parser.add_argument("--fresh-zone", action="store_true", help="start demo.test over from the demo records")
    parser.add_argument("--no-beat", action="store_true", help="do not start Celery beat")
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    env["PYTHONUNBUFFERED"] = "1"
    env["CHANGEGATE_VAR_DIR"] = str(VAR)
    env["CHANGEGATE_KEY_DIR"] = str(KEY_DIR)
    py = sys.executable
    sup = Supervisor(env)

    def on_signal(signum: int, _frame: object) -> None:
        if sup.stopping:
            say(f"{signal.Signals(signum).name} again: killing everything now")
            sup.kill_all_now()
            return
        sup.stopping = True
        raise Stop(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    VAR.mkdir(parents=True, exist_ok=True)
    code = 0
    owns_pid_file = False
    fw: FirewallDemo | None = None
    try:
        check_not_running()
        PID_FILE.write_text(f"{os.getpid()}\n")
        owns_pid_file = True
        reap_stale()
        require_free_port("127.0.0.1", args.port, "the web server",
                          f"Stop that process or pick another port: make run RUN_ARGS='--port {args.port + 1}'.")

        sup.run_once("migrate", [py, "manage.py", "migrate", "--noinput"])
        sup.run_once("audit-key", [py, "manage.py", "audit_keygen", "--if-missing", str(AUDIT_KEY),
                                   "--public-out", str(AUDIT_PUB)])
        env["CHANGEGATE_AUDIT_SIGNING_KEY_FILE"] = str(AUDIT_KEY)
        env["CHANGEGATE_AUDIT_CHECKPOINT_FILE"] = str(AUDIT_CHECKPOINTS)
        broker = ensure_redis(sup, env.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0"))
        named = start_named(sup, args.fresh_zone)
        base_url = f"http://127.0.0.1:{args.port}/"
        demo = {
            "CHANGEGATE_DEMO_ZONE": DEMO_ZONE,
            "CHANGEGATE_DEMO_DNS_PRIMARY": named.primary,
            "CHANGEGATE_DEMO_TSIG_KEY_NAME": named.key_name,
            "CHANGEGATE_DEMO_TSIG_KEY_FILE": str(named.key_file),
            "CHANGEGATE_KEY_DIR": str(KEY_DIR),
            "CHANGEGATE_AUDIT_SIGNING_KEY_FILE": str(AUDIT_KEY),
            "CHANGEGATE_AUDIT_CHECKPOINT_FILE": str(AUDIT_CHECKPOINTS),
            "CELERY_BROKER_URL": broker,
            "CHANGEGATE_URL": base_url,
            "CHANGEGATE_PUBLIC_URL": base_url,  # alerts link to the change's page
        }
        fw = start_firewall(sup)
        if fw is not None:
            demo.update(fw.env())
        env.update(demo)
        write_demo_env(demo)
        say(f"wrote {DEMO_ENV}")
        sup.run_once("setup", [py, "manage.py", "demo_setup", "--password", args.password])

        sup.spawn("worker", [py, "-m", "celery", "-A", "config", "worker", "-l", "info", "--concurrency", "2"])
        if not args.no_beat:
            sup.spawn("beat", [py, "-m", "celery", "-A", "config", "beat", "-l", "info",
                               "--schedule", str(VAR / "celerybeat-schedule")])
        web = sup.spawn("web", [py, "manage.py", "runserver", f"127.0.0.1:{args.port}", "--noreload"])
        wait_for_web(web, base_url + "healthz")
        banner(base_url, args.password, named, broker, fw)

        while True:
            dead = sup.first_dead()
            if dead is not None:
                raise Fatal(f"{dead.name} exited with code {dead.process.returncode}; stopping everything")
            if sup.named is not None and sup.named.process is not None and sup.named.process.poll() is not None:
                raise Fatal(f"named exited with code {sup.named.process.returncode}:\n{sup.named.log_tail()}")
            time.sleep(0.5)
    except Stop as stop:
        say(f"{stop.args[0]}: shutting down")
    except Fatal as exc:
        sup.stopping = True
        say(f"error: {exc}")
        code = 1
    finally:
        sup.stopping = True
        sup.stop_all()
        if fw is not None:
            say("removing the firewall demo namespace")
            fw.stop()
        if owns_pid_file:
            CHILDREN_FILE.unlink(missing_ok=True)
            PID_FILE.unlink(missing_ok=True)
            DEMO_ENV.unlink(missing_ok=True)
    if code == 0:
        say("stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
