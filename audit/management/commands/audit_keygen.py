"""Generate the Ed25519 key that signs audit checkpoints (once per deployment)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.chain import audit_signing_key_generate


class Command(BaseCommand):
    help = (
        "Write a new Ed25519 private key for audit checkpoints (PKCS#8 PEM, mode 0600) and print its public key "
        "(base64 of the raw 32 bytes: what auditors pass to `changegate-audit verify --pubkey`). "
        "Never overwrites a key. Then set CHANGEGATE_AUDIT_SIGNING_KEY_FILE to the file."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", nargs="?", help="where to write the key (default: CHANGEGATE_AUDIT_SIGNING_KEY_FILE)")
        parser.add_argument("--public-out", metavar="FILE", help="also write the public key (base64) to FILE")
        parser.add_argument("--if-missing", action="store_true",
                            help="a key already there is fine: print its public key instead of failing")

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["path"] or settings.CHANGEGATE_AUDIT_SIGNING_KEY_FILE
        if not path:
            raise CommandError("give the key file's path, or set CHANGEGATE_AUDIT_SIGNING_KEY_FILE")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            public = audit_signing_key_generate(target)
            made = True
        except FileExistsError:
            if not options["if_missing"]:
                raise CommandError(f"{path} exists: a signing key is never replaced as a side effect "
                                   "(move it away first if you mean to rotate it)") from None
            public = _public_of(target)
            made = False
        if options["public_out"]:
            Path(options["public_out"]).write_text(public + "\n")
        key_id = hashlib.sha256(base64.b64decode(public)).hexdigest()[:16]
        self.stderr.write(f"{'wrote' if made else 'kept'} {path} (key_id {key_id}); public key:")
        self.stdout.write(public)


def _public_of(path: Path) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = path.read_bytes()
    try:
        key = (serialization.load_pem_private_key(data, password=None) if data.lstrip().startswith(b"-----BEGIN")
               else Ed25519PrivateKey.from_private_bytes(data))
    except ValueError as exc:
        raise CommandError(f"{path}: not an Ed25519 private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CommandError(f"{path}: not an Ed25519 private key")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()
