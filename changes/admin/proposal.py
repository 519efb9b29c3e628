"""The proposal form's parts that are not the form itself: health checks written one per
line in the CLI's syntax, the patch text a stored draft is shown as again, and the
"Edit draft" page, which calls the same service as the API's PATCH (change_update)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import reverse

from changegate_cli.checks import CHECK_SYNTAX, parse_check
from changegate_cli.errors import UsageError
from changes.admin.common import _admin_origin, _render_form, add_service_errors
from changes.errors import NotPermitted, ServiceError, ValidationFailed
from changes.models import ChangeRequest
from changes.selectors import access_change
from changes.services import change_update
from changes.services.change_requests import may_edit

# The line's first word -> the CLI flag whose grammar the rest follows (changegate_cli.checks,
# imported rather than copied: one grammar for the CLI and the admin; the server still
# validates the result through pipeline.check_specs in the service).
CHECK_WORDS = {"tcp": "tcp", "http": "http", "dns": "dns", "dns_resolve": "dns"}

CHECKS_HELP = ("One health check per line, run after the change is applied ('#' starts a comment):\n"
               + "\n".join(f"  {word} {syntax}" for word, syntax in CHECK_SYNTAX.items())
               + "\ne.g. tcp www.demo.test:443 / http https://www.demo.test/,expect=200 / "
                 "dns www.demo.test,resolver=192.0.2.53:53,expect=192.0.2.10")


def parse_check_lines(text: str) -> list[dict[str, Any]]:
    """The textarea's lines as the API's `health_checks` list; a forms.ValidationError
    naming each bad line (all of them, not the first)."""
    checks: list[dict[str, Any]] = []
    errors: list[str] = []
    for number, raw in enumerate((text or "").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        flag = CHECK_WORDS.get(word.lower())
        if flag is None:
            errors.append(f"line {number}: start with tcp, http or dns, got {word!r}")
            continue
        try:
            checks.append(parse_check(flag, rest.strip()))
        except UsageError as exc:
            # The CLI's message names its flag ("--check-tcp takes ..."): here it is a line.
            errors.append(f"line {number}: {str(exc).replace(f'--check-{flag} ', f'{flag} ', 1)}")
    if errors:
        raise forms.ValidationError(errors)
    return checks


def check_lines(checks: list[dict[str, Any]]) -> str:
    """Stored (validated) checks as textarea lines, for the edit page; parse_check_lines
    reads them back to the same checks."""
    lines = []
    for check in checks or []:
        kind, timeout = check.get("type"), check.get("timeout")
        if kind == "tcp":
            host = str(check["host"])
            # The CLI's tcp syntax has no timeout: an edit gives the service's default.
            line = f"tcp {f'[{host}]' if ':' in host else host}:{check['port']}"
        elif kind == "http":
            line = f"http {check['url']}"
            if check.get("expect_status") is not None:
                line += f",expect={check['expect_status']}"
            if check.get("contains"):
                line += f",contains={check['contains']}"
        elif kind == "dns_resolve":
            line = f"dns {check['name']},resolver={check['resolver']},type={check.get('rdtype', 'A')}"
            expect = check.get("expect") or []
            line += "".join(f",expect={value}" for value in expect) if expect else ",absent"
        else:  # a kind's own check type without a line syntax: shown, refused if kept
            line = f"# not editable here: {check}"
        if kind in ("http", "dns_resolve") and timeout is not None:
            line += f",timeout={timeout}"
        lines.append(line)
    return "\n".join(lines)


def patch_text(change: ChangeRequest) -> str:
    """A DNS draft's items as patch lines (names relative to the zone), for the edit page.
    Another kind's items have no patch writer: empty, and an empty patch keeps the items."""
    if change.target.kind != "dns":
        return ""
    zone = str(change.target.config.get("zone", "")).rstrip(".").lower() + "."

    def name_of(name: str) -> str:
        if name.lower() == zone:
            return "@"
        return name[: -len(zone) - 1] if name.lower().endswith("." + zone) else name

    lines = []
    for item in change.items:
        name, rdtype, ttl = name_of(item["name"]), item["type"], item.get("ttl")
        ttl_text = f" {ttl}" if ttl is not None else ""
        if item["op"] == "delete":
            lines.append(f"- {name} {rdtype}")
            continue
        op = {"upsert": "=", "add": "+", "remove": "-"}[item["op"]]
        lines += [f"{op} {name}{ttl_text} IN {rdtype} {rdata}" for rdata in item.get("records", [])]
    return "\n".join(lines)




def edit_view(model_admin: admin.ModelAdmin, request: HttpRequest, object_id: str, *,
              form_class: type[forms.Form], field_of: Any) -> HttpResponse:
    """GET: the proposal form prefilled from the draft (without the target: an edit
    keeps it). POST: change_update with what the form holds, the API PATCH's service."""
    change = access_change(user=request.user, pk=object_id)  # 404 for missing and for invisible
    if not model_admin.has_view_permission(request, change):
        raise PermissionDenied
    if request.method not in ("GET", "HEAD", "POST"):
        return HttpResponseNotAllowed(["GET", "HEAD", "POST"])
    if not may_edit(request.user, change):
        raise PermissionDenied
    if request.method == "POST":
        form = form_class(request.POST, targets=None)
    else:
        form = form_class(targets=None, initial={
            "title": change.title, "reason": change.reason, "patch": patch_text(change),
            "allow_apex": bool(change.options.get("allow_apex")), "health_checks": check_lines(change.health_checks),
            "bake_override_seconds": change.bake_override_seconds, "bake_override_reason": change.bake_override_reason,
        })
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            change = _update(request, change, data)
        except ValidationFailed as exc:
            add_service_errors(form, exc.errors, field_of=field_of)
        except NotPermitted as exc:
            raise PermissionDenied(exc.message) from None
        except ServiceError as exc:  # not editable any more, target unavailable
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"Change #{change.pk} edited and re-planned. Review the plan, then submit it.")
            return HttpResponseRedirect(reverse("admin:changes_changerequest_change", args=[change.pk]))
    return _render_form(model_admin, request, form, title=f"Edit change #{change.pk}: {change.title}",
                        submit_label="Save and re-plan")


def _update(request: HttpRequest, change: ChangeRequest, data: dict[str, Any]) -> ChangeRequest:
    return change_update(actor=request.user, change=change, title=data["title"], reason=data["reason"],
                         patch=data["patch"], health_checks=data["health_checks"],
                         options={"allow_apex": data["allow_apex"]}, origin=_admin_origin(request),
                         # Empty seconds: back to the target's rule (the form shows the current override).
                         bake_override_seconds=data["bake_override_seconds"],
                         bake_override_reason=data["bake_override_reason"])
