"""Attempts counted per task and time bucket: the overview's charts without scanning the ledger.

Each attempt row says how an attempt ended: **finished** (succeeded), **retried** (failed, a
retry was scheduled: ``retry_delay`` is set) or **failed** (failed and ended its run: no retry).
An attempt counts in the bucket of its ``finished_at``; an operator retry later does not move it,
so a chart over time never shrinks when failed runs are retried. A first attempt also adds its
commit-to-start latency (``started_at`` minus the run's ``created_at``) to the bucket's sketch
(``taskkit.core.sketch``).

``fill()`` counts buckets that closed (``taskkit.core.buckets``) into ``AttemptRollup`` rows, for
minutes and hours, starting where the last fill stopped: each bucket is read from the attempts
table once. A fill is one transaction that writes the rows of its buckets together with a marker
row per bucket; the unique constraint on (width, start, task) makes a second fill of the same
buckets fail and roll back, so any number of relays on any number of hosts may call it (on
PostgreSQL an advisory lock makes the others skip rather than wait). The relay calls it after its
sweeps (``fill_if_due``). Nothing is written on a run's path.

``read()`` answers a chart: the closed buckets from the rollup and, live from the attempts table,
everything after the last filled bucket (one grouped statement). If no relay has filled anything
the answer is the same, only slower (the live part then covers the whole window).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, connections, transaction

from ..models import AttemptOutcome, AttemptRollup, TaskAttempt, TaskRun
from . import buckets, sketch
from .db import db_alias

logger = logging.getLogger("taskkit.rollup")

#: How far back a first fill starts, and how long rows are kept, per width (seconds).
BACKFILL = {buckets.MINUTE: 3 * 3600, buckets.HOUR: 8 * 86400}
KEEP = {buckets.MINUTE: 2 * 86400, buckets.HOUR: 35 * 86400}
#: At most this much time is counted per fill and width (a long outage catches up over sweeps).
MAX_SPAN = {buckets.MINUTE: 6 * 3600, buckets.HOUR: 8 * 86400}
#: ``fill_if_due`` fills at most this often per process (seconds).
FILL_EVERY = 20.0
#: Minute rows read to bridge the last filled hour and now (an hour chart's open part).
BRIDGE = 3 * 3600
_ADVISORY_KEY = 0x7461736B6B6974  # "taskkit"

KINDS = ("finished", "retried", "failed")


@dataclass
class Counts:
    finished: int = 0
    retried: int = 0
    failed: int = 0
    latency: sketch.Sketch = field(default_factory=dict)

    def add(self, other: Counts) -> None:
        self.finished += other.finished
        self.retried += other.retried
        self.failed += other.failed
        sketch.add_all(self.latency, other.latency)

    @property
    def total(self) -> int:
        return self.finished + self.retried + self.failed


Grouped = dict[tuple[str, int], Counts]  # (task name, bucket number) -> counts


def _grouped_sql(db: str, width: int, task: bool) -> str:
    connection = connections[db]
    qn = connection.ops.quote_name
    attempts, runs = qn(TaskAttempt._meta.db_table), qn(TaskRun._meta.db_table)
    if connection.vendor == "postgresql":
        bucket = f"FLOOR(EXTRACT(EPOCH FROM a.finished_at) / {width})::bigint"
        ms = "EXTRACT(EPOCH FROM a.started_at - r.created_at) * 1000"
        bin_ = f"FLOOR(LN(GREATEST({ms}, 1)) / LN({sketch.GAMMA}))::int"
    else:  # SQLite: strftime('%s') is exact whole seconds; Django registers LN and FLOOR
        bucket = f"CAST(strftime('%%s', a.finished_at) AS INTEGER) / {width}"
        ms = "(julianday(a.started_at) - julianday(r.created_at)) * 86400000.0"
        bin_ = f"CAST(FLOOR(LN(MAX({ms}, 1)) / LN({sketch.GAMMA})) AS INTEGER)"
    return (
        f"SELECT r.task_name, {bucket} AS bucket, "
        f"CASE WHEN a.outcome = '{AttemptOutcome.SUCCEEDED.value}' THEN 'finished' "
        "WHEN a.retry_delay IS NULL THEN 'failed' ELSE 'retried' END AS kind, "
        f"CASE WHEN a.number = 1 AND a.started_at IS NOT NULL THEN {bin_} END AS bin, "
        "COUNT(*) "
        f"FROM {attempts} a JOIN {runs} r ON r.id = a.run_id "
        "WHERE a.finished_at >= %s AND a.finished_at < %s"
        + (" AND r.task_name = %s" if task else "")
        + " GROUP BY 1, 2, 3, 4"
    )


def _grouped_python(
    db: str, width: int, since: datetime.datetime, until: datetime.datetime
) -> list[tuple[Any, ...]]:
    """The grouped statement's rows, computed in Python (databases other than PG / SQLite)."""
    counts: dict[tuple[Any, ...], int] = defaultdict(int)
    rows = (
        TaskAttempt.objects.using(db)
        .filter(finished_at__gte=since, finished_at__lt=until)
        .values_list(
            "run__task_name",
            "finished_at",
            "outcome",
            "retry_delay",
            "number",
            "started_at",
            "run__created_at",
        )
    )
    for task, finished_at, outcome, delay, number, started_at, created_at in rows.iterator():
        kind = (
            "finished"
            if outcome == AttemptOutcome.SUCCEEDED
            else ("failed" if delay is None else "retried")
        )
        bin_ = (
            sketch.bin_of((started_at - created_at).total_seconds())
            if number == 1 and started_at is not None
            else None
        )
        counts[(task, buckets.index(finished_at, width), kind, bin_)] += 1
    return [(*key, n) for key, n in counts.items()]


