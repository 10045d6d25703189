"""Bench (opt-in, ``TASKKIT_BENCH=1``): the admin list pages on a 100k-run ledger.

Prints the query count and time of each list page and, on PostgreSQL, the plan of the page query;
asserts the count stays small. ``TASKKIT_BENCH=1 .venv/bin/python -m pytest tests/bench -s``.
"""

from __future__ import annotations

import os
import time

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from taskkit.models import RunState, TaskRun

RUNS = int(os.environ.get("TASKKIT_BENCH_RUNS") or 100_000)

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.timeout(600),
    pytest.mark.skipif(os.environ.get("TASKKIT_BENCH") != "1", reason="set TASKKIT_BENCH=1"),
]


def test_list_pages_at_100k_runs(client):
    """Each list page of a 100k-run ledger makes a handful of queries and answers quickly."""
    states = [RunState.SUCCEEDED] * 8 + [RunState.FAILED, RunState.QUEUED]
    TaskRun.objects.bulk_create(
        (
            TaskRun(
                task_name=f"bench.task_{i % 20}",
                queue=f"q{i % 3}",
                state=states[i % len(states)],
                error_type="x.Err" if i % 10 == 8 else "",
                error_message="boom" if i % 10 == 8 else "",
            )
            for i in range(RUNS)
        ),
        batch_size=5000,
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE taskkit_taskrun")
    client.force_login(User.objects.create_superuser("bench", "b@example.com", "pw"))
    pages = {
        "runs": reverse("admin:taskkit_taskrun_changelist"),
        "runs page 50": reverse("admin:taskkit_taskrun_changelist") + "?p=50",
        "failed tasks": reverse("admin:taskkit_failedrun_changelist"),
        "runs state+task": reverse("admin:taskkit_taskrun_changelist")
        + "?state__exact=FAILED&task_name=bench.task_8",
        "overview": reverse("admin:taskkit_taskrun_overview"),
    }
    print(f"\n{RUNS} runs on {connection.vendor}")
    for name, url in pages.items():
        client.get(url)  # warm caches
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            assert client.get(url).status_code == 200
            elapsed = time.perf_counter() - started
        print(f"  {name:18} {len(queries):2} queries {elapsed * 1000:7.1f} ms")
        for q in queries:
            print(f"      {float(q['time']) * 1000:7.1f} ms  {q['sql'][:150]}")
        assert len(queries) <= 8
    if connection.vendor == "postgresql":
        page = TaskRun.objects.filter(state=RunState.FAILED).order_by("-created_at", "-pk")[:50]
        print(page.explain())
