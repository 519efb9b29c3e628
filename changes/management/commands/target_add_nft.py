"""Register an nftables firewall host as a target: a thin adapter over
`services.target_register` (kind "nft").

The SSH key is passed by path only: ssh reads it when the helper runs; this command
never opens it. Registration checks the host live (the helper answers, nft runs, the
owned tables exist, or with --create-tables are created empty) and refuses otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from changes.management.commands._registration import (
    WATCH_FLAGS,
    add_watch_arguments,
    describe_watch,
    register_or_fail,
    watch_options,
)
from changes.models import AuditEvent, Target


def _absolute(path: str | None) -> str | None:
    # A path typed in a shell means the shell's working directory.
    return str(Path(path).expanduser().absolute()) if path else path


def _host_port(value: str) -> tuple[str, int | None]:
    """HOST, HOST:PORT or [V6]:PORT; a bare IPv6 address has no port."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":")
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, ""
    if not port:
        return host, None
    if not (port.isascii() and port.isdigit()):
        raise CommandError(f"target not registered:\n  ssh_port: {port!r} is not a port number")
    return host, int(port)


class Command(BaseCommand):
    help = (
        "Register an nftables firewall host as a change target, reached over SSH (the helper as a forced "
        "command) or as a local network namespace. changegate manages only the --table tables there. "
        "Checks the host live before storing anything."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="target name (unique), e.g. fw1")
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--ssh", metavar="HOST[:PORT]", help="reach the host over SSH")
        where.add_argument("--netns", metavar="NSNAME", help="a network namespace on this machine")
        parser.add_argument("--ssh-user", metavar="USER", help="SSH user (with --ssh)")
        parser.add_argument("--ssh-key-file", metavar="PATH",
                            help="private key inside CHANGEGATE_KEY_DIR (only the path is stored; ssh reads it)")
        parser.add_argument("--known-hosts", metavar="PATH", help="known_hosts file pinning the host key (with --ssh)")
        parser.add_argument("--helper", metavar="CMD",
                            help="the helper's command on the host (default changegate-nft-helper)")
        parser.add_argument("--table", action="append", default=[], dest="tables", metavar="'FAMILY NAME'",
                            help="a table changegate owns, e.g. 'inet changegate'; repeat for several (required)")
        parser.add_argument("--state-dir", metavar="DIR",
                            help="host directory for locks, reverts and the boot file (default /var/lib/changegate-nft)")
        parser.add_argument("--revert-seconds", type=int, metavar="N",
                            help="commit-confirmed revert deadline; 0 = no revert (default 120)")
        parser.add_argument("--management-port", type=int, metavar="PORT",
                            help="port people and changegate manage the host through (risk flag; default 22)")
        parser.add_argument("--timeout", type=float, metavar="SECONDS", help="per helper call (default 30)")
        parser.add_argument("--create-tables", action="store_true",
                            help="create missing owned tables empty instead of refusing")
        parser.add_argument("--required-approvals", type=int, default=1, metavar="N")
        parser.add_argument("--bake-seconds", type=int, default=60, metavar="S",
                            help="how long health checks watch an applied change")
        parser.add_argument("--bake-max-seconds", type=int, default=3600, metavar="S",
                            help="cap on a bake derived from cached old state (nftables keeps none: no effect today)")
        add_watch_arguments(parser)
        parser.add_argument("--approval-lifetime", type=int, default=24 * 3600, metavar="S",
                            help="seconds an approval stays valid")

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"]
        config = self._config(options)
        target = register_or_fail(
            self, name=name, label=_flag, kind="nft", config=config, required_approvals=options["required_approvals"],
            approval_lifetime_seconds=options["approval_lifetime"], bake_seconds=options["bake_seconds"],
            bake_max_seconds=options["bake_max_seconds"], **watch_options(options),
            prepare=options["create_tables"],
        )
        for line in describe(target):
            self.stdout.write(f"  {line}")

    def _config(self, options: dict[str, Any]) -> dict[str, Any]:
        """The kind's config from the flags; only what was given (the kind fills defaults)."""
        config: dict[str, Any] = {"tables": options["tables"]}
        if options["netns"] is not None:
            ssh_only = [flag for flag, key in (("--ssh-user", "ssh_user"), ("--ssh-key-file", "ssh_key_file"),
                                               ("--known-hosts", "known_hosts"), ("--helper", "helper"))
                        if options[key] is not None]
            if ssh_only:
                raise CommandError(f"target not registered:\n  transport: {', '.join(ssh_only)} only with --ssh")
            config.update(transport="netns", netns=options["netns"])
        else:
            host, port = _host_port(options["ssh"])
            config.update(transport="ssh", ssh_host=host, ssh_user=options["ssh_user"] or "",
                          ssh_key_file=_absolute(options["ssh_key_file"]) or "",
                          known_hosts_file=_absolute(options["known_hosts"]) or "")
            if port is not None:
                config["ssh_port"] = port
            if options["helper"] is not None:
                config["helper"] = options["helper"]
        for option, key in (("state_dir", "state_dir"), ("revert_seconds", "revert_seconds"),
                            ("management_port", "management_port"), ("timeout", "timeout")):
            if options[option] is not None:
                config[key] = options[option]
        return config


# Service field -> the flag an operator typed, so an error names what to fix.
FLAGS = {
    "config.netns": "--netns", "config.ssh_host": "--ssh", "config.ssh_port": "--ssh", "config.ssh_user": "--ssh-user",
    "config.ssh_key_file": "--ssh-key-file", "config.known_hosts_file": "--known-hosts", "config.helper": "--helper",
    "config.tables": "--table", "config.state_dir": "--state-dir", "config.revert_seconds": "--revert-seconds",
    "config.management_port": "--management-port", "config.timeout": "--timeout", "name": "NAME",
    "required_approvals": "--required-approvals", "bake_seconds": "--bake-seconds",
    "bake_max_seconds": "--bake-max-seconds",
    "approval_lifetime_seconds": "--approval-lifetime", **WATCH_FLAGS,
}


def _flag(field: str) -> str:
    flag = FLAGS.get(field)
    return f"{field.removeprefix('config.')} ({flag})" if flag else field


def describe(target: Target) -> list[str]:
    config = target.config
    event = AuditEvent.objects.filter(target=target, action="target_registered").order_by("-seq").first()
    generation = event.payload.get("serial") if event else None
    if config.get("transport") == "ssh":
        where = f"ssh {config.get('ssh_user')}@{config.get('ssh_host')}:{config.get('ssh_port')} ({config.get('helper')})"
    else:
        where = f"network namespace {config.get('netns')}"
    return [
        f"host:               {where}",
        f"owned tables:       {', '.join(config.get('tables', []))}",
        f"state dir:          {config.get('state_dir')}",
        f"revert after:       {config.get('revert_seconds')} s unless confirmed",
        f"generation:         {generation if generation is not None else 'not checked'}",
        f"chains and sets:    {target.item_count if target.item_count is not None else 'not read'}",
        f"required approvals: {target.required_approvals}",
        f"approval lifetime:  {target.approval_lifetime_seconds} s",
        f"bake time:          {target.bake_seconds} s",
    ] + describe_watch(target)
