"""Export the audit log to a file (or stdout): the same bytes as
GET /api/v1/audit/export/ with the same filters, for the operator at the shell,
who sees every target (and the events without one)."""

from __future__ import annotations

from typing import Any, BinaryIO

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.export import FORMATS, export_query, export_stream
from changes.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Export audit events as JSON Lines (verifiable offline with `changegate-audit verify`) or CSV. "
        "Every JSON Lines export is one contiguous piece of the chain: events the filters leave out stand as "
        "`withheld` link lines (seq, prev_hash, hash), so a filtered export verifies too."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=FORMATS, default="jsonl")
        parser.add_argument("--since", metavar="ISO8601", help="first moment included (date or date-time; naive = UTC)")
        parser.add_argument("--until", metavar="ISO8601", help="first moment excluded")
        parser.add_argument("--target", metavar="ID|NAME", help="only events of this target")
        parser.add_argument("--actor", metavar="USERNAME", help="only events by this user")
        parser.add_argument("--change", metavar="ID", help="only events of this change")
        parser.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")

    def handle(self, *args: Any, **options: Any) -> None:
        params = {name: options[name] for name in ("format", "since", "until", "target", "actor", "change")}
        try:
            query = export_query(user=None, params=params)
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        chunks = export_stream(user=None, query=query)
        if options["output"]:
            with open(options["output"], "wb") as out:
                self._write(chunks, out)
            self.stderr.write(f"wrote {options['output']}")
            return
        text_out = self.stdout._out  # the stream under Django's wrapper
        stream: BinaryIO | None = getattr(text_out, "buffer", None)
        if stream is not None:  # a real file or terminal: bytes, exactly as the API sends them
            text_out.flush()
            self._write(chunks, stream)
            stream.flush()
        else:  # a text stream (call_command(stdout=StringIO()))
            for chunk in chunks:
                self.stdout.write(chunk.decode("utf-8"), ending="")

    @staticmethod
    def _write(chunks: Any, out: BinaryIO) -> None:
        out.writelines(chunks)
