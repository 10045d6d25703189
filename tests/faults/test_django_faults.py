"""Fault scenarios repeated through Django's task API (``django.tasks`` on taskkit's backend):
the broker down at commit, a worker child SIGKILLed mid-task, the whole worker SIGKILLed, and a
byte-identical message delivered twice. The witness is ``tests.testapp.django_tasks.witness``
(atomic through ``@task_options``: its row commits with SUCCEEDED or not at all); the rows join
the fault suite's table (``dj-`` scenarios). Redis only."""

from __future__ import annotations

import os
import re
import signal
import time

import django
import pytest
import redis
from django.db import connection, transaction

from taskkit.models import TERMINAL_STATES, RunState, TaskRun
from tests.conftest import Worker, wait_for
from tests.faults.conftest import Cluster, assert_nothing_lost, settle

pytestmark = [
    pytest.mark.skipif(
        django.VERSION < (6, 0),
        reason="Django's task API (django.tasks) needs Django >= 6.0; "
        f"this is {django.get_version()}",
    ),
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(150),
]

if django.VERSION >= (6, 0):
    from django.tasks import TaskResultStatus

    from tests.testapp import django_tasks

#: Where kombu keeps messages of Django's default priority (0 → Redis 5 → step 3).
DEFAULT_KEY = "default\x06\x163"


def start_worker(cluster: Cluster, concurrency: int = 2) -> Worker:
    """A worker of the scenario consuming Django's default queue too."""
    worker = Worker(
        f"{cluster.name}-{len(cluster.workers)}",
        concurrency=concurrency,
        queues="celery,default",
        env=cluster.env,
    )
    cluster.workers.append(worker.start())
    return worker


def enqueue(count: int, **kwargs: object) -> list[str]:
    return [django_tasks.witness.enqueue(i, **kwargs).id for i in range(count)]


def statuses(run_ids: list[str]) -> set[str]:
    """Django's view of the runs (get_result), after the ledger's counts were taken."""
    return {str(django_tasks.witness.get_result(run_id).status) for run_id in run_ids}


def test_dj_broker_down_at_commit_then_restarted(cluster, report):
    """Redis is down while 20 enqueues commit: each returns at once, the runs stay READY
    (PENDING) in the ledger; the relay publishes them once Redis is back."""
    start_worker(cluster)
    cluster.broker.stop()
    try:
        run_ids, seconds = [], []
        for i in range(20):
            t0 = time.monotonic()
            with transaction.atomic():
                run_ids.append(django_tasks.witness.enqueue(i).id)
            seconds.append(time.monotonic() - t0)
        assert max(seconds) < 2.0, seconds
        assert set(
            TaskRun.objects.filter(pk__in=run_ids).values_list("state", flat=True)
        ) == {RunState.PENDING}
        assert statuses(run_ids) == {TaskResultStatus.READY}
        cluster.start_relay()
    finally:
        cluster.broker.restart_empty()
    started = time.monotonic()
    row = settle(run_ids, report, "redis", started)
    row.notes = f"through django.tasks; slowest enqueue {max(seconds):.2f}s"
    assert_nothing_lost(row)
    assert statuses(run_ids) == {TaskResultStatus.SUCCESSFUL}


def test_dj_worker_child_sigkilled_mid_task(cluster, report):
    """A prefork child SIGKILLed mid-attempt: the attempt is recorded LOST (an error of the
    result), the run retried; its effect lands once."""
    start_worker(cluster)
    cluster.start_relay()
    run_ids = enqueue(20, sleep=0.5)

    def freeze_a_child_mid_attempt() -> TaskRun | None:
        run = TaskRun.objects.filter(pk__in=run_ids, state=RunState.RUNNING).first()
        if run is None:
            return None
        pid = int(run.claimed_by.rsplit(":", 1)[1])
        os.kill(pid, signal.SIGSTOP)
        if TaskRun.objects.filter(
            pk=run.pk, state=RunState.RUNNING, attempts=run.attempts, claimed_by=run.claimed_by
        ).exists():
            return run
        os.kill(pid, signal.SIGCONT)
        return None

    victim = wait_for(freeze_a_child_mid_attempt, 30, what="a child mid-attempt")
    assert isinstance(victim, TaskRun)
    started = time.monotonic()
    os.kill(int(victim.claimed_by.rsplit(":", 1)[1]), signal.SIGKILL)
    row = settle(run_ids, report, "redis", started)
    assert_nothing_lost(row)
    result = django_tasks.witness.get_result(str(victim.pk))
    assert result.status == TaskResultStatus.SUCCESSFUL and result.attempts >= 2
    assert any("WorkerLost" in e.exception_class_path for e in result.errors), result.errors
    row.notes = f"through django.tasks; the killed run: {result.attempts} attempts, LOST recorded"


def test_dj_whole_worker_sigkilled_under_load_then_restarted(cluster, report):
    """The whole worker SIGKILLed mid-drain: the relay recovers the runs it held when their
    leases expire; a new worker drains the rest."""
    run_ids = enqueue(100, sleep=0.02)
    worker = start_worker(cluster)
    cluster.start_relay()
    wait_for(lambda: TaskRun.objects.filter(pk__in=run_ids, state=RunState.SUCCEEDED).count() > 10)
    left = TaskRun.objects.filter(pk__in=run_ids).exclude(state__in=TERMINAL_STATES).count()
    started = time.monotonic()
    worker.signal(signal.SIGKILL)
    worker.stop()
    start_worker(cluster)
    row = settle(run_ids, report, "redis", started)
    row.notes = f"through django.tasks; {left} runs not terminal at the kill"
    assert left > 0
    assert_nothing_lost(row)


def test_dj_byte_identical_message_redelivered_mid_attempt(cluster, report):
    """The exact bytes of a run's message pushed again while its attempt runs: the duplicate
    loses the claim and is skipped; one attempt, one effect, one worker id."""
    broker = redis.Redis(port=cluster.broker.port)
    run_id = enqueue(1, sleep=3.0)[0]
    wait_for(lambda: broker.llen(DEFAULT_KEY) == 1, 10, what="the message to be queued")
    (raw,) = broker.lrange(DEFAULT_KEY, 0, -1)
    assert run_id.encode() in raw
    worker = start_worker(cluster)
    wait_for(
        lambda: TaskRun.objects.filter(pk=run_id, state=RunState.RUNNING).exists(),
        20,
        what="the first attempt to start",
    )
    started = time.monotonic()
    broker.lpush(DEFAULT_KEY, raw)
    skipped = re.compile(rf"skipped a message for run {run_id} of \S+: the run is (\w+) ")
    match = wait_for(lambda: skipped.search(worker.log()), 20, what="the duplicate skipped")
    assert isinstance(match, re.Match)
    row = settle([run_id], report, "redis", started)
    assert_nothing_lost(row)
    result = django_tasks.witness.get_result(run_id)
    assert result.status == TaskResultStatus.SUCCESSFUL and result.attempts == 1
    assert result.errors == [] and result.return_value == 0
    if connection.vendor == "postgresql":
        assert match.group(1) == RunState.RUNNING
    row.notes = f"through django.tasks; duplicate skipped (run {match.group(1)} at the skip)"
