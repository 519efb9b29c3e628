"""Sign-in settings read from the environment (config.settings.base loads them).

OpenID Connect is on only when the issuer, client id and client secret are all
given; some but not all of them stops the process at start, naming the missing."""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from config.env import env_list, env_secret, env_str

# RFC 8176 authentication method references that mean a second factor was used.
DEFAULT_MFA_AMR = ["mfa", "otp", "hwk", "swk"]


def oidc_settings() -> dict[str, Any]:
    """The CHANGEGATE_OIDC_* and mozilla-django-oidc OIDC_* settings."""
    required = {
        "CHANGEGATE_OIDC_ISSUER": env_str("CHANGEGATE_OIDC_ISSUER", "").strip().rstrip("/"),
        "CHANGEGATE_OIDC_CLIENT_ID": env_str("CHANGEGATE_OIDC_CLIENT_ID", "").strip(),
        "CHANGEGATE_OIDC_CLIENT_SECRET": env_secret("CHANGEGATE_OIDC_CLIENT_SECRET", ""),
    }
    missing = [name for name, value in required.items() if not value]
    if len(missing) not in (0, len(required)):
        raise ImproperlyConfigured(f"OpenID Connect sign-in needs {', '.join(missing)} too (or none of them)")
    return {
        "CHANGEGATE_OIDC_ENABLED": not missing,
        "CHANGEGATE_OIDC_ISSUER": required["CHANGEGATE_OIDC_ISSUER"],
        "CHANGEGATE_OIDC_PROVIDER_NAME": env_str("CHANGEGATE_OIDC_PROVIDER_NAME", "your identity provider"),
        "CHANGEGATE_OIDC_GROUPS_CLAIM": env_str("CHANGEGATE_OIDC_GROUPS_CLAIM", "groups"),
        "CHANGEGATE_OIDC_GROUP_MAP": group_map(env_str("CHANGEGATE_OIDC_GROUP_MAP", "{}")),
        "CHANGEGATE_OIDC_MFA_AMR": env_list("CHANGEGATE_OIDC_MFA_AMR", DEFAULT_MFA_AMR),
        "CHANGEGATE_OIDC_MFA_ACR": env_list("CHANGEGATE_OIDC_MFA_ACR", []),
        # mozilla-django-oidc
        "OIDC_RP_CLIENT_ID": required["CHANGEGATE_OIDC_CLIENT_ID"],
        "OIDC_RP_CLIENT_SECRET": required["CHANGEGATE_OIDC_CLIENT_SECRET"],
        "OIDC_RP_SIGN_ALGO": env_str("CHANGEGATE_OIDC_SIGN_ALGO", "RS256"),
        "OIDC_RP_SCOPES": env_str("CHANGEGATE_OIDC_SCOPES", "openid email profile"),
        "OIDC_USE_PKCE": True,
        "OIDC_TIMEOUT": 10,
        "OIDC_CREATE_USER": True,
    }


def group_map(raw: str) -> dict[str, str]:
    """CHANGEGATE_OIDC_GROUP_MAP: a JSON object {"idp group": "changegate group"}."""
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"CHANGEGATE_OIDC_GROUP_MAP is not JSON: {exc}") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in value.items()
    ):
        raise ImproperlyConfigured(
            'CHANGEGATE_OIDC_GROUP_MAP must be a JSON object of group names, e.g. {"idp-reviewers": "reviewers"}'
        )
    return value
