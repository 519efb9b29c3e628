"""Grant or revoke a role on a target: a thin adapter over the grant services in
`changes.permissions` (the role table is `changes.permissions.ROLES`).

Reviewer and emergency are four-eyes grants: without `--bootstrap` the command
files a grant request that another operator approves on the admin's Grants page.
`--bootstrap --reason` is the break-glass for the very first setup, when no
second operator exists yet; it is recorded as such. Events name the OS user and
host that ran the command."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.chain import RequestOrigin
from changes.errors import ServiceError
from changes.models import Origin, Target
from changes.permissions import FOUR_EYES_ROLES, ROLES, grant_request_create, target_role_grant, target_role_revoke


def _role_help() -> str:
    return "; ".join(f"{role} = {'+'.join(perms)}" for role, perms in ROLES.items())


class Command(BaseCommand):
    help = "Grant (or with --revoke, take away) a role on one target to a user or a group. Roles: " + _role_help()

    def add_arguments(self, parser: CommandParser) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", help="username")
        who.add_argument("--group", help="group name, e.g. reviewers")
        parser.add_argument("--role", required=True, help=f"one of {', '.join(ROLES)}")
        parser.add_argument("--target", required=True, help="target name or id")
        parser.add_argument("--revoke", action="store_true", help="take the role away instead")
        parser.add_argument("--reason", default="", help="why (required for reviewer and emergency)")
        parser.add_argument("--bootstrap", action="store_true",
                            help="first setup only: grant reviewer/emergency at once, without a second operator "
                                 "(recorded as a bootstrap grant; needs --reason)")

    def handle(self, *args: Any, user: str | None, group: str | None, role: str, target: str, revoke: bool,
               reason: str = "", bootstrap: bool = False, **options: Any) -> None:
        if role not in ROLES:
            raise CommandError(f"unknown role {role!r}; roles: {_role_help()}")
        found_target = _target(target)
        principal: dict[str, Any]
        if user is not None:
            found_user = get_user_model().objects.filter(**{get_user_model().USERNAME_FIELD: user}).first()
            if found_user is None:
                raise CommandError(f"no user named {user!r}")
            principal, label = {"user": found_user}, f"user {user}"
        else:
            found_group = Group.objects.filter(name=group).first()
            if found_group is None:
                raise CommandError(f"no group named {group!r}")
            principal, label = {"group": found_group}, f"group {group}"
        origin = RequestOrigin(kind=Origin.CLI)
        try:
            if revoke:
                changed = target_role_revoke(actor=None, target=found_target, role=role, origin=origin, **principal)
            elif role in FOUR_EYES_ROLES and not bootstrap:
                request = grant_request_create(actor=None, target=found_target, role=role, reason=reason,
                                               origin=origin, **principal)
                self.stdout.write(f"Requested {role} on {found_target.name} for {label} (grant request "
                                  f"#{request.pk}); another operator must approve it on the admin's Grants page.")
                return
            else:
                changed = target_role_grant(actor=None, target=found_target, role=role, origin=origin,
                                            reason=reason, bootstrap=bootstrap, **principal)
        except ServiceError as exc:
            raise CommandError(exc.message) from None
        verb, preposition = ("Revoked", "from") if revoke else ("Granted", "to")
        detail = ", ".join(changed) if changed else ("nothing held to remove" if revoke else "already held")
        self.stdout.write(f"{verb} {role} on {found_target.name} {preposition} {label} ({detail}).")


def _target(ref: str) -> Target:
    text = ref.strip()
    found = None
    if text.isascii() and text.isdigit() and len(text) < 19:  # beyond 64 bits it can only be a name
        found = Target.objects.filter(pk=int(text)).first()
    found = found or Target.objects.filter(name=text).first()
    if found is None:
        raise CommandError(f"no target named {ref!r}")
    return found
