"""Demo users and role groups for `make run`. Idempotent; refuses to run with DEBUG=False.

Every run leaves the same state: the groups exist, each demo user exists, is
active, is in its group and has the demo password. Per-target permissions are
granted elsewhere (a later issue); this only creates the groups.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

DEFAULT_PASSWORD = "changegate-demo"
GROUPS = ("engineers", "reviewers", "auditors")

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

    def handle(self, *args, password: str, force: bool, **options) -> None:
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

        self.stdout.write("Demo users (password for all: %s):" % password)
        for username, group, role, created in rows:
            note = "created" if created else "updated"
            self.stdout.write(f"  {username:<6} {group:<10} {role} [{note}]")
