"""Figures about the ledger, read from the database in a handful of indexed queries.

``read()`` returns a ``LedgerStats`` snapshot shared by the Prometheus collector
(``taskkit.observe.metrics``) and ``manage.py taskkit_status``. Everything comes from the database,
so the figures are the same whichever process asks and however many workers run; nothing is counted
in process memory."""

from __future__ import annotations

import datetime
import statistics
from dataclasses import dataclass, field

from django.db.models import Count, Min, Q, Sum
from django.utils import timezone

from ..core.conf import settings
from ..models import AttemptOutcome, RelayHeartbeat, RunState, TaskAttempt, TaskRun

WAITING_STATES = (RunState.PENDING, RunState.QUEUED)
QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class LedgerStats:
    #: (task name, state) → number of runs.
    runs: dict[tuple[str, str], int] = field(default_factory=dict)
    #: task name → attempts made by all its runs.
    attempts: dict[str, int] = field(default_factory=dict)
    #: (task name, attempt outcome) → failed attempts (every outcome but SUCCEEDED).
    attempt_failures: dict[tuple[str, str], int] = field(default_factory=dict)
    #: state (PENDING, QUEUED) → age in seconds of the oldest run in it, since it was written.
    oldest_waiting: dict[str, float] = field(default_factory=dict)
    #: quantile → seconds from dispatch (row written, just before commit) to the first attempt.
    commit_to_start: dict[float, float] = field(default_factory=dict)
    #: how many recent runs ``commit_to_start`` was computed from.
    commit_to_start_runs: int = 0
    #: relay name → seconds since its last sweep.
    relay_heartbeats: dict[str, float] = field(default_factory=dict)
    #: (task name, error type) → FAILED runs (e.g. ``taskkit.exceptions.TaskNotRegistered``).
    failed_by_error: dict[tuple[str, str], int] = field(default_factory=dict)
    #: task name → runs a relay found not registered, waiting out the grace before FAILED.
    unregistered_waiting: dict[str, int] = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        return sorted({task for task, _ in self.runs} | set(self.attempts))


def read(now: datetime.datetime | None = None) -> LedgerStats:
    """Read the figures now (eight queries)."""
    now = now or timezone.now()
    runs: dict[tuple[str, str], int] = {}
    attempts: dict[str, int] = {}
    # One pass over the runs gives both run counts and attempt totals.
    for row in TaskRun.objects.values("task_name", "state").annotate(
        n=Count("id"), attempts=Sum("attempts")
    ):
        runs[(row["task_name"], row["state"])] = row["n"]
        attempts[row["task_name"]] = attempts.get(row["task_name"], 0) + (row["attempts"] or 0)

    failures = {
        (row["run__task_name"], row["outcome"]): row["n"]
        for row in TaskAttempt.objects.filter(~Q(outcome=AttemptOutcome.SUCCEEDED))
        .values("run__task_name", "outcome")
        .annotate(n=Count("id"))
    }

    oldest_waiting = {}
    for state in WAITING_STATES:  # one index seek each (a partial index SQLite matches by `=`)
        oldest = TaskRun.objects.filter(state=state).aggregate(oldest=Min("created_at"))["oldest"]
        if oldest is not None:
            oldest_waiting[state.value] = max(0.0, (now - oldest).total_seconds())

    recent = list(
        TaskRun.objects.filter(first_started_at__isnull=False)
        .order_by("-created_at")
        .values_list("created_at", "first_started_at")[: settings.METRICS_RECENT_RUNS]
    )
    delays = sorted(
        max(0.0, (started - created).total_seconds()) for created, started in recent if started
    )

    heartbeats = {
        name: max(0.0, (now - last).total_seconds())
        for name, last in RelayHeartbeat.objects.values_list("name", "last_sweep_at")
    }
    failed_by_error = {
        (row["task_name"], row["error_type"]): row["n"]
        for row in TaskRun.objects.filter(state=RunState.FAILED)
        .values("task_name", "error_type")
        .annotate(n=Count("id"))
    }
    unregistered_waiting = {
        row["task_name"]: row["n"]
        for row in TaskRun.objects.filter(unregistered_since__isnull=False)
        .values("task_name")
        .annotate(n=Count("id"))
    }
    return LedgerStats(
        failed_by_error=failed_by_error,
        unregistered_waiting=unregistered_waiting,
        runs=runs,
        attempts=attempts,
        attempt_failures=failures,
        oldest_waiting=oldest_waiting,
        commit_to_start=quantiles(delays),
        commit_to_start_runs=len(delays),
        relay_heartbeats=heartbeats,
    )


def quantiles(values: list[float]) -> dict[float, float]:
    """The ``QUANTILES`` of sorted ``values`` (interpolated); empty for no values."""
    if not values:
        return {}
    if len(values) == 1:
        return dict.fromkeys(QUANTILES, values[0])
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {q: cuts[round(q * 100) - 1] for q in QUANTILES}
