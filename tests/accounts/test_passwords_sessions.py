"""Password rules and session length, through the admin's own forms."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db


def admin_client(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/admin/")  # the CSRF cookie
    return client


@pytest.mark.parametrize("password", ["a", "password1234", "12345678901234", "newperson-2026"])
def test_the_admin_add_user_form_refuses_a_weak_password(make_user, password):
    root = make_user("root", is_staff=True, is_superuser=True)
    client = admin_client(root)

    response = client.post("/admin/auth/user/add/", {
        "csrfmiddlewaretoken": client.cookies["csrftoken"].value, "username": "newperson",
        "usable_password": "true", "password1": password, "password2": password,
    })

    assert response.status_code == 200  # the form again, with the reason
    assert response.context["adminform"].form.errors["password2"]
    assert not get_user_model().objects.filter(username="newperson").exists()


def test_the_admin_add_user_form_accepts_a_long_uncommon_password(make_user):
    client = admin_client(make_user("root", is_staff=True, is_superuser=True))
    response = client.post("/admin/auth/user/add/", {
        "csrfmiddlewaretoken": client.cookies["csrftoken"].value, "username": "newperson",
        "usable_password": "true", "password1": "quartz-lantern-907-oboe", "password2": "quartz-lantern-907-oboe",
    })
    assert response.status_code == 302
    assert get_user_model().objects.get(username="newperson").check_password("quartz-lantern-907-oboe")


def test_an_admin_session_lasts_hours_and_ends_with_the_browser(make_user, settings):
    make_user("bob", is_staff=True)
    client = Client(enforce_csrf_checks=True)
    client.get("/admin/login/")

    response = client.post("/admin/login/", {"csrfmiddlewaretoken": client.cookies["csrftoken"].value,
                                             "username": "bob", "password": "pw", "next": "/admin/"})

    assert response.status_code == 302
    assert client.session.get_expiry_age() == settings.SESSION_COOKIE_AGE == 8 * 3600
    assert response.cookies["sessionid"]["max-age"] == ""  # a browser-session cookie
