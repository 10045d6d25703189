"""The relay: publishes what the broker never got or lost, and recovers runs whose worker died.

The ledger is the source of truth; the relay makes it so. Each sweep, in batches:

1. **publish** runs that are due and have no message in flight:
   - PENDING runs older than the grace period (a crash or a broker outage between commit and
     publish) whose ``not_before`` has passed (long countdowns wait here, not in the broker);
   - RETRYING runs whose wait is over and no message was sent for (waits longer than
     ``TASKKIT_ETA_MAX_SECONDS``), or whose delayed message is late by the grace period;
   - QUEUED runs not claimed by their deadline (``requeue_at``): a dispatch writes its run QUEUED,
     published unless proven otherwise, due again the grace period after it is due (its
     dispatcher may have died between commit and publish); each re-publish then pushes the
     deadline ``TASKKIT_REQUEUE_AFTER`` times 2^(messages sent before, at most 6) away (the broker
     lost the message, or the run waits in a backlog: a duplicate is absorbed by the claim, and
     a backlog costs at most one extra message per run until the backoff's next step).
2. **recover** RUNNING runs whose lease expired (the whole worker died, or froze): the attempt is
   recorded as LOST and the run retried or failed by its policy, exactly as a lost child is.
3. record a **heartbeat** row with the sweep's counts.

Runs of a **paused** task or queue (``taskkit.pause_task`` / ``pause_queue``) are not published:
they stay due in the ledger and go out in the first sweep after the pause ends.

Between sweeps, ``run_forever`` also counts the attempts of closed time buckets into the
overview's rollup (``taskkit.core.rollup.fill_if_due``: at most every 20 s, idempotent, one relay
at a time).

Rows are taken with ``SELECT … FOR UPDATE SKIP LOCKED`` (PostgreSQL) and stamped QUEUED in a short
transaction, so relays running at once never publish the same row in one sweep; no lock is held
while talking to the broker. On SQLite that transaction begins IMMEDIATE (it takes the write lock,
waiting out the busy timeout, before it reads), whatever the project's ``transaction_mode``: a
deferred one that reads and then writes is refused at once ("database is locked") when another
process writes. A publish that fails puts the run back as it was (conditionally). A relay that is
down only delays recovery. A sweep never takes a row twice, and stops publishing once it has run
for ``max_seconds`` (``run_forever`` passes its interval), so the heartbeat is written every
interval however long the backlog.

**Runs of tasks this process does not know** (renamed or removed by a deploy, or a relay older
than the workers) never stop a sweep. Task names are resolved once per sweep (the project's task
modules imported at most once). Such a run is published *by name* (the same message, so the old
workers of a rolling deploy still run it) and stamped QUEUED with the usual requeue backoff; the
first time a relay finds its task unregistered it records when (``unregistered_since``, cleared
when a relay finds it registered again). After ``TASKKIT_UNKNOWN_TASK_GRACE_SECONDS`` the run ends
FAILED with ``TaskNotRegistered`` ("task `<name>` is not registered"). An expired lease of such a
run is recorded as a LOST attempt and the run made due again (or FAILED past the grace), like any
other: it never blocks the rest of the batch. A worker that does not know the task rejects the
message (Celery's ``on_unknown_task``); the run stays QUEUED in the ledger for the relay.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import celery
from django.db import IntegrityError, OperationalError, connections, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from ..core import headers, ledger, rollup, signals
from ..core.conf import settings
from ..core.db import db_alias
from ..core.exceptions import TaskNotRegistered
from ..core.spec import TaskSpec
from ..models import AttemptOutcome, RelayHeartbeat, RunState, TaskAttempt, TaskRun
from ..producer import publisher

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
    # A run of a paused task or queue is not published: it waits in the ledger, due, and goes
    # out in the first sweep after the pause ends.
    return (pending | retry_unsent | retry_late | lost_message) & Q(~ledger.paused())


def _unique_stamp() -> datetime.datetime:
    """Now, with random microseconds of jitter: tells this relay's stamped rows from another's."""
    return timezone.now() + datetime.timedelta(microseconds=random.randrange(1, 999_999))


Taken = tuple[Any, str, "datetime.datetime | None", "datetime.datetime | None", int]


def _take_batch(batch_size: int, now: datetime.datetime) -> list[Taken]:
    """Stamp up to ``batch_size`` rows due at ``now`` (the sweep's start, so a sweep never takes
    back what it stamped itself) as QUEUED by this relay; return (id, old state, old queued_at)
    of the rows this relay now owns (with their old requeue_at and publish count)."""
    db = db_alias()
    due = _due_to_publish(now)
    with write_transaction(db):
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
            ledger.take(due, group, stamp, count)
        mine = set(
            TaskRun.objects.using(db)
            .filter(pk__in=ids, queued_at=stamp)
            .values_list("pk", flat=True)
        )
    return [row for row in rows if row[0] in mine]


@contextlib.contextmanager
def write_transaction(db: str) -> Iterator[None]:
    """``transaction.atomic``, begun IMMEDIATE on SQLite (the write lock is taken first, waiting
    out the busy timeout, so the transaction's later write cannot be refused at once)."""
    connection = connections[db]
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        with transaction.atomic(using=db):
            yield
        return
    connection.ensure_connection()
    sqlite: Any = connection  # django.db.backends.sqlite3's wrapper (Django ≥ 5.1)
    mode = sqlite.transaction_mode
    sqlite.transaction_mode = "IMMEDIATE"  # read by BEGIN as the atomic block starts
    try:
        with transaction.atomic(using=db):
            sqlite.transaction_mode = mode
            yield
    finally:
        sqlite.transaction_mode = mode


class TaskLookup:
    """Resolves task names to their specs for one sweep: each name once, the project's task
    modules imported (``import_default_modules``, which also runs the system checks) at most
    once."""

    def __init__(self, app: celery.Celery | None = None) -> None:
        self.app = app or celery.current_app
        self.imported = False
        self.found: dict[str, TaskSpec | None] = {}

    def __call__(self, name: str) -> TaskSpec | None:
        if name in self.found:
            return self.found[name]
        task = self.app.tasks.get(name)
        if not getattr(task, "is_reliable", False) and not self.imported:
            self.imported = True
            self.app.loader.import_default_modules()
            task = self.app.tasks.get(name)
        found: TaskSpec | None = task.spec if getattr(task, "is_reliable", False) else None
        self.found[name] = found
        return found


def _grace() -> datetime.timedelta:
    return datetime.timedelta(seconds=settings.UNKNOWN_TASK_GRACE_SECONDS)


def _not_registered(name: str) -> TaskNotRegistered:
    return TaskNotRegistered.for_task(name, settings.UNKNOWN_TASK_GRACE_SECONDS)


def _publish_batch(rows: list[Taken], counts: Counter[str], lookup: TaskLookup) -> None:
    """Publish the taken rows, one broker connection per (task, options, due time); runs of
    tasks not registered here go out by name, or end FAILED past their grace."""
    db = db_alias()
    previous = {row[0]: row[1:] for row in rows}
    runs = (
        TaskRun.objects.using(db)
        .filter(pk__in=list(previous))
        .only(
            "id",
            "task_name",
            "options",
            "not_before",
            "queued_at",
            "requeue_at",
            "unregistered_since",
            "attempts",
            "args",
            "kwargs",
        )
    )
    now = timezone.now()
    groups: dict[tuple[str, str, Any], list[TaskRun]] = {}
    past_grace: list[TaskRun] = []
    for run in runs:
        unknown = lookup(run.task_name) is None
        if unknown and run.unregistered_since and now - run.unregistered_since >= _grace():
            past_grace.append(run)
            continue
        key = (run.task_name, json.dumps(run.options, sort_keys=True), run.not_before)
        groups.setdefault(key, []).append(run)
    _fail_unregistered(past_grace, counts)
    broker_down = False
    for (name, _, not_before), group in groups.items():
        spec = lookup(name)
        ids = [run.pk for run in group]
        sent: set[Any] = set()
        if not broker_down:
            shown = {
                run.pk: headers.for_run(run.args, run.kwargs, run.options, run.attempts)
                for run in group
            }
            options = group[0].options
            if spec is not None:
                sent = set(publisher.publish_many(spec, ids, options, not_before, shown))
            else:
                sent = set(
                    publisher.publish_many_by_name(
                        lookup.app, name, ids, options, not_before, shown
                    )
                )
        for run in group:
            if run.pk in sent:
                counts[f"published_{previous[run.pk][0].lower()}"] += 1
        if spec is not None:
            again = [run.pk for run in group if run.pk in sent and run.unregistered_since]
            if again:
                ledger.note_registered(again)
        else:
            _note_unregistered([run for run in group if run.pk in sent], now, counts)
        unsent = [run for run in group if run.pk not in sent]
        if unsent:
            broker_down = True
            counts["publish_failed"] += len(unsent)
            for run in unsent:  # put it back as it was, unless a worker already claimed it
                old_state, old_queued_at, old_requeue_at, old_count = previous[run.pk]
                ledger.put_back(
                    run.pk, run.queued_at, old_state, old_queued_at, old_requeue_at, old_count
                )


def _note_unregistered(runs: list[TaskRun], now: datetime.datetime, counts: Counter[str]) -> None:
    """Runs of an unregistered task were published by name: record since when (kept if known)
    and cap their requeue time at the end of their grace."""
    if not runs:
        return
    name = runs[0].task_name
    counts["unregistered_task"] += len(runs)
    by_since: dict[datetime.datetime, list[Any]] = {}
    for run in runs:
        by_since.setdefault(run.unregistered_since or now, []).append(run.pk)
    for since, ids in by_since.items():
        ledger.note_unregistered(ids, runs[0].queued_at, since, since + _grace())
    logger.warning(
        "taskkit relay: %d run(s) name task %s, which is not registered in this process "
        "(renamed or removed by a deploy, or the relay runs older code than the workers); "
        "they were published by name for workers that know it, and end FAILED after "
        "TASKKIT_UNKNOWN_TASK_GRACE_SECONDS (%.0fs) unless a relay finds it registered again.",
        len(runs),
        name,
        settings.UNKNOWN_TASK_GRACE_SECONDS,
    )


def _fail_unregistered(runs: list[TaskRun], counts: Counter[str]) -> None:
    """Runs of tasks unregistered for longer than the grace: FAILED (one transaction), then the
    ``run_failed`` signal for each run that did not get claimed meanwhile."""
    if not runs:
        return
    failed = []
    with write_transaction(db_alias()):
        for run in runs:
            error = ledger.ErrorInfo.from_exception(_not_registered(run.task_name))
            if ledger.fail_unregistered(run.pk, run.queued_at, error):
                failed.append(run)
        ledger.scrub_sensitive([run.pk for run in failed])  # the run ended: no secrets kept
    counts["failed_unregistered"] += len(failed)
    for run in failed:
        signals.send(
            signals.run_failed,
            run.task_name,
            run_id=run.pk,
            attempt=run.attempts,
            exception=_not_registered(run.task_name),
            outcome=ledger.NOT_REGISTERED,
        )


def publish_due(
    batch_size: int,
    counts: Counter[str],
    lookup: TaskLookup | None = None,
    deadline: float | None = None,
) -> None:
    """Publish what is due at the sweep's start, batch after batch, each row at most once; stop
    when the broker refuses, or at ``deadline`` (``time.monotonic()``) leaving the rest due."""
    lookup = lookup or TaskLookup()
    now = timezone.now()
    seen: set[Any] = set()
    while True:
        try:
            rows = _take_batch(batch_size, now)
        except OperationalError as exc:  # SQLite's busy timeout ran out: next sweep
            if connections[db_alias()].vendor != "sqlite":
                raise
            counts["take_busy"] += 1
            logger.warning("taskkit relay: could not take a batch (%s); next sweep.", exc)
            return
        if not rows:
            return
        again = [row[0] for row in rows if row[0] in seen]
        if again:  # cannot happen: every taken row is stamped due later than ``now``
            logger.error("taskkit relay: a sweep took run(s) %s twice; sweep ended.", again[:5])
            return
        seen.update(row[0] for row in rows)
        _publish_batch(rows, counts, lookup)
        if counts["publish_failed"]:
            return  # the broker is down: try again next sweep rather than spin
        if deadline is not None and time.monotonic() >= deadline:
            counts["deferred_to_next_sweep"] += 1
            return


def recover_expired_leases(
    batch_size: int, counts: Counter[str], lookup: TaskLookup | None = None
) -> None:
    """Record the attempts of RUNNING runs whose lease expired as LOST, and move them on."""
    from ..worker.execution import record_failure

    lookup = lookup or TaskLookup()
    db = db_alias()
    now = timezone.now()
    expired = list(
        TaskRun.objects.using(db)
        .filter(state=RunState.RUNNING, lease_until__lt=now)
        .order_by("lease_until")[:batch_size]
    )
    for run in expired:
        started_at = run.started_at or run.lease_until or now
        claim = ledger.Claim(
            run=run, attempt=run.attempts, worker=run.claimed_by, started_at=started_at
        )
        error = WorkerLost(
            f"the lease of attempt {run.attempts} held by {run.claimed_by or 'a worker'} expired "
            f"at {run.lease_until:%Y-%m-%d %H:%M:%S} UTC: the worker died or froze"
        )
        spec = lookup(run.task_name)
        if spec is None:
            state = _lose_unregistered(claim, error, now)
        else:
            state, _ = record_failure(spec, claim, error, AttemptOutcome.LOST)
        if state is not None:
            counts[f"recovered_to_{state.lower()}"] += 1


def _lose_unregistered(
    claim: ledger.Claim, error: WorkerLost, now: datetime.datetime
) -> str | None:
    """An expired lease of a run whose task is not registered here: a LOST attempt, then due
    again (published by name) or, past the grace or the worker-loss limit, FAILED."""
    run = claim.run
    name = run.task_name
    past_grace = run.unregistered_since is not None and now - run.unregistered_since >= _grace()
    losses = (
        TaskAttempt.objects.using(db_alias())
        .filter(run_id=run.pk, outcome=AttemptOutcome.LOST)
        .count()
    )
    too_many = losses + 1 >= settings.MAX_WORKER_LOSSES
    reason: BaseException = error
    if past_grace:
        reason = TaskNotRegistered(f"{_not_registered(name)} (and: {error})")
    state = ledger.lose_unregistered(
        claim, ledger.ErrorInfo.from_exception(reason), give_up=past_grace or too_many
    )
    logger.warning(
        "taskkit relay: the lease of run %s of %s (not registered here) expired; attempt %d "
        "recorded LOST, run now %s.",
        run.pk,
        name,
        claim.attempt,
        state,
    )
    if state == RunState.FAILED:
        signals.send(
            signals.run_failed,
            name,
            run_id=run.pk,
            attempt=claim.attempt,
            exception=reason,
            outcome=AttemptOutcome.LOST,
        )
    return state


class WorkerLost(Exception):
    """The worker holding an attempt stopped renewing it (killed, host lost, frozen)."""


# Recorded as the lost attempt's error type: the path it had before the relay became a package.
WorkerLost.__module__ = "taskkit.relay"


def sweep(
    batch_size: int | None = None, name: str | None = None, max_seconds: float | None = None
) -> SweepResult:
    """One pass of the relay; safe to run from any number of processes at once.

    With ``max_seconds``, publishing stops after the batch that passes it (the rest stays due for
    the next sweep), so the heartbeat is written that often however long the backlog.
    """
    started = time.monotonic()
    batch = batch_size or settings.RELAY_BATCH_SIZE
    result = SweepResult()
    lookup = TaskLookup()
    recover_expired_leases(batch, result.counts, lookup)
    deadline = started + max_seconds if max_seconds is not None else None
    publish_due(batch, result.counts, lookup, deadline)
    result.seconds = time.monotonic() - started
    _heartbeat(name or relay_name(), result)
    return result


def _heartbeat(name: str, result: SweepResult) -> None:
    db = db_alias()
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
    """Sweep every ``interval`` seconds until ``should_stop()``; a failing sweep is logged.

    A sweep publishes for at most half the interval; one cut short by that bound (a backlog) is
    followed by the next at once. Either way a heartbeat is written at least every ``interval``
    plus half of it plus one batch.
    """
    name = relay_name()
    logger.info("taskkit relay %s started: interval %.1fs, batch %d", name, interval, batch_size)
    while not should_stop():
        pause = interval
        try:
            result = sweep(batch_size, name, max_seconds=interval / 2)
            if result.counts:
                logger.info("taskkit relay: %s", result)
            if result.counts["deferred_to_next_sweep"]:
                pause = 0.0  # more is due: sweep again at once (the heartbeat was written)
            rollup.fill_if_due(write_transaction)  # the overview's buckets (≤ every 20 s; no raise)
        except Exception:
            logger.exception("taskkit relay: sweep failed; retrying in %.1fs", interval)
            connections.close_all()
        deadline = time.monotonic() + pause
        while not should_stop() and time.monotonic() < deadline:
            time.sleep(min(0.1, interval))
    logger.info("taskkit relay %s stopped", name)
