"""Timing, counting database round trips, and profiling, inside a worker child or in-process.

Every worker child stamps the wall-clock time of its first task start (``task_prerun``, once)
and, after every task, counts the run as done and stamps its finish time in one pipelined round
trip (``task_postrun``, which Celery sends after the result backend stored the outcome and after
taskkit recorded it in the ledger). A drain is timed from the earliest first start to the latest
finish, so worker start-up and the bench's own polling are not in it.

Statements are counted with ``connection.execute_wrapper`` and sorted by what they do; commits
and new connections are counted too, because each is a round trip that no statement shows
(on PostgreSQL psycopg also sends a ``BEGIN`` of its own before a transaction's first statement).
In a worker child the counts are flushed to a Redis hash after every task.
"""

from __future__ import annotations

import cProfile
import os
import re
import time
from collections import Counter
from typing import Any

from django.db import connection
from django.db.backends.signals import connection_created

from taskkit.core.prepared import RELAXED_PREFIX, RELAXED_SUFFIX

_KINDS = [
    (
        "finish: UPDATE run + INSERT attempt + upsert TaskResult",
        re.compile(
            r'^WITH won AS \(UPDATE "taskkit_taskrun".*"django_celery_results_taskresult"', re.S
        ),
    ),
    (
        "finish: upsert TaskResult",
        re.compile(r'^INSERT INTO "django_celery_results_taskresult" .*ON CONFLICT', re.S),
    ),
    ("dcr: result", re.compile(r"django_celery_results", re.I)),
    (
        "finish: UPDATE run + INSERT attempt",
        re.compile(r'^WITH won AS \(UPDATE "taskkit_taskrun"', re.I),
    ),
    ("finish: insert attempt", re.compile(r'^INSERT INTO "taskkit_taskattempt"', re.I)),
    ("dispatch: insert run", re.compile(r'^INSERT INTO "taskkit_taskrun"', re.I)),
    (  # operator retries after their publish; a dispatch only when its publish failed
        "dispatch: mark QUEUED / unsent",
        re.compile(r'^UPDATE "taskkit_taskrun" SET "state" = \S+, "queued_at"'),
    ),
    (
        "claim: UPDATE RUNNING",
        re.compile(r'^UPDATE "taskkit_taskrun" SET .*COALESCE\((\S+\.)?"first_started_at"', re.S),
    ),
    (
        "finish: UPDATE SUCCEEDED",
        re.compile(r'^UPDATE "taskkit_taskrun" SET .*"finished_at"', re.S),
    ),
    ("claim: SELECT run", re.compile(r'^SELECT .* FROM "taskkit_taskrun"', re.S)),
    ("business row", re.compile(r"benchapp_item")),
    ("savepoint", re.compile(r"^(SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO)")),
    ("begin", re.compile(r"^BEGIN")),
]


_PREPARE = re.compile(r"^PREPARE (\w+) AS (.*)", re.S)
_EXECUTE = re.compile(r"^EXECUTE (\w+)")


def _kind(sql: str) -> str:
    return next((k for k, pattern in _KINDS if pattern.search(sql)), "other: " + sql[:40])


class QueryCounter:
    """Counts statements by kind; a prepared statement's ``EXECUTE`` counts as the kind of the
    text its ``PREPARE`` gave (``taskkit.core.prepared``), the ``PREPARE`` itself apart."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.prepared: dict[str, str] = {}

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        text = sql
        if sql.startswith(RELAXED_PREFIX):  # a claim, committed in the same round trip
            text = sql[len(RELAXED_PREFIX) : -len(RELAXED_SUFFIX)]
        if prepare := _PREPARE.match(text):
            self.prepared[prepare.group(1)] = _kind(prepare.group(2))
            kind = "prepare (once per session)"
        elif run := _EXECUTE.match(text):
            kind = self.prepared.get(run.group(1), "other: " + text[:40])
        else:
            kind = _kind(text)
        self.counts[kind] += 1
        return execute(sql, params, many, context)

    def install(self) -> QueryCounter:
        connection.execute_wrappers.append(self)
        original_commit = connection._commit

        def counted_commit() -> Any:
            if connection.connection is not None:
                self.counts["commit"] += 1
            return original_commit()

        connection._commit = counted_commit  # type: ignore[method-assign]
        connection_created.connect(self._connected, weak=False)
        return self

    def _connected(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        self.counts["connect"] += 1


#: Redis keys of the timing probe (the bench deletes them before each drain).
FIRST = "bench:first:"  # + child pid: time.time() of the child's first task start
LAST = "bench:last:"  # + child pid: time.time() of the child's latest task finish


def install_in_worker_child() -> None:
    from celery import signals

    from bench.benchapp.tasks import DONE, redis_client

    pid = os.getpid()
    started: list[bool] = []

    @signals.task_prerun.connect(weak=False)
    def first_start(**kwargs: Any) -> None:
        if not started:
            started.append(True)
            redis_client().set(f"{FIRST}{pid}", repr(time.time()))

    @signals.task_postrun.connect(weak=False)
    def finished(**kwargs: Any) -> None:
        pipe = redis_client().pipeline(transaction=False)
        pipe.incr(DONE)
        pipe.set(f"{LAST}{pid}", repr(time.time()))
        pipe.execute()

    if os.environ.get("BENCH_COUNT_QUERIES"):
        from bench.benchapp.tasks import redis_client

        counter = QueryCounter().install()

        @signals.task_postrun.connect(weak=False)
        def flush(**kwargs: Any) -> None:
            pipe = redis_client().pipeline()
            for kind, n in counter.counts.items():
                pipe.hincrby("bench:queries", kind, n)
            pipe.execute()
            counter.counts.clear()

    if os.environ.get("BENCH_PROFILE"):
        profiler = cProfile.Profile(time.process_time)  # CPU, not waits
        profiler.enable()

        @signals.worker_process_shutdown.connect(weak=False)
        def dump(**kwargs: Any) -> None:
            profiler.disable()
            profiler.dump_stats(os.path.join(os.environ["BENCH_PROFILE"], f"{os.getpid()}.prof"))
