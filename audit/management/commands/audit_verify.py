"""Verify the audit chain in the database, in place: the same checks as
`changegate-audit verify` over a full export (chain, hashes, signed checkpoints,
columns against the stored canonical text), plus the published checkpoints and
the chain head row."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.chain import signing_public_key
from audit.export import ExportQuery, export_stream_reader
from changegate_audit import verify as offline
from changes.models import AuditChainHead


class Command(BaseCommand):
    help = ("Verify the whole audit chain in the database: every hash and link, every stored checkpoint "
            "(against the signing key's public key), every row's columns against its hashed record, the published "
            "checkpoint file (CHANGEGATE_AUDIT_CHECKPOINT_FILE or --checkpoints) and the chain head. "
            "Prints OK or the first bad seq and why; exits 1 on a failure.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pubkey", metavar="FILE",
                            help="the public key checkpoints must be signed with (default: the configured key's)")
        parser.add_argument("--checkpoints", metavar="FILE",
                            help="published checkpoints to check against (default: CHANGEGATE_AUDIT_CHECKPOINT_FILE)")
        parser.add_argument("--extends", metavar="OLD_EXPORT",
                            help="an earlier JSON Lines export the database must still extend")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            pubkey = offline.load_public_key(options["pubkey"]) if options["pubkey"] else signing_public_key()
            published = None
            if options["checkpoints"]:
                published = offline.load_published_checkpoints(options["checkpoints"])
            elif settings.CHANGEGATE_AUDIT_CHECKPOINT_FILE:
                default = Path(settings.CHANGEGATE_AUDIT_CHECKPOINT_FILE)
                # Nothing published yet (a new install) is not an error of the chain.
                if default.exists() and default.stat().st_size:
                    published = offline.load_published_checkpoints(str(default))
            old = options["extends"]
            extends = partial(open, old, "rb") if old else None
            result = offline.verify_stream(lambda: export_stream_reader(user=None, query=ExportQuery()),
                                           pubkey=pubkey, checkpoints=published, extends=extends, from_start=True)
        except (offline.UsageError, OSError) as exc:
            raise CommandError(str(exc)) from None
        for line in result.report():
            self.stdout.write(line)
        if not result.ok:
            raise CommandError(f"the audit chain does not verify: {result.failure}")
        head = AuditChainHead.objects.filter(id=1).values_list("seq", "hash").first() or (0, offline.GENESIS_HASH)
        if head != (result.last_seq or 0, result.head or offline.GENESIS_HASH):
            raise CommandError(f"the chain head row says seq {head[0]} hash {head[1]}, but the last event is seq "
                               f"{result.last_seq} hash {result.head}: events were removed or the head was moved")
        if published is None:
            self.stdout.write("no published checkpoints compared: without them (or an earlier export, --extends) "
                              "a rewrite of the chain by the database's owner cannot be told")
