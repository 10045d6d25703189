"""``manage.py demo_traffic --orders 200 --failure-rate 0.2``: place orders to load the demo.

Each order is placed the way the page places it (order + charge run in one transaction). With a
failure rate, that share of the orders meets a gateway outage: their charges fail every attempt
and land in the admin's failed runs (about 20% with ``--failure-rate 0.2``); other runs fail now
and then at random and retry. A progress line is written to stderr.

It runs from a second terminal while ``make demo`` runs, and reaches the demo's Redis and
database through ``demo/var/demo.json``; with no demo running it refuses, saying how to start it.
"""

from __future__ import annotations

import decimal
import random
import sys
import time
from typing import Any

from demoproject import state
from django.core.management.base import BaseCommand, CommandError, CommandParser

from shop.services import RolledBack, place_order
from shop.tasks import export_orders


def progress(done: int, total: int, started: float, width: int = 30) -> str:
    filled = width * done // total if total else width
    rate = done / max(time.monotonic() - started, 1e-9)
    return f"\rorders [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {rate:6.1f}/s"


class Command(BaseCommand):
    help = "Place demo orders through the flaky gateway so the admin and Flower have data."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--orders", type=int, default=200)
        parser.add_argument(
            "--failure-rate", type=float, default=0.2, help="gateway failure rate, 0 to 1"
        )
        parser.add_argument(
            "--roll-back-every",
            type=int,
            default=0,
            metavar="N",
            help="roll back every Nth order after dispatching (nothing is sent for it)",
        )
        parser.add_argument(
            "--export",
            type=int,
            default=0,
            metavar="SECONDS",
            help="also start one slow export run of SECONDS (to cancel from its run page)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        total, rate = options["orders"], options["failure_rate"]
        if total < 1:
            raise CommandError("--orders must be at least 1.")
        if not 0 <= rate <= 1:
            raise CommandError("--failure-rate must be between 0 and 1 (e.g. 0.2).")
        try:
            state.require_running()
        except state.DemoNotRunning as exc:
            raise CommandError(str(exc)) from None
        every = options["roll_back_every"]
        if options["export"] > 0:
            run = export_orders.delay(options["export"])
            self.stdout.write(f"Started export run {run.id} ({options['export']} s).")
        started = time.monotonic()
        rolled_back = 0
        for i in range(1, total + 1):
            amount = decimal.Decimal(random.randint(100, 20000)) / 100
            try:
                place_order(amount, f"customer{i}@example.com", rate, every > 0 and i % every == 0)
            except RolledBack:
                rolled_back += 1
            if i == total or i % 5 == 0:
                sys.stderr.write(progress(i, total, started))
                sys.stderr.flush()
        sys.stderr.write("\n")
        self.stdout.write(
            f"Placed {total - rolled_back} orders ({rolled_back} rolled back) in "
            f"{time.monotonic() - started:.1f} s with a gateway failure rate of {rate} (about "
            f"{rate:.0%} of the charges fail every attempt and end FAILED). Watch them in "
            "/admin/taskkit/taskrun/ and in Flower."
        )
