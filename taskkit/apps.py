"""Django app configuration for taskkit."""

from django.apps import AppConfig


class TaskkitConfig(AppConfig):
    name = "taskkit"
    verbose_name = "Reliable tasks"
    default_auto_field = "django.db.models.BigAutoField"
