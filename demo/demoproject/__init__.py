"""The taskkit demo project; loads the Celery app so that web processes can publish tasks."""

from .celery import app as celery_app

__all__ = ("celery_app",)
