"""A real OpenID Connect provider process for the sign-in tests: a tiny
django-oauth-toolkit project (this directory) with its own SQLite file and a
fresh RSA key, on a free loopback port."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

HERE = Path(__file__).resolve().parent


class IdentityProvider:
    """`serve.py` as a child process; `users` maps a username to its password,
    email and the claims its tokens carry (groups, amr, acr)."""

    def __init__(self, users: dict[str, dict[str, Any]], *, client_id: str, client_secret: str,
                 redirect_uri: str) -> None:
        self.users, self.client_id, self.client_secret = users, client_id, client_secret
        self.redirect_uri = redirect_uri
        self.dir = Path(tempfile.mkdtemp(prefix="changegate-idp-"))
        self.log = self.dir / "idp.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return f"{self.url}/o"

    def start(self, timeout: float = 60) -> IdentityProvider:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.dir / "key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (self.dir / "users.json").write_text(json.dumps(self.users))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))}
        env.update(IDP_DB=str(self.dir / "idp.sqlite3"), IDP_KEY_FILE=str(self.dir / "key.pem"),
                   IDP_USERS_FILE=str(self.dir / "users.json"), IDP_CLIENT_ID=self.client_id,
                   IDP_CLIENT_SECRET=self.client_secret, IDP_REDIRECT_URI=self.redirect_uri)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([sys.executable, str(HERE / "serve.py")], cwd=HERE, env=env,
                                            stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        assert self.process.stdout is not None
        # serve.py prints "READY <port>" once it listens: wait for that line, not a port.
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline().decode() if ready else ""
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"the identity provider did not start:\n{self.log.read_text()[-3000:]}")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)
