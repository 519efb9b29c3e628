from django.apps import AppConfig
from django.db.models.signals import post_migrate, pre_migrate


class ApprovalsConfig(AppConfig):
    name = "approvals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from approvals import backstop

        # SQLite only: the author-set triggers are off while migrations rebuild tables.
        pre_migrate.connect(backstop.before_migrate, sender=self, dispatch_uid="approvals_backstop_before")
        post_migrate.connect(backstop.after_migrate, sender=self, dispatch_uid="approvals_backstop_after")
