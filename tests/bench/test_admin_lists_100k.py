"""Bench (opt-in, ``TASKKIT_BENCH=1``): the admin's lists, searches and overview on a large ledger.

100k runs and 540k attempts over 7 days (``TASKKIT_BENCH_RUNS``; 6 attempts per run
that ran). Prints, per
page, the query count and server time of the first load and of a repeat, and the rollup's fill
(what a relay does once after deploy, then a minute at a time); asserts every page makes at most
8 queries. Times are printed, not asserted (they depend on the machine). PostgreSQL builds the
attempts with one ``INSERT … SELECT``; elsewhere the ORM does (slower; use fewer runs).

``TASKKIT_BENCH=1 DATABASE_URL=postgres://… .venv/bin/python -m pytest tests/bench -s``.
"""

from __future__ import annotations

import datetime
import os
import time

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from taskkit.core import rollup
from taskkit.models import AttemptOutcome, RunState, TaskAttempt, TaskRun

RUNS = int(os.environ.get("TASKKIT_BENCH_RUNS") or 100_000)
ATTEMPTS_PER_RUN = 6  # of the 90% of runs that ran: 540k attempts for 100k runs
SPAN = datetime.timedelta(days=7)

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(os.environ.get("TASKKIT_BENCH") != "1", reason="set TASKKIT_BENCH=1"),
]


def _ledger() -> None:
    states = [RunState.SUCCEEDED] * 8 + [RunState.FAILED, RunState.QUEUED]
    TaskRun.objects.bulk_create(
        (
            TaskRun(
                task_name=f"bench.task_{i % 20}",
                queue=f"q{i % 3}",
                state=states[i % len(states)],
                idempotency_key=f"order:{i}",
                args=[i, "EUR"],
                kwargs={"order_id": i, "customer": f"c{i % 500}"},
                attempts=ATTEMPTS_PER_RUN,
                error_type=f"shop.errors.Err{i % 7}" if i % 10 == 8 else "",
                error_message=f"order {i}: card declined (code {i % 97})" if i % 10 == 8 else "",
            )
            for i in range(RUNS)
        ),
        batch_size=5000,
    )
    now = timezone.now()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # Runs spread over the 7 days (a QUEUED tenth: queued at creation).
            cursor.execute(
                "UPDATE taskkit_taskrun SET created_at = %s - random() * interval '7 days'",
                [now],
            )
            cursor.execute(
                "UPDATE taskkit_taskrun SET queued_at = created_at WHERE state = 'QUEUED'"
            )
            cursor.execute(
                "INSERT INTO taskkit_taskattempt (run_id, number, outcome, worker, started_at, "
                "finished_at, duration, error_type, error_message, traceback, retry_delay) "
                "SELECT r.id, n, "
                "CASE WHEN n = %s AND r.state = 'SUCCEEDED' THEN 'SUCCEEDED' ELSE 'FAILED' END, "
                "'bench:1', r.created_at + n * interval '2 seconds' - interval '1 second' "
                "+ random() * interval '1 second', "
                "LEAST(r.created_at + n * interval '2 seconds', %s), 0.5, "
                "CASE WHEN n = %s AND r.state = 'SUCCEEDED' THEN '' ELSE 'x.Err' END, '', '', "
                "CASE WHEN n < %s THEN 1.0 END "
                "FROM taskkit_taskrun r CROSS JOIN generate_series(1, %s) AS n "
                "WHERE r.state <> 'QUEUED'",
                [ATTEMPTS_PER_RUN, now, ATTEMPTS_PER_RUN, ATTEMPTS_PER_RUN, ATTEMPTS_PER_RUN],
            )
            cursor.execute("ANALYZE taskkit_taskrun")
            cursor.execute("ANALYZE taskkit_taskattempt")
        return
    runs = list(TaskRun.objects.exclude(state=RunState.QUEUED).values_list("pk", "state"))
    attempts = []
    for k, (pk, state) in enumerate(runs):
        at = now - SPAN * (k / max(1, len(runs)))
        for n in range(1, ATTEMPTS_PER_RUN + 1):
            ok = n == ATTEMPTS_PER_RUN and state == RunState.SUCCEEDED
            attempts.append(
                TaskAttempt(
                    run_id=pk,
                    number=n,
                    outcome=AttemptOutcome.SUCCEEDED if ok else AttemptOutcome.FAILED,
                    started_at=at,
                    finished_at=at,
                    retry_delay=1.0 if n < ATTEMPTS_PER_RUN else None,
                )
            )
    TaskAttempt.objects.bulk_create(attempts, batch_size=5000)


