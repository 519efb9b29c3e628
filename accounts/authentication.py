"""API token authentication that slows down guessing: after
CHANGEGATE_TOKEN_FAILURE_LIMIT wrong tokens from one client address within
CHANGEGATE_TOKEN_FAILURE_WINDOW_SECONDS, every token request from that address is
answered 429 until the window ends (valid tokens too, so a guess that finally
hits cannot be told apart)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.cache import cache
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.request import Request

from accounts.client_ip import client_address


class ThrottledTokenAuthentication(TokenAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None  # no token offered: session auth may follow
        key = f"changegate:token-failures:{client_address(request)}"
        window = settings.CHANGEGATE_TOKEN_FAILURE_WINDOW_SECONDS
        if (cache.get(key) or 0) >= settings.CHANGEGATE_TOKEN_FAILURE_LIMIT:
            raise Throttled(wait=window, detail="too many failed token attempts from this address.")
        try:
            return super().authenticate(request)
        except AuthenticationFailed:
            # add() starts the window at the first failure; incr() keeps its expiry.
            if not cache.add(key, 1, timeout=window):
                try:
                    cache.incr(key)
                except ValueError:  # expired between add() and incr()
                    cache.add(key, 1, timeout=window)
            raise
