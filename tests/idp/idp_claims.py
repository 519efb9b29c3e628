"""The claims each test user's ID token and userinfo carry, from the users file."""

import json
import os
from pathlib import Path

from oauth2_provider.oauth2_validators import OAuth2Validator

USERS = json.loads(Path(os.environ["IDP_USERS_FILE"]).read_text())


class ClaimsValidator(OAuth2Validator):
    oidc_claim_scope = None  # every claim below, whatever scopes were asked

    def get_additional_claims(self, request):
        profile = USERS[request.user.username]
        claims = {"preferred_username": request.user.username, "email": profile["email"],
                  "groups": profile.get("groups", [])}
        for name in ("amr", "acr"):
            if name in profile:
                claims[name] = profile[name]
        return claims
