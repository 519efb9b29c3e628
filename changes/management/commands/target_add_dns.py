"""Register a DNS zone as a target: a thin adapter over `services.target_register`.

The key file is passed by path only; its secret is never read or printed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from changes.management.commands._registration import (
    add_watch_arguments,
    describe_watch,
    register_or_fail,
    watch_options,
)
from changes.models import AuditEvent, Target


class Command(BaseCommand):
    help = (
        "Register a DNS zone served by PRIMARY (RFC 2136 + TSIG) as a change target. "
        "Checks that the zone answers with the key unless --no-check is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="target name (unique), e.g. the zone name")
        parser.add_argument("--primary", required=True, metavar="HOST:PORT",
                            help="the primary server that accepts signed UPDATEs")
        parser.add_argument("--tsig-key-file", required=True, metavar="PATH",
                            help="BIND-format key file inside CHANGEGATE_KEY_DIR "
                                 "(only the path is stored, never the secret)")
        parser.add_argument("--zone", help="zone name (default: NAME)")
        parser.add_argument("--nameserver", action="append", default=[], metavar="HOST:PORT", dest="nameservers",
                            help="authoritative server checked after apply; repeat for each (default: the primary)")
        parser.add_argument("--timeout", type=float, metavar="SECONDS", help="per-query timeout")
        parser.add_argument("--required-approvals", type=int, default=1, metavar="N")
        parser.add_argument("--bake-seconds", type=int, default=60, metavar="S",
                            help="how long health checks watch an applied change")
        parser.add_argument("--bake-max-seconds", type=int, default=3600, metavar="S",
                            help="cap on a bake that follows the old records' TTL (the bake time still applies)")
        add_watch_arguments(parser)
        parser.add_argument("--resolver", action="append", default=[], metavar="HOST:PORT", dest="resolvers",
                            help="a caching resolver the bake also asks for the changed names; repeat for each")
        parser.add_argument("--approval-lifetime", type=int, default=24 * 3600, metavar="S",
                            help="seconds an approval stays valid")
        parser.add_argument("--no-check", action="store_true",
                            help="do not query the zone before registering it")

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"]
        key_file = options["tsig_key_file"]
        config: dict[str, Any] = {
            "zone": options["zone"] or name,
            "primary": options["primary"],
            # A path typed in a shell means the shell's working directory.
            "tsig_key_file": str(Path(key_file).expanduser().absolute()) if key_file else key_file,
        }
        if options["nameservers"]:
            config["nameservers"] = options["nameservers"]
        if options["timeout"] is not None:
            config["timeout"] = options["timeout"]
        if options["resolvers"]:
            config["resolvers"] = options["resolvers"]
        target = register_or_fail(
            self, name=name, config=config, required_approvals=options["required_approvals"],
            approval_lifetime_seconds=options["approval_lifetime"], bake_seconds=options["bake_seconds"],
            bake_max_seconds=options["bake_max_seconds"], **watch_options(options),
            check_reachable=not options["no_check"],
        )
        for line in describe(target):
            self.stdout.write(f"  {line}")


def describe(target: Target) -> list[str]:
    config = target.config
    event = AuditEvent.objects.filter(target=target, action="target_registered").order_by("-seq").first()
    serial = event.payload.get("serial") if event else None
    return [
        f"zone:               {config.get('zone')}",
        f"primary:            {config.get('primary')}",
        f"nameservers:        {', '.join(config.get('nameservers', []))}",
        f"tsig key file:      {config.get('tsig_key_file')}",
        f"timeout:            {config.get('timeout')} s",
        f"SOA serial:         {serial if serial is not None else 'not checked'}",
        f"rrset_count:        {target.item_count if target.item_count is not None else 'not read'}",
        f"required approvals: {target.required_approvals}",
        f"approval lifetime:  {target.approval_lifetime_seconds} s",
        f"bake time:          {target.bake_seconds} s",
        f"bake cap:           {target.bake_max_seconds} s (a change bakes for the old TTL, at most this)",
    ] + describe_watch(target)
