"""Where people land: `/` leads to the admin, `/api/v1/` describes the API, and the API
docs (Swagger UI, ReDoc) load every asset from this server — they must work on a
network without internet, where a CDN-hosted page stays blank (issue 15)."""

from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

pytestmark = [pytest.mark.django_db]


def test_root_redirects_to_the_admin() -> None:
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"


def test_api_root_lists_the_entry_points_as_json() -> None:
    response = Client().get("/api/v1/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    body = response.json()
    endpoints = body["endpoints"]
    assert endpoints["changes"]["url"] == "http://testserver/api/v1/changes/"
    assert endpoints["targets"]["url"] == "http://testserver/api/v1/targets/"
    assert endpoints["docs"]["url"] == "http://testserver/api/docs/"
    # Every listed URL answers (not a 404 of the API's catch-all).
    for entry in endpoints.values():
        path = entry["url"].removeprefix("http://testserver")
        assert Client().get(path).status_code != 404, path


def test_api_root_ignores_a_bad_token() -> None:
    response = Client().get("/api/v1/", HTTP_AUTHORIZATION="Token not-a-token")
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_docs_load_only_local_assets(path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 200
    html = response.content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources, html
    for source in sources:
        assert not re.match(r"^(https?:)?//", source), f"{path} loads {source} from elsewhere"
    assets = [s for s in sources if s.startswith("/static/")]
    assert any("drf_spectacular_sidecar" in s for s in assets), sources
    for asset in assets:
        # The file ships with the installed packages: collectstatic / runserver can serve it.
        assert finders.find(asset.removeprefix("/static/")), f"{asset} is not a static file of this project"
