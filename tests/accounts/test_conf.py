"""Sign-in settings from the environment fail loudly on a bad value."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from accounts.conf import oidc_settings


@pytest.fixture
def env(monkeypatch):
    for name in ("ISSUER", "CLIENT_ID", "CLIENT_SECRET", "CLIENT_SECRET_FILE", "GROUP_MAP"):
        monkeypatch.delenv(f"CHANGEGATE_OIDC_{name}", raising=False)
    return monkeypatch


def test_oidc_is_off_without_its_settings(env):
    assert oidc_settings()["CHANGEGATE_OIDC_ENABLED"] is False


def test_half_an_oidc_configuration_names_what_is_missing(env):
    env.setenv("CHANGEGATE_OIDC_ISSUER", "https://idp.example.net/")
    with pytest.raises(ImproperlyConfigured, match="CHANGEGATE_OIDC_CLIENT_ID, CHANGEGATE_OIDC_CLIENT_SECRET"):
        oidc_settings()


def test_a_full_configuration_turns_it_on_with_the_secret_from_a_file(env, tmp_path):
    (tmp_path / "secret").write_text("s3cret\n")
    env.setenv("CHANGEGATE_OIDC_ISSUER", "https://idp.example.net/")
    env.setenv("CHANGEGATE_OIDC_CLIENT_ID", "changegate")
    env.setenv("CHANGEGATE_OIDC_CLIENT_SECRET_FILE", str(tmp_path / "secret"))
    env.setenv("CHANGEGATE_OIDC_GROUP_MAP", '{"idp-reviewers": "reviewers"}')
    conf = oidc_settings()
    assert conf["CHANGEGATE_OIDC_ENABLED"] and conf["CHANGEGATE_OIDC_ISSUER"] == "https://idp.example.net"
    assert conf["OIDC_RP_CLIENT_SECRET"] == "s3cret" and conf["CHANGEGATE_OIDC_GROUP_MAP"] == {"idp-reviewers": "reviewers"}


@pytest.mark.parametrize("raw", ["not json", '["reviewers"]', '{"idp": 3}', '{"": "reviewers"}'])
def test_a_bad_group_map_is_refused(env, raw):
    env.setenv("CHANGEGATE_OIDC_GROUP_MAP", raw)
    with pytest.raises(ImproperlyConfigured, match="CHANGEGATE_OIDC_GROUP_MAP"):
        oidc_settings()