def grouped(
    width: int,
    since: datetime.datetime,
    until: datetime.datetime,
    db: str | None = None,
) -> Grouped:
    """Attempts that ended in ``[since, until)``, counted per (task, bucket of ``width``): one
    statement, grouped by the database."""
    db = db or db_alias()
    if connections[db].vendor in ("postgresql", "sqlite"):
        with connections[db].cursor() as cursor:
            cursor.execute(_grouped_sql(db, width, task=False), [since, until])
            rows = cursor.fetchall()
    else:
        rows = _grouped_python(db, width, since, until)
    out: Grouped = {}
    for task, number, kind, bin_, n in rows:
        counts = out.setdefault((task, int(number)), Counts())
        setattr(counts, kind, getattr(counts, kind) + int(n))
        if bin_ is not None:
            sketch.add(counts.latency, int(bin_), int(n))
    return out


# -- fill ---------------------------------------------------------------------------------------


def _filled_until(db: str, width: int) -> datetime.datetime | None:
    last = (
        AttemptRollup.objects.using(db)
        .filter(width=width, task_name="")
        .order_by("-start")
        .values_list("start", flat=True)
        .first()
    )
    return last + datetime.timedelta(seconds=width) if last is not None else None


def _try_lock(db: str) -> bool:
    connection = connections[db]
    if connection.vendor != "postgresql":
        return True  # SQLite: writers are serialised; the unique constraint settles a race
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_ADVISORY_KEY])
        row = cursor.fetchone()
    return bool(row and row[0])


#: ``begin(db)``: the context manager a fill's transaction runs in.
Begin = Callable[[str], AbstractContextManager[Any]]


def _atomic(db: str) -> AbstractContextManager[Any]:
    return transaction.atomic(using=db)


def fill_width(
    width: int,
    now: datetime.datetime | None = None,
    db: str | None = None,
    begin: Begin = _atomic,
) -> int:
    """Count the closed buckets of ``width`` not counted yet; returns how many buckets.

    ``begin`` opens the transaction (the relay passes its SQLite-safe IMMEDIATE one)."""
    db = db or db_alias()
    now = now or datetime.datetime.now(tz=buckets.UTC)
    closed = buckets.closed_until(now, width)
    try:
        with begin(db):
            if not _try_lock(db):
                return 0
            since = _filled_until(db, width) or buckets.floor(
                now - datetime.timedelta(seconds=BACKFILL[width]), width
            )
            until = min(closed, since + datetime.timedelta(seconds=MAX_SPAN[width]))
            if until <= since:
                return 0
            rows = [
                AttemptRollup(
                    width=width,
                    start=buckets.start_of(number, width),
                    task_name=task,
                    finished=c.finished,
                    failed=c.failed,
                    retried=c.retried,
                    latency=c.latency,
                )
                for (task, number), c in grouped(width, since, until, db).items()
                if task  # a run with an empty task name cannot pose as a marker
            ]
            first, last = buckets.index(since, width), buckets.index(until, width)
            rows += [
                AttemptRollup(width=width, start=buckets.start_of(n, width), task_name="")
                for n in range(first, last)
            ]
            AttemptRollup.objects.using(db).bulk_create(rows, batch_size=1000)
            AttemptRollup.objects.using(db).filter(
                width=width, start__lt=now - datetime.timedelta(seconds=KEEP[width])
            ).delete()
            return last - first
    except IntegrityError:  # another process filled these buckets first
        return 0


