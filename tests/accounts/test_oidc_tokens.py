"""What the ID token must say before anyone is signed in, and a provider that is
down: checks mozilla-django-oidc leaves to the project."""

from __future__ import annotations

import json
import time

import pytest
from django.core.exceptions import SuspiciousOperation
from django.test import Client
from jwcrypto import jwk, jwt

from accounts.mfa import id_token_has_mfa
from accounts.oidc import OIDCBackend
from dns_adapters.local_named import free_port

ISSUER, CLIENT = "https://idp.example.net/o", "changegate"


@pytest.fixture
def signer(settings):
    settings.CHANGEGATE_OIDC_ENABLED, settings.CHANGEGATE_OIDC_ISSUER = True, ISSUER
    settings.OIDC_RP_CLIENT_ID, settings.OIDC_RP_CLIENT_SECRET, settings.OIDC_RP_SIGN_ALGO = CLIENT, "s", "RS256"
    key = jwk.JWK.generate(kty="RSA", size=2048, kid="k1")
    backend = OIDCBackend()
    backend.retrieve_matching_jwk = lambda token: json.loads(key.export_public())

    def sign(**claims):
        body = {"iss": ISSUER, "aud": CLIENT, "sub": "42", "exp": int(time.time()) + 300, "nonce": "n", **claims}
        token = jwt.JWT(header={"alg": "RS256", "kid": "k1"}, claims=body)
        token.make_signed_token(key)
        return backend.verify_token(token.serialize(), nonce="n")

    return sign


def test_a_token_from_the_issuer_for_this_client_is_accepted(signer):
    assert signer()["sub"] == "42"
    assert signer(aud=["other", CLIENT])["sub"] == "42"


@pytest.mark.parametrize("claims, reason", [
    ({"iss": "https://evil.example.net/o"}, "another issuer"),
    ({"aud": "some-other-client"}, "another client"),
    ({"exp": int(time.time()) - 3600}, "expired"),
])
def test_a_token_for_someone_else_or_expired_is_refused(signer, claims, reason):
    with pytest.raises(SuspiciousOperation, match=reason):
        signer(**claims)


@pytest.mark.parametrize("claims, mfa", [
    ({"amr": ["pwd", "mfa"]}, True), ({"amr": ["otp"]}, True), ({"amr": "hwk"}, True),
    ({"amr": ["pwd"]}, False), ({}, False), ({"acr": "urn:corp:loa:2"}, False), ({"amr": [{"x": 1}]}, False),
])
def test_mfa_is_read_from_amr(settings, claims, mfa):
    assert id_token_has_mfa(claims) is mfa


def test_an_accepted_acr_counts_as_mfa(settings):
    settings.CHANGEGATE_OIDC_MFA_ACR = ["urn:corp:loa:2"]
    assert id_token_has_mfa({"acr": "urn:corp:loa:2"}) and not id_token_has_mfa({"acr": "urn:corp:loa:1"})


@pytest.mark.django_db
def test_a_provider_that_does_not_answer_sends_the_user_back_to_the_login_page(settings):
    settings.CHANGEGATE_OIDC_ENABLED = True
    settings.CHANGEGATE_OIDC_ISSUER = f"http://127.0.0.1:{free_port()}/o"  # nothing listens there
    settings.CHANGEGATE_OIDC_PROVIDER_NAME, settings.OIDC_RP_CLIENT_ID = "Corp SSO", CLIENT

    response = Client().get("/oidc/authenticate/", follow=True)

    assert response.redirect_chain == [("/admin/login/", 302)] and response.status_code == 200
    assert "Corp SSO does not answer" in response.content.decode()
