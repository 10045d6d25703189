"""Django app configuration for taskkit: connects the default logging and registers the checks."""

from django.apps import AppConfig


class TaskkitConfig(AppConfig):
    name = "taskkit"
    verbose_name = "Reliable tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, signal_handlers

        signal_handlers.connect()
        checks.register()