def fill(
    now: datetime.datetime | None = None, db: str | None = None, begin: Begin = _atomic
) -> dict[int, int]:
    """Count every closed bucket not counted yet (minutes, then hours); safe to call anywhere,
    any number of times. Returns buckets counted per width."""
    return {width: fill_width(width, now, db, begin) for width in (buckets.MINUTE, buckets.HOUR)}


_last_fill = 0.0
_fill_lock = threading.Lock()


def fill_if_due(begin: Begin = _atomic) -> None:
    """``fill()``, at most every ``FILL_EVERY`` seconds per process; a failure is logged, never
    raised (the relay's sweep must go on)."""
    global _last_fill
    with _fill_lock:
        if time.monotonic() - _last_fill < FILL_EVERY:
            return
        _last_fill = time.monotonic()
    try:
        fill(begin=begin)
    except Exception as error:  # e.g. "database is locked" on a busy SQLite: next time
        logger.warning(
            "taskkit: counting attempts into the rollup failed (%s); next try later", error
        )


# -- read ---------------------------------------------------------------------------------------


@dataclass
class Chart:
    """A window's buckets (oldest first), each with its counts; and the totals per task."""

    window: buckets.Window
    starts: list[datetime.datetime]
    totals: list[Counts]
    by_task: dict[str, Counts]
    task: str | None
    live_since: datetime.datetime

    @property
    def tasks(self) -> list[str]:
        return sorted(self.by_task)


def _contiguous(markers: set[datetime.datetime], since: datetime.datetime, width: int) -> Any:
    cursor = since
    while cursor in markers:
        cursor += datetime.timedelta(seconds=width)
    return cursor


def read(
    window: buckets.Window,
    task: str | None = None,
    now: datetime.datetime | None = None,
    db: str | None = None,
) -> Chart:
    """The chart of ``window`` (for one task, or all): two statements, however many attempts."""
    db = db or db_alias()
    now = now or datetime.datetime.now(tz=buckets.UTC)
    width = window.width
    first = window.first_start(now)
    bridge = buckets.floor(now - datetime.timedelta(seconds=BRIDGE), buckets.MINUTE)
    rows = AttemptRollup.objects.using(db).filter(width=width, start__gte=first)
    if width != buckets.MINUTE:
        rows = rows | AttemptRollup.objects.using(db).filter(
            width=buckets.MINUTE, start__gte=max(bridge, first)
        )
    fetched = list(
        rows.values_list("width", "start", "task_name", "finished", "failed", "retried", "latency")
    )
    main_markers = {r[1] for r in fetched if r[0] == width and not r[2]}
    filled = _contiguous(main_markers, first, width)
    live_since = filled
    minute_markers = (
        {r[1] for r in fetched if r[0] == buckets.MINUTE and not r[2]}
        if width != buckets.MINUTE
        else set()
    )
    if minute_markers and filled >= bridge:
        live_since = _contiguous(minute_markers, filled, buckets.MINUTE)

    starts = window.starts(now)
    numbers = {buckets.index(s, width): i for i, s in enumerate(starts)}
    newest = buckets.index(starts[-1], width)
    totals = [Counts() for _ in starts]
    by_task: dict[str, Counts] = {}

    def put(task_name: str, moment: datetime.datetime, counts: Counts) -> None:
        number = buckets.index(moment, width)
        i = numbers.get(number, len(starts) - 1 if number > newest else None)
        if i is None:
            return
        by_task.setdefault(task_name, Counts()).add(counts)
        if task is None or task_name == task:
            totals[i].add(counts)

    for row_width, start, task_name, finished, failed, retried, latency in fetched:
        if not task_name:
            continue
        closed = row_width == width and start < filled
        bridging = row_width == buckets.MINUTE != width and filled <= start < live_since
        if closed or bridging:
            put(task_name, start, Counts(finished, retried, failed, latency or {}))
    later = now + datetime.timedelta(days=1)  # workers' clocks may run ahead a little
    for (task_name, number), counts in grouped(width, live_since, later, db).items():
        put(task_name, buckets.start_of(number, width), counts)
    return Chart(window, starts, totals, by_task, task, live_since)
