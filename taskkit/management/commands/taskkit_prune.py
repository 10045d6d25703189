"""``manage.py taskkit_prune --older-than 7d``: delete finished runs, in batches, with progress.

Only terminal runs (SUCCEEDED, FAILED, DISCARDED, CANCELLED) whose ``finished_at`` is before the
cutoff are deleted, with their attempts. A run that is waiting or running is never deleted, even
when asked: ``--state RUNNING`` is refused. Each batch re-checks state and age in its DELETE, so a
run retried by an operator while the command runs is kept.
"""

from __future__ import annotations

import datetime
import re
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from taskkit.core import ledger
from taskkit.core.db import db_alias
from taskkit.models import TERMINAL_STATES, TaskRun

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")


def parse_age(text: str) -> datetime.timedelta:
    """``"30m"``, ``"12h"``, ``"7d"`` (also ``s``, ``w``) as a timedelta; ValueError otherwise."""
    match = _AGE.match(text or "")
    if not match:
        raise ValueError(
            f"{text!r} is not an age; write a whole number and a unit: 30m, 12h, 7d, 2w "
            "(s, m, h, d, w)."
        )
    amount = int(match.group(1))
    if amount <= 0:
        raise ValueError(f"{text!r} is not a positive age; use at least 1{match.group(2)}.")
    return datetime.timedelta(seconds=amount * UNITS[match.group(2)])


class Command(BaseCommand):
    help = (
        "Delete finished runs (SUCCEEDED, FAILED, DISCARDED, CANCELLED) finished before "
        "--older-than, with their attempts, in batches. Never deletes a waiting or running run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            required=True,
            metavar="AGE",
            help="delete runs finished more than AGE ago: 30m, 12h, 7d, 2w",
        )
        parser.add_argument(
            "--state",
            action="extend",
            nargs="+",
            metavar="STATE",
            help="only these terminal states (default: SUCCEEDED FAILED DISCARDED CANCELLED)",
        )
        parser.add_argument("--batch-size", type=int, default=1000, help="runs per DELETE")
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be deleted, delete nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            age = parse_age(options["older_than"])
        except ValueError as exc:
            raise CommandError(f"--older-than: {exc}") from None
        terminal = sorted(str(s) for s in TERMINAL_STATES)
        states = [s.upper() for s in (options["state"] or terminal)]
        refused = [s for s in states if s not in terminal]
        if refused:
            raise CommandError(
                f"--state {' '.join(refused)}: only finished runs can be pruned "
                f"({', '.join(terminal)}); waiting and running runs are never deleted."
            )
        batch_size = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")

        cutoff = timezone.now() - age
        db = db_alias()
        matching = TaskRun.objects.using(db).filter(state__in=states, finished_at__lt=cutoff)
        total = matching.count()
        self.stdout.write(
            f"{total} run(s) in {', '.join(states)} finished before {cutoff:%Y-%m-%d %H:%M:%S %Z}"
        )
        if options["dry_run"] or not total:
            return
        deleted = 0
        started = time.monotonic()
        while True:
            batch = list(matching.order_by().values_list("pk", flat=True)[:batch_size])
            if not batch:
                break
            deleted += ledger.delete_finished(batch, states, cutoff)
            self.stdout.write(
                f"  deleted {deleted}/{total} runs ({time.monotonic() - started:.1f} s)"
            )
        self.stdout.write(self.style.SUCCESS(f"Deleted {deleted} run(s) and their attempts."))
