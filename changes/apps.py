from django.apps import AppConfig


class ChangesConfig(AppConfig):
    name = "changes"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import identity_audit

        identity_audit.connect()
