"""Counting database round trips, and profiling, inside a worker child or in-process.

Statements are counted with ``connection.execute_wrapper`` and sorted by what they do; commits
and new connections are counted too, because each is a round trip that no statement shows
(on PostgreSQL psycopg also sends a ``BEGIN`` of its own before a transaction's first statement).
In a worker child the counts are flushed to a Redis hash after every task.
"""

from __future__ import annotations

import cProfile
import os
import re
from collections import Counter
from typing import Any

from django.db import connection
from django.db.backends.signals import connection_created

_KINDS = [
    ("dcr: result", re.compile(r"django_celery_results", re.I)),
    ("finish: insert attempt", re.compile(r'^INSERT INTO "taskkit_taskattempt"', re.I)),
    ("dispatch: insert run", re.compile(r'^INSERT INTO "taskkit_taskrun"', re.I)),
    (
        "dispatch: mark QUEUED",
        re.compile(r'^UPDATE "taskkit_taskrun" SET "state" = \S+, "queued_at"'),
    ),
    ("finish: UPDATE SUCCEEDED", re.compile(r'^UPDATE "taskkit_taskrun" SET .*"result"', re.S)),
    (
        "claim: UPDATE RUNNING",
        re.compile(r'^UPDATE "taskkit_taskrun" SET .*"first_started_at"', re.S),
    ),
    ("claim: SELECT run", re.compile(r'^SELECT .* FROM "taskkit_taskrun"', re.S)),
    ("business row", re.compile(r"benchapp_item")),
    ("savepoint", re.compile(r"^(SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO)")),
    ("begin", re.compile(r"^BEGIN")),
]


class QueryCounter:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        kind = next((k for k, pattern in _KINDS if pattern.search(sql)), "other: " + sql[:40])
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


def install_in_worker_child() -> None:
    from celery import signals

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
        profiler = cProfile.Profile()
        profiler.enable()

        @signals.worker_process_shutdown.connect(weak=False)
        def dump(**kwargs: Any) -> None:
            profiler.disable()
            profiler.dump_stats(os.path.join(os.environ["BENCH_PROFILE"], f"{os.getpid()}.prof"))
