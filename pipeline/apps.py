from django.apps import AppConfig


class PipelineConfig(AppConfig):
    name = "pipeline"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the Celery tasks in every process, not only in workers (Celery's
        # autodiscovery runs at worker start): the notification outbox runs its task
        # eagerly by name in the test settings (pipeline.publish).
        from pipeline import tasks  # noqa: F401
