"""Failed sign-ins are throttled: admin passwords (django-axes, per username and
address) and API tokens (per address)."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db
# The documented defaults (CHANGEGATE_LOGIN_FAILURE_LIMIT, CHANGEGATE_TOKEN_FAILURE_LIMIT).
LOGIN_LIMIT, TOKEN_LIMIT = 5, 10


def login_page(client: Client) -> str:
    client.get("/admin/login/")
    return client.cookies["csrftoken"].value


def post_login(client: Client, username: str, password: str, **extra):
    return client.post("/admin/login/?next=/admin/", {"csrfmiddlewaretoken": client.cookies["csrftoken"].value,
                                                     "username": username, "password": password,
                                                     "next": "/admin/"}, **extra)


def test_150_wrong_admin_passwords_lock_the_account_after_the_limit(make_user):
    make_user("bob", is_staff=True)
    client = Client(enforce_csrf_checks=True)
    login_page(client)

    statuses = [post_login(client, "bob", f"guess-{n}").status_code for n in range(150)]

    # The form answers "wrong password" until the limit, then only the lockout page.
    assert statuses[:LOGIN_LIMIT - 1] == [200] * (LOGIN_LIMIT - 1)
    assert set(statuses[LOGIN_LIMIT:]) == {429}
    # Locked means locked: the right password does not get in either, and says why.
    locked = post_login(client, "bob", "pw")
    assert locked.status_code == 429 and "_auth_user_id" not in client.session
    assert "Too many failed sign-ins" in locked.content.decode() and "bob" in locked.content.decode()


def test_the_lockout_is_per_username_and_address(make_user):
    make_user("bob", is_staff=True)
    make_user("carol", is_staff=True)
    attacker = Client(enforce_csrf_checks=True)
    login_page(attacker)
    for n in range(LOGIN_LIMIT):
        post_login(attacker, "bob", f"guess-{n}")
    assert post_login(attacker, "bob", "pw").status_code == 429

    # Another account from the same address, and the same account from another address, still sign in.
    assert post_login(attacker, "carol", "pw").status_code == 302
    elsewhere = Client(enforce_csrf_checks=True, REMOTE_ADDR="192.0.2.44")
    login_page(elsewhere)
    assert post_login(elsewhere, "bob", "pw").status_code == 302


def test_a_successful_login_resets_the_count(make_user):
    make_user("bob", is_staff=True)
    client = Client(enforce_csrf_checks=True)
    login_page(client)
    for _ in range(2):
        for n in range(LOGIN_LIMIT - 1):
            assert post_login(client, "bob", f"guess-{n}").status_code == 200
        assert post_login(client, "bob", "pw").status_code == 302
        client.logout()
        login_page(client)


def test_300_wrong_tokens_are_answered_429_after_the_limit(make_user):
    token = Token.objects.create(user=make_user("robot"))
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    responses = [api.get("/api/v1/changes/") for _ in range(300)]

    assert [r.status_code for r in responses[:TOKEN_LIMIT]] == [401] * TOKEN_LIMIT
    assert {r.status_code for r in responses[TOKEN_LIMIT:]} == {429}
    body = responses[-1].json()
    assert body["code"] == "throttled" and "too many failed token attempts" in body["detail"]
    assert int(responses[-1]["Retry-After"]) > 0
    # While the address is throttled even a valid token waits: a late hit looks like a miss.
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert api.get("/api/v1/changes/").status_code == 429
    # Other addresses are not affected.
    other = APIClient(REMOTE_ADDR="192.0.2.55")
    other.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert other.get("/api/v1/changes/").status_code == 200



def test_behind_a_proxy_wrong_tokens_throttle_the_client_not_everyone(make_user, settings):
    settings.CHANGEGATE_TRUSTED_PROXIES = 1
    token = Token.objects.create(user=make_user("robot"))
    # The proxy appends the peer it saw; whatever the client put in front is ignored.
    attacker = APIClient(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.1")
    attacker.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    for n in range(TOKEN_LIMIT):
        attacker.get("/api/v1/changes/", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}, 198.51.100.1")
    attacker.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert attacker.get("/api/v1/changes/", HTTP_X_FORWARDED_FOR="10.9.9.9, 198.51.100.1").status_code == 429

    colleague = APIClient(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.2")
    colleague.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert colleague.get("/api/v1/changes/").status_code == 200
