"""The relay: publishes what the broker never got or lost, and recovers runs whose worker died.

The ledger is the source of truth; the relay makes it so. Each sweep, in batches:

1. **publish** runs that are due and have no message in flight:
   - PENDING runs older than the grace period (a crash or a broker outage between commit and
     publish) whose ``not_before`` has passed (long countdowns wait here, not in the broker);
   - RETRYING runs whose wait is over and no message was sent for (waits longer than
     ``TASKKIT_ETA_MAX_SECONDS``), or whose delayed message is late by the grace period;
   - QUEUED runs not claimed ``TASKKIT_REQUEUE_AFTER`` after they were due (the broker lost the
     message; a duplicate this may cause is absorbed by the claim).
2. **recover** RUNNING runs whose lease expired (the whole worker died, or froze): the attempt is
   recorded as LOST and the run retried or failed by its policy, exactly as a lost child is.
3. record a **heartbeat** row with the sweep's counts.

Rows are taken with ``SELECT … FOR UPDATE SKIP LOCKED`` (PostgreSQL) and stamped QUEUED in a short
transaction, so relays running at once never publish the same row in one sweep; no lock is held
while talking to the broker. A publish that fails puts the run back as it was (conditionally).
A relay that is down only delays recovery.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, connections, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from . import ledger, publisher
from .conf import settings
from .models import AttemptOutcome, RelayHeartbeat, RunState, TaskRun

logger = logging.getLogger("taskkit.relay")


@dataclass
class SweepResult:
    counts: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def __str__(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()) if v) or "nothing"
        return f"{shown} in {self.seconds:.2f}s"


def relay_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _due_to_publish(now: datetime.datetime) -> Q:
    grace = datetime.timedelta(seconds=settings.RELAY_GRACE_SECONDS)
    requeue = datetime.timedelta(seconds=settings.REQUEUE_AFTER)
    pending = Q(state=RunState.PENDING, created_at__lte=now - grace) & (
        Q(not_before__isnull=True) | Q(not_before__lte=now)
    )
    retry_unsent = Q(state=RunState.RETRYING, queued_at__isnull=True, not_before__lte=now)
    retry_late = Q(state=RunState.RETRYING, queued_at__isnull=False, not_before__lte=now - grace)
    lost_message = Q(state=RunState.QUEUED, requeue_at__lte=now) | Q(
        state=RunState.QUEUED, requeue_at__isnull=True, queued_at__lte=now - requeue
    )
    return pending | retry_unsent | retry_late | lost_message


def _unique_stamp() -> datetime.datetime:
    """Now, with random microseconds of jitter: tells this relay's stamped rows from another's."""
    return timezone.now() + datetime.timedelta(microseconds=random.randrange(1, 999_999))


Taken = tuple[Any, str, "datetime.datetime | None", "datetime.datetime | None", int]


def _take_batch(batch_size: int, now: datetime.datetime) -> list[Taken]:
    """Stamp up to ``batch_size`` rows due at ``now`` (the sweep's start, so a sweep never takes
    back what it stamped itself) as QUEUED by this relay; return (id, old state, old queued_at)
    of the rows this relay now owns (with their old requeue_at and publish count)."""
    db = ledger.db_alias()
    due = _due_to_publish(now)
    with transaction.atomic(using=db):
        candidates: QuerySet[TaskRun] = TaskRun.objects.using(db).filter(due)
        if connections[db].features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        rows: list[Taken] = list(
            candidates.order_by("created_at").values_list(
                "pk", "state", "queued_at", "requeue_at", "publish_count"
            )[:batch_size]
        )
        if not rows:
            return []
        stamp = _unique_stamp()
        ids = [row[0] for row in rows]
        by_count: dict[int, list[Any]] = {}
        for row in rows:
            by_count.setdefault(row[4], []).append(row[0])
        for count, group in by_count.items():
            TaskRun.objects.using(db).filter(due, pk__in=group).update(
                state=RunState.QUEUED,
                queued_at=stamp,
                publish_count=count + 1,
                requeue_at=ledger.requeue_at(stamp, None, count),
            )
        mine = set(
            TaskRun.objects.using(db)
            .filter(pk__in=ids, queued_at=stamp)
            .values_list("pk", flat=True)
        )
    return [row for row in rows if row[0] in mine]


def _publish_batch(rows: list[Taken], counts: Counter[str]) -> None:
    db = ledger.db_alias()
    previous = {row[0]: row[1:] for row in rows}
    runs = (
        TaskRun.objects.using(db)
        .filter(pk__in=list(previous))
        .only("id", "task_name", "options", "not_before", "queued_at")
    )
    for run in runs:
        old_state, old_queued_at, old_requeue_at, old_count = previous[run.pk]
        task = publisher.task_for(run.task_name)
        sent = task is not None and publisher.publish(task, run.pk, run.options, run.not_before)
        if sent:
            counts[f"published_{old_state.lower()}"] += 1
            continue
        counts["publish_failed" if task is not None else "unknown_task"] += 1
        if task is None:
            logger.error(
                "taskkit relay: run %s names task %s, which is not registered here; import the "
                "project's task modules in the relay's process.",
                run.pk,
                run.task_name,
            )
        # put it back as it was, unless a worker already claimed it
        TaskRun.objects.using(db).filter(
            pk=run.pk, state=RunState.QUEUED, queued_at=run.queued_at
        ).update(
            state=old_state,
            queued_at=old_queued_at,
            requeue_at=old_requeue_at,
            publish_count=old_count,
        )


def publish_due(batch_size: int, counts: Counter[str]) -> None:
    now = timezone.now()
    while True:
        rows = _take_batch(batch_size, now)
        if not rows:
            return
        _publish_batch(rows, counts)
        if counts["publish_failed"]:
            return  # the broker is down: try again next sweep rather than spin


def recover_expired_leases(batch_size: int, counts: Counter[str]) -> None:
    """Record the attempts of RUNNING runs whose lease expired as LOST, and move them on."""
    from .execution import record_failure

    db = ledger.db_alias()
    now = timezone.now()
    expired = list(
        TaskRun.objects.using(db)
        .filter(state=RunState.RUNNING, lease_until__lt=now)
        .order_by("lease_until")[:batch_size]
    )
    for run in expired:
        task = publisher.task_for(run.task_name)
        if task is None or run.started_at is None:
            counts["unknown_task"] += 1
            logger.error(
                "taskkit relay: cannot recover run %s of unregistered task %s.",
                run.pk,
                run.task_name,
            )
            continue
        claim = ledger.Claim(
            run=run, attempt=run.attempts, worker=run.claimed_by, started_at=run.started_at
        )
        error = WorkerLost(
            f"the lease of attempt {run.attempts} held by {run.claimed_by or 'a worker'} expired "
            f"at {run.lease_until:%Y-%m-%d %H:%M:%S} UTC: the worker died or froze"
        )
        state, _ = record_failure(task, claim, error, AttemptOutcome.LOST, force_retry=True)
        if state is not None:
            counts[f"recovered_to_{state.lower()}"] += 1


class WorkerLost(Exception):
    """The worker holding an attempt stopped renewing it (killed, host lost, frozen)."""


def sweep(batch_size: int | None = None, name: str | None = None) -> SweepResult:
    """One pass of the relay; safe to run from any number of processes at once."""
    started = time.monotonic()
    batch = batch_size or settings.RELAY_BATCH_SIZE
    result = SweepResult()
    recover_expired_leases(batch, result.counts)
    publish_due(batch, result.counts)
    result.seconds = time.monotonic() - started
    _heartbeat(name or relay_name(), result)
    return result


def _heartbeat(name: str, result: SweepResult) -> None:
    db = ledger.db_alias()
    now = timezone.now()
    beats = RelayHeartbeat.objects.using(db).filter(name=name)
    counts = dict(result.counts)
    if beats.update(last_sweep_at=now, last_counts=counts, sweeps=F("sweeps") + 1):
        return
    try:
        with transaction.atomic(using=db):
            RelayHeartbeat.objects.using(db).create(
                name=name, started_at=now, last_sweep_at=now, sweeps=1, last_counts=counts
            )
    except IntegrityError:  # another sweep of this relay (a thread) wrote the row first
        beats.update(last_sweep_at=now, last_counts=counts, sweeps=F("sweeps") + 1)


def run_forever(interval: float, batch_size: int, should_stop: Any) -> None:
    """Sweep every ``interval`` seconds until ``should_stop()``; a failing sweep is logged."""
    name = relay_name()
    logger.info("taskkit relay %s started: interval %.1fs, batch %d", name, interval, batch_size)
    while not should_stop():
        try:
            result = sweep(batch_size, name)
            if result.counts:
                logger.info("taskkit relay: %s", result)
        except Exception:
            logger.exception("taskkit relay: sweep failed; retrying in %.1fs", interval)
            connections.close_all()
        deadline = time.monotonic() + interval
        while not should_stop() and time.monotonic() < deadline:
            time.sleep(min(0.1, interval))
    logger.info("taskkit relay %s stopped", name)
