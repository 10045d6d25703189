"""Execution by a real worker: claims, retries, recorded attempts and outcomes (inv. 3, 6, 7, 8)."""

import itertools
import uuid
from decimal import Decimal

import pytest
from celery import Task as CeleryTask
from django_celery_results.models import TaskResult

from taskkit.models import AttemptOutcome, RunState, TaskAttempt, TaskRun
from tests.conftest import wait_for
from tests.testapp import tasks
from tests.testapp.models import Effect, Order

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]


def finished(run_id, timeout=30.0) -> TaskRun:
    return wait_for(
        lambda: TaskRun.objects.filter(
            pk=run_id, state__in=[RunState.SUCCEEDED, RunState.FAILED, RunState.DISCARDED]
        ).first(),
        timeout,
        what=f"run {run_id} to finish",
    )


def test_a_run_succeeds_and_its_result_is_recorded(worker):
    """The worker claims the run, runs it once and records SUCCEEDED, result and one attempt."""
    result = tasks.record.delay("hello", n=1)
    run = finished(result.id)
    assert run.state == RunState.SUCCEEDED
    assert run.result == {"kind": "hello"}
    assert run.attempts == 1 and run.lease_until is None and run.finished_at
    attempt = TaskAttempt.objects.get(run=run)
    assert attempt.outcome == AttemptOutcome.SUCCEEDED and attempt.worker.startswith("w1@")
    assert Effect.objects.filter(kind="hello", run_id=result.id).count() == 1
    # django-celery-results speaks of the same id
    stored = wait_for(lambda: TaskResult.objects.filter(task_id=result.id).first())
    assert stored.status == "SUCCESS"


def test_fails_twice_then_succeeds(worker):
    """Two failures then a success: SUCCEEDED after 3 attempts, each failure with its traceback."""
    result = tasks.flaky.delay("flaky", 2)
    run = finished(result.id)
    assert run.state == RunState.SUCCEEDED and run.attempts == 3 and run.result == 3
    attempts = list(TaskAttempt.objects.filter(run=run).order_by("number"))
    assert [a.outcome for a in attempts] == ["FAILED", "FAILED", "SUCCEEDED"]
    for failed in attempts[:2]:
        assert failed.error_type == "builtins.ConnectionError"
        assert "Traceback" in failed.traceback and "raise ConnectionError" in failed.traceback
        assert failed.retry_delay == pytest.approx(0.3)
    # the recorded gaps follow the wait strategy (wait_fixed(0.3))
    for before, after in itertools.pairwise(attempts):
        gap = (after.started_at - before.finished_at).total_seconds()
        assert gap >= 0.3
    assert Effect.objects.filter(kind="flaky").count() == 3


def test_stop_reached_fails_with_the_last_error(worker):
    """When the stop strategy says stop, the run is FAILED with the last error."""
    result = tasks.always_fails.delay("doomed")
    run = finished(result.id)
    assert run.state == RunState.FAILED and run.attempts == 3
    assert run.error_type == "builtins.ValueError"
    assert run.error_message == "doomed always fails"
    assert "Traceback" in run.error_traceback
    assert TaskAttempt.objects.filter(run=run, outcome="FAILED").count() == 3
    assert wait_for(lambda: TaskResult.objects.filter(task_id=result.id, status="FAILURE").exists())


def test_a_non_retryable_exception_fails_after_one_attempt(worker):
    """The retry predicate refuses KeyError: FAILED after 1 attempt."""
    run = finished(tasks.not_retryable.delay("nr").id)
    assert run.state == RunState.FAILED and run.attempts == 1
    assert run.error_type == "builtins.KeyError"


def test_an_unserializable_result_fails_clearly(worker):
    """A return value that is not JSON ends FAILED naming the problem, without retries."""
    run = finished(tasks.returns_object.delay("obj").id)
    assert run.state == RunState.FAILED and run.attempts == 1
    assert run.error_type == "taskkit.exceptions.ResultNotSerializable"
    assert "return value" in run.error_message


def test_model_instances_are_refetched_by_the_worker(worker):
    """A model argument travels as a reference: the worker sees the row as it is at run time."""
    order = Order.objects.create(reference="A-1", note="before", amount=Decimal("1.50"))
    tasks.touch_order.apply_async((order,), countdown=1)
    Order.objects.filter(pk=order.pk).update(note="after")
    effect = wait_for(lambda: Effect.objects.filter(kind="touch").first())
    assert effect.payload == {"order_id": order.pk, "note": "after", "amount": "1.50"}


