from django.apps import AppConfig
from django.contrib.auth.signals import user_logged_in


class AccountsConfig(AppConfig):
    """Sign-in: OpenID Connect, the MFA flag of a session, throttled token auth."""

    name = "accounts"

    def ready(self) -> None:
        from accounts.mfa import on_user_logged_in

        user_logged_in.connect(on_user_logged_in, dispatch_uid="changegate_session_mfa")
