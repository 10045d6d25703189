"""Django app configuration for taskkit: connects the default logging, registers the checks and
makes Redis brokers use taskkit's transport unless the project chose one
(``taskkit.worker.broker``), and keeps a worker's prefork pool from dying on a broker reconnect
(``taskkit.worker.pool``), and has a worker close discarded and cancelled runs in monitors
(``taskkit.worker.revoked``)."""

from django.apps import AppConfig


class TaskkitConfig(AppConfig):
    name = "taskkit"
    verbose_name = "Reliable tasks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks
        from .observe import signal_handlers
        from .worker import broker, pool, revoked

        signal_handlers.connect()
        checks.register()
        broker.connect()
        pool.connect()
        revoked.connect()
