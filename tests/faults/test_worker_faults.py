"""Scenarios where workers die, freeze or stop: nothing is lost, no atomic effect is doubled."""

import os
import signal
import time

import pytest
from django.db import connection

from taskkit.models import TERMINAL_STATES, RunState, TaskRun
from tests.conftest import wait_for
from tests.faults.conftest import assert_nothing_lost, settle
from tests.testapp import tasks

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def test_01_worker_child_sigkilled_mid_task(cluster, report):
    """A prefork child SIGKILLed mid-attempt: the parent records it LOST, the run is retried."""
    worker = cluster.start_worker()
    # A relay runs, as in production: on SQLite a child can wait on the one write lock (the other
    # child's atomic attempt holds it) until its hard time limit kills it before it claimed; Celery
    # acknowledges that message and the run, still QUEUED, is the relay's to publish again.
    cluster.start_relay()
    run_ids = cluster.dispatch(20, sleep=0.5)

    def freeze_a_child_mid_attempt() -> TaskRun | None:
        """SIGSTOP the child of a RUNNING run, then make sure the run is still its attempt: the
        kill then lands mid-attempt whatever the machine's speed (else resume and look again)."""
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
    assert_nothing_lost(settle(run_ids, report, "redis", started))
    assert worker.alive
    assert TaskRun.objects.get(pk=victim.pk).attempt_log.filter(outcome="LOST").count() == 1


def test_02_whole_worker_sigkilled_under_load_then_restarted(cluster, report):
    """The whole worker (parent and children) SIGKILLed: the relay recovers the runs it held
    when their leases expire, and the restarted worker drains the rest."""
    run_ids = cluster.dispatch(200, sleep=0.02)  # queued first: the drain cannot outrun us
    worker = cluster.start_worker()
    cluster.start_relay()
    wait_for(lambda: TaskRun.objects.filter(pk__in=run_ids, state=RunState.SUCCEEDED).count() > 20)
    left = TaskRun.objects.filter(pk__in=run_ids).exclude(state__in=TERMINAL_STATES).count()
    started = time.monotonic()
    worker.signal(signal.SIGKILL)
    worker.stop()
    cluster.start_worker()
    row = settle(run_ids, report, "redis", started)
    row.notes = f"{left} runs not terminal at the kill"
    assert left > 0  # ≥ 179 runs of ≥ 20 ms each were left on 2 children: ≥ 1.8 s of work
    assert_nothing_lost(row)


def test_03_poison_task_kills_its_worker_every_time(cluster, report):
    """A task that kills its worker on every delivery is delivered a bounded number of times
    and ends FAILED; the worker keeps serving."""
    worker = cluster.start_worker()
    started = time.monotonic()
    poison = tasks.kills_worker.delay("poison").id
    healthy = cluster.dispatch(10)
    row = settle([*healthy, poison], report, "redis", started)
    run = TaskRun.objects.get(pk=poison)
    assert run.state == RunState.FAILED and run.attempts == 3
    assert (row.duplicated, row.stuck, row.lost) == (0, 0, 1)  # the poison run is the one lost
    row.notes = "poison run FAILED after 3 deliveries"
    assert worker.alive


def test_04_warm_shutdown_mid_drain(cluster, report):
    """SIGTERM mid-drain: the worker finishes or returns what it holds; a new worker drains."""
    run_ids = cluster.dispatch(100, sleep=0.05)  # queued first: the drain cannot outrun us
    worker = cluster.start_worker()
    cluster.start_relay()
    wait_for(lambda: TaskRun.objects.filter(pk__in=run_ids, state=RunState.SUCCEEDED).count() > 10)
    left = TaskRun.objects.filter(pk__in=run_ids).exclude(state__in=TERMINAL_STATES).count()
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    worker.process.wait(60)
    worker.stop()
    cluster.start_worker()
    row = settle(run_ids, report, "redis", started)
    row.notes = f"{left} runs not terminal at the SIGTERM"
    assert left > 0  # ≥ 89 runs of ≥ 50 ms each were left on 2 children: ≥ 2.2 s of work
    assert_nothing_lost(row)


@pytest.mark.skipif(
    connection.vendor == "sqlite",
    reason="SQLite has one write lock: a worker frozen inside an atomic attempt holds it, and "
    "every writer (relay, other workers) waits until it resumes. Several workers on several "
    "hosts need PostgreSQL.",
)
def test_05_frozen_worker_past_its_lease_while_another_takes_over(cluster, report):
    """A worker SIGSTOPped past its lease: the relay recovers its run, another worker runs it;
    when the frozen one resumes, its late success is refused (or its hard time limit kills the
    attempt) and its writes roll back."""
    frozen = cluster.start_worker(concurrency=1)
    run_ids = cluster.dispatch(1, sleep=4.0)  # within the time limit (6 s)
    wait_for(lambda: TaskRun.objects.filter(pk__in=run_ids, state=RunState.RUNNING).exists())
    frozen.signal(signal.SIGSTOP)
    # frozen mid-attempt (checked while frozen: the attempt cannot end meanwhile)
    assert TaskRun.objects.filter(pk__in=run_ids, state=RunState.RUNNING).exists(), (
        "the attempt ended before the worker was frozen (4 s after it started)"
    )
    started = time.monotonic()
    try:
        cluster.start_relay()
        cluster.start_worker()
        wait_for(
            lambda: TaskRun.objects.filter(pk__in=run_ids, state=RunState.SUCCEEDED).exists(),
            60,
            what="the other worker to finish the run",
        )
    finally:
        frozen.signal(signal.SIGCONT)
    # Resumed, the frozen worker ends its stale attempt one of two ways, a race between the
    # child's last instant of sleep and the main process's timer (the freeze outlasted the lease,
    # so also the hard time limit): its late success is refused, or the time limit kills it.
    # Wait for either (a condition, not a time); neither may change the run.
    wait_for(
        lambda: (
            "lost its claim before finishing" in frozen.log()
            or f"Hard time limit (6s) exceeded for tests.testapp.tasks.witness[{run_ids[0]}]"
            in frozen.log()
        ),
        60,
        what="the resumed worker to end its stale attempt",
    )
    row = settle(run_ids, report, "redis", started)
    assert_nothing_lost(row)
    assert TaskRun.objects.get(pk=run_ids[0]).attempt_log.filter(outcome="LOST").count() == 1