def _measure(client: Client, url: str) -> list[tuple[int, float, float]]:
    """(queries, server ms, of which SQL ms) of the first load and of a repeat."""
    out = []
    for _ in range(2):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(url)
            elapsed = time.perf_counter() - started
        assert response.status_code == 200, url
        sql = sum(float(q["time"]) for q in queries.captured_queries) * 1000
        out.append((len(queries), elapsed * 1000, sql))
    return out


def test_console_pages_at_100k_runs_500k_attempts():
    """Every list, search and the overview: at most 8 queries each; times printed."""
    started = time.perf_counter()
    _ledger()
    built = time.perf_counter() - started
    attempts = TaskAttempt.objects.count()
    client = Client()
    client.force_login(User.objects.create_superuser("bench", "b@example.com", "pw"))
    client.get(reverse("admin:index"))  # a warm server process (imports, templates), cold pages
    some = TaskRun.objects.filter(state=RunState.FAILED).order_by("pk")[RUNS // 50]
    runs = reverse("admin:taskkit_taskrun_changelist")
    failed = reverse("admin:taskkit_failedrun_changelist")
    overview = reverse("admin:taskkit_taskrun_overview")
    lists = {
        "runs": runs,
        "runs page 50": runs + "?p=50",
        "failed tasks": failed,
        "runs state+task": runs + "?state__exact=FAILED&task_name=bench.task_8",
        "filter recent 15m": runs + "?recent=15m",
        "filter recent 1h": runs + "?recent=1h",
        "filter recent 24h": runs + "?recent=24h",
        "filter error class": failed + "?error_class=shop.errors.Err3",
        "filter queue": runs + "?queue=q1",
        "filter stuck queued": runs + "?stuck=queued",
        "failed ended 1h": failed + "?ended=1h",
        "search id prefix": runs + f"?q={str(some.pk)[:8]}",
        "search full id": runs + f"?q={some.pk}",
        "search key": runs + "?q=key:order:4242",
        "search error text": runs + "?q=error:code 42)",
        "search error class": failed + "?q=class:Err3",
        "search arg positional": runs + "?q=arg:4242",
        "search arg keyword": runs + "?q=arg:order_id=4242",
        "search task": runs + "?q=task:task_7",
        "search plain text": runs + "?q=order:4242",
    }
    pages = dict(lists)
    cold = {f"overview {w} (no rollup)": overview + f"?window={w}" for w in ("1h", "24h", "7d")}
    warm = {f"overview {w}": overview + f"?window={w}" for w in ("1h", "24h", "7d")}
    warm["overview 7d one task"] = overview + "?window=7d&task=bench.task_3"

    print(f"\n{RUNS} runs, {attempts} attempts on {connection.vendor} (built in {built:.0f} s)")
    print(f"  {'page':28} {'first: queries, ms (SQL ms)':>28} {'repeat':>28}")
    results = {}
    for name, url in cold.items():
        results[name] = _measure(client, url)
    fill_started = time.perf_counter()
    filled = rollup.fill()
    fill_seconds = time.perf_counter() - fill_started
    fill_again_started = time.perf_counter()
    rollup.fill()
    fill_again = time.perf_counter() - fill_again_started
    for name, url in {**warm, **pages}.items():
        results[name] = _measure(client, url)
    for name, ((q1, ms1, sql1), (q2, ms2, sql2)) in results.items():
        print(
            f"  {name:28} {q1:2} q {ms1:7.1f} ms ({sql1:6.1f}) {q2:2} q {ms2:7.1f} ms ({sql2:6.1f})"
        )
    print(f"  load average while measuring: {os.getloadavg()}")
    print(
        f"  rollup backfill (relay, once): {fill_seconds * 1000:.0f} ms for {filled}; "
        f"a fill with nothing new: {fill_again * 1000:.1f} ms"
    )
    over = {name: r for name, r in results.items() if "no rollup" not in name and r[0][0] > 8}
    assert over == {}
