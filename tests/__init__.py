# Make the test project's Celery app the current app, as a Django project's package does.
from .celery_app import app as celery_app

__all__ = ["celery_app"]
