"""Helpers for the nftables end-to-end tests: an nft target registered through the
service with the personas' roles, proposals and approvals through the REST API, and
a veth link from the test machine into the firewall host so that declared health
checks (run by the worker, in this namespace) can reach a service there."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from typing import Any

from changes.models import ChangeRequest, Target
from tests.conftest import grant
from tests.factories import api_client

from .firewall_host import SERVICE, FirewallHost, run

TABLE = "inet changegate"
State = ChangeRequest.State
_links = itertools.count()


def rule_item(rule: str, *, op: str = "append", **extra: Any) -> dict[str, Any]:
    return {"op": op, "table": TABLE, "chain": "input", "rule": rule, **extra}


def nft_target(operator: Any, host: FirewallHost, *, name: str = "fw1", bake_seconds: int = 0,
               health_checks: list[dict[str, Any]] | None = None, roles: list[tuple[str, Any]] = (),
               **config: Any) -> Target:
    """`host` registered as an nft target (state in the test's tmp dir), with roles."""
    from changes.services import target_register

    target = target_register(actor=operator, name=name, kind="nft", config=host.config(**config),
                             bake_seconds=bake_seconds, health_checks=health_checks or ())
    for role, user in roles:
        grant(user, role, target)
    return target


def propose(author: Any, target: Target, items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """POST /api/v1/changes/ and submit: the change as the API answers, pending approval."""
    client = api_client(author)
    created = client.post("/api/v1/changes/", {"target": target.pk, "title": "fw", "reason": "test",
                                               "items": items, **extra}, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    submitted = client.post(f"/api/v1/changes/{body['id']}/submit/")
    assert submitted.status_code == 200, submitted.json()
    return body


def approve(reviewer: Any, body: dict[str, Any], *more: Any) -> ChangeRequest:
    """Approve through the API on the fingerprint shown (risk flags need `more`)."""
    for user in (reviewer, *more):
        response = api_client(user).post(f"/api/v1/changes/{body['id']}/approve/",
                                         {"fingerprint": body["fingerprint"]}, format="json")
        assert response.status_code == 200, response.json()
    assert response.json()["state"] == State.APPROVED, response.json()
    return ChangeRequest.objects.get(pk=body["id"])


def chain_rules(host: FirewallHost) -> list[str]:
    """The rules of `inet changegate input` as nft prints them, in order."""
    text = host.nft("list", "chain", "inet", "changegate", "input")
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith(("table ", "chain ", "type ", "}"))]


class ServiceLink:
    """A veth pair from this (the worker's) namespace into the firewall host, with a copy
    of the test service listening on the host's end: what a declared `tcp` check run by
    the worker can reach. The interface disappears with the host's namespace."""

    def __init__(self, host: FirewallHost, port: int) -> None:
        number = next(_links)
        self.host, self.port = host, port
        self.link = f"cgk{os.getpid() % 100000}x{number}"[:15]
        self.local = f"10.79.{os.getpid() % 250}.{(number * 4) % 252 + 1}"
        self.address = f"10.79.{os.getpid() % 250}.{(number * 4) % 252 + 2}"
        self.service: subprocess.Popen[str] | None = None

    def start(self) -> ServiceLink:
        run("ip", "link", "add", "name", self.link, "type", "veth", "peer", "name", "cgk0", "netns", self.host.netns)
        run("ip", "addr", "add", f"{self.local}/30", "dev", self.link)
        run("ip", "link", "set", "dev", self.link, "up")
        run("ip", "-n", self.host.netns, "addr", "add", f"{self.address}/30", "dev", "cgk0")
        run("ip", "-n", self.host.netns, "link", "set", "dev", "cgk0", "up")
        self.service = subprocess.Popen(
            ["ip", "netns", "exec", self.host.netns, sys.executable, "-c", SERVICE, self.address, str(self.port)],
            stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.service.stdout is not None and self.service.stdout.readline().strip() == "ready"
        return self

    def stop(self) -> None:
        if self.service is not None:
            os.killpg(self.service.pid, signal.SIGKILL)
            self.service.wait()
        run("ip", "link", "del", "dev", self.link, check=False)

    def probe(self, timeout: float = 0.5) -> str:
        import socket

        try:
            with socket.create_connection((self.address, self.port), timeout=timeout):
                return "open"
        except ConnectionRefusedError:
            return "refused"
        except OSError:
            return "filtered"
