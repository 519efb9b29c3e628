"""OpenID Connect sign-in against a real identity-provider process
(tests/idp, django-oauth-toolkit), with real HTTP both ways: the browser is a
requests.Session, changegate is pytest-django's live_server."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework.authtoken.models import Token

from accounts.conf import oidc_settings
from changes.models import AuditEvent
from changes.services import change_create, change_submit
from tests.conftest import grant
from tests.factories import upsert
from tests.idp import IdentityProvider

CLIENT_ID, CLIENT_SECRET = "changegate-test", "a-client-secret-for-tests-only"
IDP_USERS = {
    # amr "mfa": a multi-factor sign-in (RFC 8176).
    "erin": {"password": "erin-idp-password", "email": "erin@example.net",
             "groups": ["idp-reviewers", "idp-unmapped"], "amr": ["pwd", "mfa"]},
    # A password only.
    "frank": {"password": "frank-idp-password", "email": "frank@example.net", "groups": ["idp-reviewers"],
              "amr": ["pwd"]},
    # Same name as a local account with a password of its own.
    "henry": {"password": "henry-idp-password", "email": "henry@example.net", "groups": ["idp-reviewers"],
              "amr": ["mfa"]},
}
GROUP_MAP = '{"idp-reviewers": "reviewers", "idp-engineers": "engineers"}'
WWW = upsert("www", "192.0.2.77")


@pytest.fixture(scope="session")
def idp(live_server) -> Iterator[IdentityProvider]:
    provider = IdentityProvider(IDP_USERS, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                                redirect_uri=f"{live_server.url}/oidc/callback/").start()
    yield provider
    provider.stop()


@pytest.fixture
def oidc(idp, live_server, settings, monkeypatch, tmp_path):
    """changegate configured for the provider through the same environment variables
    production reads (the client secret from a *_FILE)."""
    secret_file = tmp_path / "oidc-secret"
    secret_file.write_text(CLIENT_SECRET + "\n")
    monkeypatch.setenv("CHANGEGATE_OIDC_ISSUER", idp.issuer)
    monkeypatch.setenv("CHANGEGATE_OIDC_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("CHANGEGATE_OIDC_CLIENT_SECRET_FILE", str(secret_file))
    monkeypatch.setenv("CHANGEGATE_OIDC_PROVIDER_NAME", "Test IdP")
    monkeypatch.setenv("CHANGEGATE_OIDC_GROUP_MAP", GROUP_MAP)
    for name, value in oidc_settings().items():
        setattr(settings, name, value)
    settings.AUTHENTICATION_BACKENDS = [*settings.AUTHENTICATION_BACKENDS, "accounts.oidc.OIDCBackend"]
    return live_server


def sign_in(idp: IdentityProvider, base_url: str, username: str) -> tuple[requests.Session, requests.Response]:
    """The browser's way: changegate -> the provider's login form -> authorize ->
    changegate's callback -> the admin."""
    browser = requests.Session()
    form = browser.get(f"{base_url}/oidc/authenticate/", params={"next": "/admin/"}, timeout=30)
    assert form.url.startswith(f"{idp.url}/login/"), form.url
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    done = browser.post(form.url, data={"csrfmiddlewaretoken": csrf, "username": username,
                                        "password": IDP_USERS[username]["password"]}, timeout=30)
    return browser, done


def test_admin_login_page_offers_the_identity_provider_only_when_configured(client, settings):
    settings.CHANGEGATE_OIDC_ENABLED = False
    assert "Sign in with" not in client.get("/admin/login/").content.decode()
    assert client.get("/oidc/authenticate/").status_code == 404

    settings.CHANGEGATE_OIDC_ENABLED, settings.CHANGEGATE_OIDC_PROVIDER_NAME = True, "Corp SSO"
    page = client.get("/admin/login/?next=/admin/").content.decode()
    assert "Sign in with Corp SSO" in page and 'href="/oidc/authenticate/?next=/admin/"' in page


