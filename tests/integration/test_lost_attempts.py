"""Atomic tasks, killed workers and time limits: every attempt ends recorded (inv. 2, 5)."""

import os
import signal

import pytest

from taskkit.models import AttemptOutcome, RunState, TaskAttempt, TaskRun
from tests.conftest import wait_for
from tests.integration.test_execution import finished
from tests.testapp import tasks
from tests.testapp.models import Effect, Order

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]


def test_atomic_exception_leaves_no_partial_writes(worker):
    """An exception in an atomic body rolls back all its writes; the failure is recorded."""
    run = finished(tasks.atomic_then_fail.delay("atomic-x").id)
    assert run.state == RunState.FAILED and run.error_type == "builtins.RuntimeError"
    assert not Effect.objects.exists() and not Order.objects.exists()
    assert TaskAttempt.objects.get(run=run).outcome == AttemptOutcome.FAILED


def test_sigkill_mid_atomic_body_leaves_nothing_and_the_retry_starts_clean(worker):
    """A worker child SIGKILLed inside an atomic body: no partial effect, a LOST attempt, then
    a clean retry that commits its effect together with SUCCEEDED."""
    result = tasks.atomic_slow_first.delay("atomic-kill", 30)
    running = wait_for(
        lambda: TaskRun.objects.filter(pk=result.id, state=RunState.RUNNING, attempts=1).first()
    )
    pid = int(running.claimed_by.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    run = finished(result.id)
    assert run.state == RunState.SUCCEEDED and run.attempts == 2
    outcomes = list(TaskAttempt.objects.filter(run=run).values_list("outcome", flat=True))
    assert outcomes == [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]
    effects = list(Effect.objects.filter(kind="atomic-kill"))
    assert [e.attempt for e in effects] == [2]
    assert worker.alive


def test_a_task_that_kills_its_worker_every_time_ends_failed(worker):
    """A poison task is retried within its stop strategy, then FAILED: no endless loop."""
    run = finished(tasks.kills_worker.delay("poison").id, timeout=60)
    assert run.state == RunState.FAILED and run.attempts == 3
    assert set(TaskAttempt.objects.filter(run=run).values_list("outcome", flat=True)) == {
        AttemptOutcome.LOST
    }
    assert run.error_type == "billiard.exceptions.WorkerLostError"
    assert worker.alive


def test_hard_time_limit_is_a_recorded_attempt(worker):
    """An attempt killed at its hard time limit is recorded TIMED_OUT and retried."""
    run = finished(tasks.hangs_first.delay("hang").id, timeout=60)
    assert run.state == RunState.SUCCEEDED and run.attempts == 2
    first = TaskAttempt.objects.get(run=run, number=1)
    assert first.outcome == AttemptOutcome.TIMED_OUT
    assert first.error_type.endswith(".TimeLimitExceeded")
    assert Effect.objects.filter(kind="hang").count() == 1


def test_soft_time_limit_is_a_recorded_failure(worker):
    """SoftTimeLimitExceeded inside the body is a failed attempt like any exception."""
    run = finished(tasks.soft_limited.delay("soft").id, timeout=60)
    assert run.state == RunState.SUCCEEDED and run.attempts == 2
    first = TaskAttempt.objects.get(run=run, number=1)
    assert first.outcome == AttemptOutcome.FAILED
    assert first.error_type.endswith("SoftTimeLimitExceeded")
