"""The period report as CSV, for the operator at the shell (who sees every target
and the events without one): every change with its outcome, every emergency change
and its review, every out-of-band change, every permission change (audit.report)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.report import period_report, report_csv, report_query
from changes.errors import ServiceError


class Command(BaseCommand):
    help = ("The audit period report as CSV: changes with their outcome, emergency changes and their review, "
            "out-of-band changes, permission changes. One row per entry; `section` says which.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", required=True, metavar="ISO8601", help="first moment included (naive = UTC)")
        parser.add_argument("--until", required=True, metavar="ISO8601", help="first moment excluded")
        parser.add_argument("--target", action="append", default=[], metavar="ID|NAME",
                            help="only this target (repeat for several); leaves out the system-wide events")
        parser.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            since, until, targets = report_query(user=None, since=options["since"], until=options["until"],
                                                 targets=options["target"])
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        lines = report_csv(period_report(user=None, since=since, until=until, targets=targets))
        if options["output"]:
            with open(options["output"], "w", encoding="utf-8", newline="") as out:
                out.writelines(lines)
            self.stderr.write(f"wrote {options['output']}")
            return
        for line in lines:
            self.stdout.write(line, ending="")
