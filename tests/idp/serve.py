"""Run the test identity provider: bind a free loopback port, migrate its own
SQLite file, create the users and changegate's client, print "READY <port>",
then serve until killed. Reading that line is the readiness signal (no polling).

    IDP_DB, IDP_KEY_FILE, IDP_USERS_FILE, IDP_CLIENT_ID, IDP_CLIENT_SECRET,
    IDP_REDIRECT_URI (changegate's callback)
"""

import json
import os
import sys
from pathlib import Path

from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler


def main() -> None:
    server = ThreadedWSGIServer(("127.0.0.1", 0), WSGIRequestHandler)
    port = server.server_address[1]
    os.environ["IDP_ISSUER"] = f"http://127.0.0.1:{port}/o"
    os.environ["DJANGO_SETTINGS_MODULE"] = "idp_settings"
    sys.path.insert(0, str(Path(__file__).resolve().parent))

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from oauth2_provider.models import Application

    call_command("migrate", verbosity=0, interactive=False)
    users = json.loads(Path(os.environ["IDP_USERS_FILE"]).read_text())
    for username, profile in users.items():
        get_user_model().objects.create_user(username, email=profile["email"], password=profile["password"])
    Application.objects.create(
        name="changegate", client_id=os.environ["IDP_CLIENT_ID"], client_secret=os.environ["IDP_CLIENT_SECRET"],
        client_type=Application.CLIENT_CONFIDENTIAL, authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=os.environ["IDP_REDIRECT_URI"], skip_authorization=True,
        algorithm=Application.RS256_ALGORITHM,
    )
    server.set_app(get_wsgi_application())
    print(f"READY {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
