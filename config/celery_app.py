import os

from celery import Celery
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("changegate")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@setup_logging.connect
def _django_logging(**_: object) -> None:
    """Workers log through settings.LOGGING too (JSON with LOG_JSON=true, change ids),
    instead of Celery's own root-logger setup."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)