@pytest.mark.parametrize(
    ("task", "state", "attempts"),
    [
        ("touch_order", "FAILED", 1),
        ("touch_order_discard", "DISCARDED", 1),
        ("touch_order_retry", "FAILED", 3),
    ],
)
def test_a_missing_object_follows_on_missing(worker, task, state, attempts):
    """A deleted argument ends FAILED, DISCARDED, or is retried, by the task's on_missing."""
    order = Order.objects.create(reference="gone")
    result = getattr(tasks, task).apply_async((order,), countdown=0.5)
    order.delete()
    run = finished(result.id)
    assert (run.state, run.attempts) == (state, attempts)
    assert run.error_type == "taskkit.exceptions.MissingObject"
    assert set(TaskAttempt.objects.filter(run=run).values_list("outcome", flat=True)) == {"MISSING"}
    assert not Effect.objects.exists()
    assert worker.alive


def test_a_duplicate_message_for_a_finished_run_is_skipped(worker):
    """The byte-identical message delivered again after success is acknowledged and skipped."""
    result = tasks.record.delay("once")
    finished(result.id)
    CeleryTask.apply_async(
        tasks.record, args=(), kwargs={}, task_id=result.id, headers={"taskkit_run": "1"}
    )
    wait_for(
        lambda: f"skipped a message for run {result.id}" in worker.log(),
        what="the skip to be logged",
    )
    assert Effect.objects.filter(kind="once").count() == 1
    assert TaskRun.objects.get(pk=result.id).attempts == 1


def test_a_duplicate_delivered_while_running_never_runs_twice(worker):
    """Two messages for one run, both taken while the first attempt runs: one attempt only."""
    result = tasks.sleep_then_record.delay("dup", 2)
    wait_for(lambda: TaskRun.objects.filter(pk=result.id, state=RunState.RUNNING).exists())
    CeleryTask.apply_async(
        tasks.sleep_then_record, args=(), kwargs={}, task_id=result.id, headers={"taskkit_run": "1"}
    )
    run = finished(result.id)
    assert run.state == RunState.SUCCEEDED and run.attempts == 1
    assert Effect.objects.filter(kind="dup").count() == 1
    assert f"skipped a message for run {result.id}" in worker.log()


def test_a_message_sent_without_taskkit_is_adopted(worker):
    """send_task (as celery beat does) with no ledger row: the worker records a run for it."""
    run_id = str(uuid.uuid4())
    tasks.record.app.send_task(
        tasks.record.name, args=("adopted",), kwargs={"x": 1}, task_id=run_id
    )
    run = finished(run_id)
    assert run.state == RunState.SUCCEEDED and run.args == ["adopted"] and run.kwargs == {"x": 1}
    assert Effect.objects.filter(kind="adopted").count() == 1


def test_a_message_for_an_unknown_run_is_skipped(worker):
    """A taskkit message whose run the ledger does not know is logged and acknowledged."""
    run_id = str(uuid.uuid4())
    CeleryTask.apply_async(
        tasks.record, args=(), kwargs={}, task_id=run_id, headers={"taskkit_run": "1"}
    )
    wait_for(lambda: f"message for run {run_id} of" in worker.log(), what="the log line")
    assert not TaskRun.objects.exists()
    assert worker.alive


def test_a_waiting_retry_holds_no_worker_slot(worker):
    """While two runs wait 0.3 s … their retries, other runs use both worker processes."""
    waiting = [tasks.flaky.delay(f"wait-{i}", 1) for i in range(2)]
    wait_for(
        lambda: TaskRun.objects.filter(state=RunState.RETRYING).count() == 2,
        what="two runs to be waiting for a retry",
    )
    quick = [tasks.record.delay(f"quick-{i}") for i in range(4)]
    for r in quick + waiting:
        assert finished(r.id).state == RunState.SUCCEEDED


def test_a_worker_whose_idle_connection_was_killed_reconnects(worker):
    """PostgreSQL: the worker's reused connection is terminated while it is idle; the next run
    is claimed on a fresh connection, not acknowledged and left for the relay."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: the fault is a terminated backend")
    assert finished(tasks.record.delay("warm-up").id).state == RunState.SUCCEEDED
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    assert finished(tasks.record.delay("after-kill").id, timeout=20).state == RunState.SUCCEEDED