def test_sign_in_creates_the_user_in_the_mapped_groups_and_opens_the_admin(oidc, idp):
    browser, landing = sign_in(idp, oidc.url, "erin")

    assert landing.status_code == 200 and landing.url == f"{oidc.url}/admin/"
    assert "Site administration" in landing.text
    erin = get_user_model().objects.get(username="erin")
    # idp-unmapped maps to nothing: only mapped groups are ever touched.
    assert [g.name for g in erin.groups.all()] == ["reviewers"]
    assert erin.is_staff and not erin.is_superuser
    assert erin.email == "erin@example.net" and not erin.has_usable_password()
    event = AuditEvent.objects.get(action="oidc_account_synced")
    assert event.payload["groups_added"] == ["reviewers"] and event.payload["issuer"] == idp.issuer
    # The API's session auth accepts the same session.
    assert browser.get(f"{oidc.url}/api/v1/changes/", timeout=30).status_code == 200


def test_sign_in_follows_the_claims_for_mapped_groups_and_leaves_the_others(oidc, idp):
    frank = get_user_model().objects.create_user("frank")  # no password: a provider account
    frank.groups.add(Group.objects.create(name="engineers"), Group.objects.create(name="auditors"))

    _, landing = sign_in(idp, oidc.url, "frank")

    assert landing.url == f"{oidc.url}/admin/"
    # engineers is mapped and the provider no longer says so; auditors is changegate's own.
    assert sorted(g.name for g in frank.groups.all()) == ["auditors", "reviewers"]


def test_a_local_account_is_never_taken_over_by_the_provider(oidc, idp):
    henry = get_user_model().objects.create_user("henry", password="a local password of his own")

    browser, landing = sign_in(idp, oidc.url, "henry")

    assert landing.url.startswith(f"{oidc.url}/admin/login/")
    assert "Sign-in with Test IdP failed" in landing.text
    assert browser.get(f"{oidc.url}/api/v1/changes/", timeout=30).status_code in (401, 403)
    assert not henry.groups.exists()


@pytest.fixture
def pending(author, dns_target):
    grant(Group.objects.get_or_create(name="reviewers")[0], "reviewer", dns_target)
    change = change_create(actor=author, target=dns_target, title="t", reason="r", items=WWW)
    return change_submit(actor=author, change=change)


def approve(browser: requests.Session, base_url: str, change) -> requests.Response:
    return browser.post(f"{base_url}/api/v1/changes/{change.pk}/approve/", json={"fingerprint": change.fingerprint},
                        headers={"X-CSRFToken": browser.cookies["csrftoken"]}, timeout=30)


@pytest.mark.named
def test_approval_from_a_multi_factor_session_passes_when_required(oidc, idp, pending, settings):
    settings.CHANGEGATE_APPROVAL_REQUIRES_MFA = True
    browser, _ = sign_in(idp, oidc.url, "erin")

    response = approve(browser, oidc.url, pending)

    assert response.status_code == 200, response.text
    assert response.json()["state"] == "approved"
    # The chain says the approval came from a multi-factor session.
    assert AuditEvent.objects.get(change=pending, action="approval_given").payload["mfa"] is True


@pytest.mark.named
def test_approval_without_a_multi_factor_claim_is_refused_when_required(oidc, idp, pending, settings):
    settings.CHANGEGATE_APPROVAL_REQUIRES_MFA = True
    browser, _ = sign_in(idp, oidc.url, "frank")

    response = approve(browser, oidc.url, pending)

    assert response.status_code == 403
    assert "multi-factor" in response.json()["detail"]
    pending.refresh_from_db()
    assert pending.state == "pending_approval" and not pending.approvals.exists()


@pytest.mark.named
def test_an_api_token_never_counts_as_multi_factor(oidc, idp, pending, settings):
    settings.CHANGEGATE_APPROVAL_REQUIRES_MFA = True
    browser, _ = sign_in(idp, oidc.url, "erin")  # an MFA session exists for erin...
    token = Token.objects.create(user=get_user_model().objects.get(username="erin"))

    # ...but a request that authenticates with her token is not that session.
    response = browser.post(f"{oidc.url}/api/v1/changes/{pending.pk}/approve/",
                            json={"fingerprint": pending.fingerprint},
                            headers={"Authorization": f"Token {token.key}"}, timeout=30)

    assert response.status_code == 403 and "multi-factor" in response.json()["detail"]
