"""OpenID Connect single sign-on (mozilla-django-oidc), for the admin and the API's
session auth. Users are created and updated from the provider's claims; groups
named in CHANGEGATE_OIDC_GROUP_MAP follow the provider's group claim, every other
group and every permission stays changegate's to manage."""

from __future__ import annotations

import logging
import time
from typing import Any

import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AbstractBaseUser, Group
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import SuspiciousOperation, ValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.generic import View
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from accounts.mfa import id_token_has_mfa, record_session_mfa

log = logging.getLogger(__name__)

# Seconds of clock difference tolerated between the provider and us on `exp`.
CLOCK_SKEW = 60


class ProviderUnavailable(Exception):
    """The identity provider's discovery document could not be read or is wrong."""


_metadata: dict[str, dict[str, Any]] = {}


def provider_metadata() -> dict[str, Any]:
    """The issuer's discovery document, fetched on first use and kept per process.
    Read lazily so a provider that is down never stops the site or a password login."""
    issuer = settings.CHANGEGATE_OIDC_ISSUER
    if issuer not in _metadata:
        try:
            response = requests.get(f"{issuer}/.well-known/openid-configuration",
                                    timeout=settings.OIDC_TIMEOUT, verify=getattr(settings, "OIDC_VERIFY_SSL", True))
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise ProviderUnavailable(f"cannot read the discovery document of {issuer}: {type(exc).__name__}") from None
        # OpenID Connect Discovery 1.0 section 4.3: the document must name the issuer we asked.
        if not isinstance(document, dict) or str(document.get("issuer", "")).rstrip("/") != issuer:
            raise ProviderUnavailable(f"the discovery document of {issuer} names another issuer")
        missing = [k for k in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")
                   if not document.get(k)]
        if missing:
            raise ProviderUnavailable(f"the discovery document of {issuer} lacks {', '.join(missing)}")
        _metadata[issuer] = document
    return _metadata[issuer]


def oidc_username(claims: dict[str, Any]) -> str:
    """`preferred_username`, else `email`; refused unless it is a valid Django username."""
    username = claims.get("preferred_username") or claims.get("email") or ""
    if not isinstance(username, str) or not username or len(username) > 150:
        raise SuspiciousOperation("the provider sent neither a usable preferred_username nor an email")
    try:
        UnicodeUsernameValidator()(username)
    except ValidationError:
        raise SuspiciousOperation(f"the provider's username {username!r} is not a valid user name") from None
    return username


