"""Demo users and role groups for `make run`. Idempotent; refuses to run with DEBUG=False.

Every run leaves the same state: the groups exist, each demo user exists, is
active, is in its group and has the demo password. With a zone, primary and key
file (flags, or the CHANGEGATE_DEMO_* variables `make run` sets) it also registers
the demo target through the service and grants each group its role on it; with a
firewall namespace (--fw-netns, set by `make run` as root) likewise the nftables
demo target `fw.demo`.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from audit.chain import RequestOrigin
from changes.errors import ServiceError, ValidationFailed
from changes.models import Origin, Target
from changes.permissions import FOUR_EYES_ROLES, admin_pages_grant, target_role_grant
from changes.services import target_register, target_rename

DEFAULT_PASSWORD = "changegate-demo"
GROUPS = ("engineers", "reviewers", "auditors")
# Per target (django-guardian, through the grant service): each group's role on the demo zone.
TARGET_ROLES = {"engineers": "engineer", "reviewers": "reviewer", "auditors": "auditor"}
# Model-wide: only what the admin needs to show its pages; the target decides the rest.
ADMIN_PERMS = {
    "engineers": ("add_changerequest", "view_changerequest"),
    "reviewers": ("view_changerequest",),
    "auditors": ("view_changerequest", "view_auditevent"),
}

# username, group (None: none), what the person does in the demo
DEMO_USERS: tuple[tuple[str, str | None, str], ...] = (
    ("admin", None, "superuser: registers targets, manages users"),
    ("alice", "engineers", "engineer: proposes changes"),
    ("bob", "reviewers", "reviewer: approves or rejects"),
    ("carol", "reviewers", "second reviewer (targets that need two approvals)"),
    ("dave", "auditors", "auditor: exports and verifies the audit log"),
)


class Command(BaseCommand):
    help = "Create the demo groups (engineers, reviewers, auditors) and demo users. Demo only."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--password",
            default=DEFAULT_PASSWORD,
            help=f"password for every demo user (default: {DEFAULT_PASSWORD})",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="run even with DEBUG=False (creates users with a known password!)",
        )
        parser.add_argument("--zone", default=os.environ.get("CHANGEGATE_DEMO_ZONE"))
        parser.add_argument("--primary", default=os.environ.get("CHANGEGATE_DEMO_DNS_PRIMARY"))
        parser.add_argument("--tsig-key-file", default=os.environ.get("CHANGEGATE_DEMO_TSIG_KEY_FILE"))
        parser.add_argument("--fw-netns", default=os.environ.get("CHANGEGATE_DEMO_FW_NETNS"),
                            help="network namespace of the firewall demo (registers fw.demo)")
        parser.add_argument("--fw-state-dir", default=os.environ.get("CHANGEGATE_DEMO_FW_STATE_DIR"))
        parser.add_argument("--fw-check", default=os.environ.get("CHANGEGATE_DEMO_FW_CHECK"), metavar="HOST:PORT",
                            help="the firewall demo's service: fw.demo's default TCP health check")

    def handle(self, *args, password: str, force: bool, zone: str | None = None, primary: str | None = None,
               tsig_key_file: str | None = None, fw_netns: str | None = None, fw_state_dir: str | None = None,
               fw_check: str | None = None, **options) -> None:
        if not settings.DEBUG and not force:
            raise CommandError(
                "demo_setup creates users with a well-known password and only runs with "
                "DEBUG=True (config.settings.local); pass --force to run it anyway"
            )
        if not password:
            raise CommandError("--password must not be empty")

        User = get_user_model()
        with transaction.atomic():
            groups = {name: Group.objects.get_or_create(name=name)[0] for name in GROUPS}
            rows = []
            for username, group, role in DEMO_USERS:
                user, created = User.objects.get_or_create(
                    username=username, defaults={"email": f"{username}@demo.test"}
                )
                user.is_active = True
                user.is_staff = True  # every role works in the admin (see DESIGN.md, Users)
                user.is_superuser = group is None
                user.set_password(password)
                user.save()
                if group is not None:
                    user.groups.add(groups[group])
                rows.append((username, group or "superuser", role, created))

        for name, perms in ADMIN_PERMS.items():
            admin_pages_grant(actor=None, group=groups[name], codenames=perms, origin=RequestOrigin(kind=Origin.CLI),
                              reason="demo setup")
        if zone and primary and tsig_key_file:
            self._demo_target(zone, primary, tsig_key_file, groups)
        if fw_netns:
            self._firewall_target(fw_netns, fw_state_dir, fw_check, groups)

        self.stdout.write("Demo users (password for all: %s):" % password)
        for username, group, role, created in rows:
            note = "created" if created else "updated"
            self.stdout.write(f"  {username:<6} {group:<10} {role} [{note}]")

    def _demo_target(self, zone: str, primary: str, key_file: str, groups: dict[str, Group]) -> None:
        target = Target.objects.filter(name=zone).first()
        if target is None or (target.config.get("primary"), target.config.get("tsig_key_file")) != (primary, key_file):
            if target is not None:  # the demo named moved to another port (or its key moved): follow it
                target_rename(actor=None, target=target, name=f"{zone}-old-{target.pk}",
                              origin=RequestOrigin(kind=Origin.CLI))
            try:
                target = target_register(
                    actor=None, name=zone, origin=RequestOrigin(kind=Origin.CLI),
                    config={"zone": zone, "primary": primary, "tsig_key_file": key_file},
                    # The bake follows the old records' TTL (300 s in the demo zone), capped at a
                    # minute here so a demo change ends while you watch; a real zone keeps its TTLs.
                    bake_seconds=10, bake_max_seconds=60,
                )
            except ValidationFailed as exc:
                raise CommandError(f"demo target: {exc.message}") from None
            except ServiceError as exc:
                raise CommandError(f"demo target: {exc.message}") from None
        _grant_demo_roles(target, groups)
        self.stdout.write(f"Demo target {target.name} (id {target.pk}) at {primary}; roles granted to the groups.")

    def _firewall_target(self, netns: str, state_dir: str | None, check: str | None,
                         groups: dict[str, Group]) -> None:
        config = {"transport": "netns", "netns": netns, "tables": ["inet changegate"], "revert_seconds": 60}
        if state_dir:
            config["state_dir"] = state_dir
        checks = []
        if check:
            host, _, port = check.rpartition(":")
            checks = [{"type": "tcp", "host": host, "port": int(port), "timeout": 1}]
        target = Target.objects.filter(name=FW_TARGET).first()
        moved = target is not None and (target.config.get("netns") != netns
                                        or (state_dir is not None and target.config.get("state_dir") != state_dir))
        if target is None or moved:
            if target is not None:  # registered differently before: move it aside, as for the zone
                target_rename(actor=None, target=target, name=f"{FW_TARGET}-old-{target.pk}",
                              origin=RequestOrigin(kind=Origin.CLI))
            try:
                # prepare: the namespace is made afresh by `make run`; the table is its to fill.
                target = target_register(actor=None, name=FW_TARGET, kind="nft", config=config, bake_seconds=10,
                                         health_checks=checks, origin=RequestOrigin(kind=Origin.CLI), prepare=True)
            except (ValidationFailed, ServiceError) as exc:
                raise CommandError(f"firewall demo target: {exc.message}") from None
        _grant_demo_roles(target, groups)
        self.stdout.write(f"Demo target {target.name} (id {target.pk}) in namespace {netns}; roles granted to the groups.")


FW_TARGET = "fw.demo"


def _grant_demo_roles(target: Target, groups: dict[str, Group]) -> None:
    for name, role in TARGET_ROLES.items():
        # The demo has no second operator: reviewer goes through the recorded bootstrap path.
        target_role_grant(actor=None, target=target, role=role, group=groups[name],
                          origin=RequestOrigin(kind=Origin.CLI), bootstrap=role in FOUR_EYES_ROLES,
                          reason="demo setup")
