"""``manage.py taskkit_relay``: run the relay (``taskkit.relay.sweep``) until SIGTERM / Ctrl-C."""

from __future__ import annotations

import signal
from typing import Any

import celery
from django.core.management.base import BaseCommand, CommandParser

from taskkit.core.conf import settings
from taskkit.relay import sweep as relay


class Command(BaseCommand):
    help = (
        "Publish runs the broker never got or lost, run due retries and delayed runs, and recover "
        "runs whose worker died. Safe to run on several hosts at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Run one sweep and exit.")
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="Seconds between sweeps (default: TASKKIT_RELAY_INTERVAL).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="Rows per batch (default: TASKKIT_RELAY_BATCH_SIZE).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # A relay resolves task names, so it needs the project's task modules, as a worker does.
        celery.current_app.loader.import_default_modules()
        batch = options["batch_size"] or settings.RELAY_BATCH_SIZE
        if options["once"]:
            result = relay.sweep(batch)
            self.stdout.write(f"taskkit relay: {result}")
            return
        stopping = False

        def stop(signum: int, frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        interval = (
            options["interval"] if options["interval"] is not None else settings.RELAY_INTERVAL
        )
        relay.run_forever(interval, batch, lambda: stopping)