class OIDCBackend(OIDCAuthenticationBackend):
    """Signs in from an authorization code; creates and updates the user from claims."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The parent reads every endpoint here. Django builds each backend on every
        # authenticate() and on every request of a user signed in through it, so the
        # endpoints are discovered only when a sign-in needs them (properties below).
        self.UserModel = get_user_model()
        self.OIDC_RP_CLIENT_ID = getattr(settings, "OIDC_RP_CLIENT_ID", "")
        self.OIDC_RP_CLIENT_SECRET = getattr(settings, "OIDC_RP_CLIENT_SECRET", "")
        self.OIDC_RP_SIGN_ALGO = getattr(settings, "OIDC_RP_SIGN_ALGO", "RS256")
        self.OIDC_RP_IDP_SIGN_KEY = None

    @property
    def OIDC_OP_TOKEN_ENDPOINT(self) -> str:  # noqa: N802 - the parent's name
        return provider_metadata()["token_endpoint"]

    @property
    def OIDC_OP_USER_ENDPOINT(self) -> str:  # noqa: N802
        return provider_metadata()["userinfo_endpoint"]

    @property
    def OIDC_OP_JWKS_ENDPOINT(self) -> str:  # noqa: N802
        return provider_metadata()["jwks_uri"]

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> AbstractBaseUser | None:
        # Only the callback view's call (nonce, code_verifier) is ours: a password
        # login posted with ?code=&state= in its URL must not start a token exchange.
        if request is None or not settings.CHANGEGATE_OIDC_ENABLED or "nonce" not in kwargs:
            return None
        if "username" in kwargs or "password" in kwargs:
            return None
        try:
            return super().authenticate(request, **kwargs)
        except (requests.RequestException, ProviderUnavailable, SuspiciousOperation, ValueError) as exc:
            # The message names the endpoint and status, never the code or the secret.
            log.warning("OpenID Connect sign-in failed: %s: %s", type(exc).__name__, str(exc)[:300])
            return None

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        """Signature and nonce (the parent), then what the parent leaves out:
        OpenID Connect Core 3.1.3.7 issuer, audience and expiry."""
        payload = super().verify_token(token, **kwargs)
        audience = payload.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if str(payload.get("iss", "")).rstrip("/") != settings.CHANGEGATE_OIDC_ISSUER:
            raise SuspiciousOperation("the ID token comes from another issuer")
        if self.OIDC_RP_CLIENT_ID not in audiences:
            raise SuspiciousOperation("the ID token is for another client")
        if not isinstance(payload.get("exp"), int | float) or payload["exp"] + CLOCK_SKEW < time.time():
            raise SuspiciousOperation("the ID token has expired")
        return payload

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> dict[str, Any]:
        userinfo = super().get_userinfo(access_token, id_token, payload)
        # Core 5.3.2: userinfo for another subject than the ID token's must not be used.
        if not isinstance(userinfo, dict) or userinfo.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("the userinfo response is for another subject")
        return {**payload, **userinfo}

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        oidc_username(claims)
        return bool(claims.get("sub"))

    def filter_users_by_claims(self, claims: dict[str, Any]):
        users = self.UserModel.objects.filter(username=oidc_username(claims))
        for user in users:
            # A local account (the demo users, a break-glass superuser) is never taken
            # over by a provider identity of the same name: it has a password of its own.
            if user.is_superuser or user.has_usable_password():
                raise SuspiciousOperation(f"{user.get_username()} is a local account; it signs in with its password")
        return users

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]):
        user = super().get_or_create_user(access_token, id_token, payload)
        if user is not None:
            # Read by the callback (accounts.mfa): only the verified ID token counts.
            user.changegate_mfa = id_token_has_mfa(payload)
        return user

    def create_user(self, claims: dict[str, Any]) -> AbstractBaseUser:
        with transaction.atomic():
            # No password: this account signs in through the provider only.
            user = self.UserModel.objects.create_user(oidc_username(claims), email=str(claims.get("email") or ""))
            return self._sync(user, claims, created=True)

    def update_user(self, user: AbstractBaseUser, claims: dict[str, Any]) -> AbstractBaseUser:
        with transaction.atomic():
            return self._sync(user, claims, created=False)

    def _sync(self, user: AbstractBaseUser, claims: dict[str, Any], *, created: bool) -> AbstractBaseUser:
        """Profile fields, the mapped groups and is_staff from the claims; audited when
        anything about access changed. Never touches is_superuser or permissions."""
        from audit.chain import RequestOrigin, audit_record
        from changes.models import Origin

        for field, claim in (("email", "email"), ("first_name", "given_name"), ("last_name", "family_name")):
            if isinstance(claims.get(claim), str):
                setattr(user, field, claims[claim][:150])
        raw = claims.get(settings.CHANGEGATE_OIDC_GROUPS_CLAIM) or []
        idp_groups = {raw} if isinstance(raw, str) else {g for g in raw if isinstance(g, str)}
        mapping: dict[str, str] = settings.CHANGEGATE_OIDC_GROUP_MAP
        wanted = {ours for theirs, ours in mapping.items() if theirs in idp_groups}
        managed = set(mapping.values())
        held = set(user.groups.filter(name__in=managed).values_list("name", flat=True))
        added, removed = sorted(wanted - held), sorted(held - wanted)
        if added:
            user.groups.add(*(Group.objects.get_or_create(name=name)[0] for name in added))
        if removed:
            user.groups.remove(*Group.objects.filter(name__in=removed))
        # is_staff only opens the admin; what a person may do there comes from the groups.
        was_staff, user.is_staff = user.is_staff, bool(wanted)
        user.save()
        if created or added or removed or was_staff != user.is_staff:
            audit_record(actor=user, origin=RequestOrigin.from_request(self.request, kind=Origin.ADMIN),
                         action="oidc_account_synced",
                         payload={"user": user.get_username(), "issuer": settings.CHANGEGATE_OIDC_ISSUER,
                                  "created": created, "groups_added": added, "groups_removed": removed,
                                  "is_staff": user.is_staff})
        return user

    def get_user(self, user_id: Any) -> AbstractBaseUser | None:
        # The parent returns inactive users too; a deactivated account's session must end.
        return ModelBackend.get_user(self, user_id)


def _require_enabled() -> None:
    if not settings.CHANGEGATE_OIDC_ENABLED:
        raise Http404("OpenID Connect sign-in is not configured")


class OIDCAuthenticateView(OIDCAuthenticationRequestView):
    """/oidc/authenticate/: redirect to the provider (state, nonce, PKCE)."""

    def __init__(self, **kwargs: Any) -> None:
        # The parent reads the endpoint here; it is discovered in get(), where a failure can be answered.
        View.__init__(self, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        _require_enabled()
        try:
            self.OIDC_OP_AUTH_ENDPOINT = provider_metadata()["authorization_endpoint"]
        except ProviderUnavailable as exc:
            log.warning("OpenID Connect sign-in unavailable: %s", exc)
            messages.error(request, f"{settings.CHANGEGATE_OIDC_PROVIDER_NAME} does not answer; try again later.")
            return HttpResponseRedirect(reverse("admin:login"))
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        return super().get(request)


class OIDCCallbackView(OIDCAuthenticationCallbackView):
    """/oidc/callback/: exchange the code, sign in, remember whether it was MFA."""

    def get(self, request: HttpRequest) -> HttpResponse:
        _require_enabled()
        return super().get(request)

    def login_success(self) -> HttpResponse:
        response = super().login_success()
        # Also when the same user signs in again (the parent then skips login(), so
        # the user_logged_in receiver does not run): a step-up or step-down counts.
        record_session_mfa(self.request, mfa=getattr(self.user, "changegate_mfa", False))
        return response

    def login_failure(self) -> HttpResponse:
        messages.error(self.request, f"Sign-in with {settings.CHANGEGATE_OIDC_PROVIDER_NAME} failed.")
        return super().login_failure()
