"""Who is at the other end of a request, as far as throttling, lockout and the
audit trail are concerned."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_address(request: HttpRequest) -> str:
    """REMOTE_ADDR, or, behind CHANGEGATE_TRUSTED_PROXIES reverse proxies, the
    address the outermost of them saw. X-Forwarded-For is read from the right: each
    proxy appends the peer it saw, while a client can only put entries in front, so
    counting from the right never takes an address the client made up."""
    remote = request.META.get("REMOTE_ADDR") or ""
    hops = settings.CHANGEGATE_TRUSTED_PROXIES
    if hops <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    return forwarded[-hops] if len(forwarded) >= hops else remote
