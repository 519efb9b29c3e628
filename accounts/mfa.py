"""Whether the person behind a request signed in with multi-factor authentication.

The only source is the ID token of an OpenID Connect sign-in (`amr`/`acr`, read
once at the callback and kept in the session). A password login, an API token or
a command never counts, whatever it claims."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from rest_framework.authentication import SessionAuthentication

MFA_SESSION_KEY = "changegate_mfa"


def id_token_has_mfa(claims: Mapping[str, Any]) -> bool:
    """RFC 8176 `amr` values or an accepted `acr` (both configurable) in a verified ID token."""
    amr = claims.get("amr")
    if isinstance(amr, str):  # some providers send a single value
        amr = [amr]
    if isinstance(amr, list) and set(settings.CHANGEGATE_OIDC_MFA_AMR) & {v for v in amr if isinstance(v, str)}:
        return True
    acr = claims.get("acr")
    return isinstance(acr, str) and acr in settings.CHANGEGATE_OIDC_MFA_ACR


def session_has_mfa(request: HttpRequest) -> bool:
    """True only for a request authenticated by its session, whose sign-in reported MFA.
    A DRF request authenticated by a token (or forced in tests) is never MFA, even
    if it also carries a session cookie."""
    if hasattr(request, "successful_authenticator") and not isinstance(  # DRF's Request only
        request.successful_authenticator, SessionAuthentication
    ):
        return False
    session = getattr(request, "session", None)
    return session is not None and session.get(MFA_SESSION_KEY) is True


def record_session_mfa(request: HttpRequest, *, mfa: bool) -> None:
    request.session[MFA_SESSION_KEY] = bool(mfa)


def on_user_logged_in(sender: Any, request: HttpRequest | None, user: AbstractBaseUser, **kwargs: Any) -> None:
    # Every login sets the flag afresh: a password login in a session that once held
    # an MFA sign-in of the same user must not inherit it (login() keeps the data
    # when the user does not change). The OIDC backend marks the user it returns.
    if request is not None and hasattr(request, "session"):
        record_session_mfa(request, mfa=getattr(user, "changegate_mfa", False))
