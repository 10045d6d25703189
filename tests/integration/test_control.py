"""Durable control through the public API, with real workers: cancel a run in each state, pause
and resume a task or a queue (held across workers and a worker restart), the relay skipping
paused runs; and the latencies of resume → first start and cancel → CANCELLED."""

import datetime
import json
import os
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

import taskkit
from taskkit.core import signals
from taskkit.models import (
    AttemptOutcome,
    RelayHeartbeat,
    RunState,
    TaskAttempt,
    TaskPause,
    TaskRun,
)
from taskkit.relay import sweep as relay
from tests.conftest import OUTPUT, ROOT, Worker, wait_for
from tests.testapp import control_tasks, tasks
from tests.testapp.models import Effect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

ENDED = [RunState.SUCCEEDED, RunState.FAILED, RunState.DISCARDED, RunState.CANCELLED]


def ended(run_id, timeout=60.0) -> TaskRun:
    return wait_for(
        lambda: TaskRun.objects.filter(pk=run_id, state__in=ENDED).first(),
        timeout,
        what=f"run {run_id} to end",
    )


def held(workers, run_ids, timeout=60.0) -> None:
    """Wait until a worker refused each run's message because it is paused (the run waits)."""

    def all_held() -> bool:
        lines = [line for w in workers for line in w.log().splitlines() if "waits" in line]
        return all(any(str(pk) in line for line in lines) for pk in run_ids)

    wait_for(all_held, timeout, 0.2, what="the workers to hold the paused runs")


@pytest.fixture
def cancelled_signals():
    seen = []
    signals.run_cancelled.connect(lambda **kw: seen.append(kw), weak=False, dispatch_uid="ctl")
    yield seen
    signals.run_cancelled.disconnect(dispatch_uid="ctl")


@pytest.fixture
def second_worker(worker):
    w2 = Worker("w2").start()
    yield w2
    w2.stop()


def test_cancel_a_queued_run_at_once(clean_broker, cancelled_signals):
    """A QUEUED run becomes CANCELLED in one call; the signal names it and who asked."""
    run_id = tasks.parked.delay("q").id
    assert TaskRun.objects.get(pk=run_id).state == RunState.QUEUED
    result = taskkit.cancel(run_id, by="alice")
    assert result.cancelled and result.changed and result.state == RunState.CANCELLED
    run = TaskRun.objects.get(pk=run_id)
    assert run.state == RunState.CANCELLED and run.finished_at and run.cancel_requested_at
    assert run.discard_reason == "cancelled by alice" and run.attempts == 0
    assert [(str(s["run_id"]), s["reason"]) for s in cancelled_signals] == [
        (run_id, "cancelled by alice")
    ]


@pytest.mark.parametrize("state", [RunState.PENDING, RunState.RETRYING])
def test_cancel_a_pending_or_retrying_run_at_once(clean_broker, state):
    """PENDING and RETRYING runs are cancelled at once too, and never published afterwards."""
    run_id = tasks.parked.delay("w").id
    TaskRun.objects.filter(pk=run_id).update(
        state=state, created_at=timezone.now() - datetime.timedelta(hours=1), queued_at=None
    )
    assert taskkit.cancel(run_id).cancelled
    clean_broker.delete("inspect")
    relay.sweep()
    assert TaskRun.objects.get(pk=run_id).state == RunState.CANCELLED
    assert clean_broker.llen("inspect") == 0


def test_a_message_left_on_the_broker_is_refused(worker):
    """A cancelled run whose message is still on the broker is skipped by the worker: no attempt."""
    run_id = control_tasks.controlled.apply_async(("late",), countdown=2).id
    assert taskkit.cancel(run_id).cancelled
    wait_for(lambda: run_id in worker.log() and "skipped" in worker.log(), 30, 0.2)
    run = TaskRun.objects.get(pk=run_id)
    assert run.state == RunState.CANCELLED and run.attempts == 0
    assert not Effect.objects.filter(kind="late").exists()


def test_cancelling_an_ended_run_changes_nothing(worker):
    """A run that has ended is left as it is; the result says so. An unknown id raises."""
    run_id = control_tasks.controlled.delay("done").id
    assert ended(run_id).state == RunState.SUCCEEDED
    result = taskkit.cancel(run_id)
    assert not result.changed and result.state == RunState.SUCCEEDED
    assert "already ended SUCCEEDED" in result.message
    assert TaskRun.objects.get(pk=run_id).cancel_requested_at is None
    with pytest.raises(taskkit.RunNotFound, match="no run"):
        taskkit.cancel("00000000-0000-0000-0000-000000000000")
    with pytest.raises(taskkit.RunNotFound, match="not a run id"):
        taskkit.cancel("abc")


def test_a_running_run_reads_the_request_raises_and_is_not_retried(worker):
    """RUNNING: the task sees current_run().cancel_requested; it raises; the run ends CANCELLED
    after that one attempt (recorded), although its policy allows 5."""
    run_id = control_tasks.until_cancelled.delay("stop-raise").id
    wait_for(lambda: Effect.objects.filter(kind="stop-raise").exists(), 60, what="the start")
    result = taskkit.cancel(run_id, by="bob")
    assert result.requested and not result.cancelled and result.state == RunState.RUNNING
    assert not taskkit.cancel(run_id).changed  # asked once is enough
    run = ended(run_id)
    assert run.state == RunState.CANCELLED and run.attempts == 1 and run.finished_at
    attempt = TaskAttempt.objects.get(run=run)
    assert attempt.outcome == AttemptOutcome.FAILED and "stopped" in attempt.error_message
    assert Effect.objects.filter(kind="stop-raise", payload__phase="saw the cancel request")


def test_a_running_run_that_returns_succeeds_with_its_result(worker):
    """RUNNING, and the task returns once it sees the request: SUCCEEDED with its result."""
    run_id = control_tasks.until_cancelled.delay("stop-return", then="return").id
    wait_for(lambda: Effect.objects.filter(kind="stop-return").exists(), 60, what="the start")
    assert taskkit.cancel(run_id).requested
    run = ended(run_id)
    assert run.state == RunState.SUCCEEDED and run.result == "stopped early" and run.attempts == 1


def test_pause_holds_across_two_workers_and_a_restart_then_resume_runs_them(second_worker, worker):
    """Paused: two workers refuse the runs (they wait QUEUED, no attempt), the relay does not
    publish them, a restarted worker still refuses; resumed: the relay publishes, they run."""
    assert taskkit.pause_task(control_tasks.controlled.name, by="ops", reason="deploy")
    assert not taskkit.pause_task(control_tasks.controlled.name)  # paused already
    ids = [control_tasks.controlled.delay(f"held-{i}").id for i in range(6)]
    held([worker, second_worker], ids)
    assert relay.sweep().counts["published_queued"] == 0
    second_worker.stop()
    second_worker.start()
    more = control_tasks.controlled.delay("held-after-restart").id
    held([worker, second_worker], [more])
    runs = TaskRun.objects.filter(pk__in=[*ids, more])
    assert {(r.state, r.attempts) for r in runs} == {(RunState.QUEUED, 0)}
    assert not Effect.objects.filter(kind__startswith="held").exists()
    # another task is not held
    assert ended(tasks.record.delay("free").id).state == RunState.SUCCEEDED

    assert taskkit.resume_task(control_tasks.controlled.name)
    assert not taskkit.resume_task(control_tasks.controlled.name)
    counts = relay.sweep().counts
    assert counts["published_queued"] == 7
    for pk in [*ids, more]:
        run = ended(pk)
        assert run.state == RunState.SUCCEEDED and run.attempts == 1
    assert Effect.objects.filter(kind__startswith="held").count() == 7


def test_pause_a_queue(worker):
    """A paused queue holds every task routed to it; resumed, the runs go out and run."""
    assert taskkit.pause_queue("celery")
    try:
        run_id = tasks.record.delay("queue-held").id
        held([worker], [run_id])
        assert TaskRun.objects.get(pk=run_id).state == RunState.QUEUED
    finally:
        taskkit.resume_queue("celery")
    relay.sweep()
    assert ended(run_id).state == RunState.SUCCEEDED


def test_the_relay_skips_paused_runs(clean_broker):
    """Due runs of a paused task are not published; the first sweep after resume publishes them."""
    taskkit.pause_task(tasks.parked.name)
    run_id = tasks.parked.delay("lost").id
    TaskRun.objects.filter(pk=run_id).update(
        state=RunState.PENDING, queued_at=None, created_at=timezone.now() - datetime.timedelta(1)
    )
    clean_broker.delete("inspect")
    assert relay.sweep().counts["published_pending"] == 0
    assert clean_broker.llen("inspect") == 0
    taskkit.resume_task(tasks.parked.name)
    assert relay.sweep().counts["published_pending"] == 1
    assert clean_broker.llen("inspect") == 1


def test_bad_names_are_refused_with_instructions(db):
    """A pause needs a name."""
    with pytest.raises(ValueError, match="non-empty string"):
        taskkit.pause_task("")
    assert not TaskPause.objects.exists()


def test_latency_with_two_workers_and_a_relay(second_worker, worker):
    """Measured, not bounded by the machine's speed: resume → first start (a relay sweeping every
    second), and cancel → CANCELLED for a RUNNING run (its task polls the request)."""
    relay_log = open(OUTPUT / f"relay-control-{connection.vendor}.log", "ab")  # noqa: SIM115
    command = [sys.executable, "-m", "django", "taskkit_relay", "--settings", "tests.settings"]
    env = dict(os.environ, TASKKIT_TEST_DATABASE_NAME=str(connection.settings_dict["NAME"]))
    env["REDIS_URL"] = settings.REDIS_URL
    proc = subprocess.Popen(
        [*command, "--interval", "1"], cwd=ROOT, env=env, stdout=relay_log, stderr=relay_log
    )
    try:
        name = control_tasks.controlled.name
        taskkit.pause_task(name)
        ids = [control_tasks.controlled.delay(f"lat-{i}").id for i in range(10)]
        held([worker, second_worker], ids)
        # steady state: the relay has started and swept (a cold start is not what is measured)
        wait_for(lambda: RelayHeartbeat.objects.filter(sweeps__gte=2).exists(), 60, 0.1)
        resumed = timezone.now()
        taskkit.resume_task(name)
        first = wait_for(
            lambda: TaskAttempt.objects.filter(run_id__in=ids).order_by("started_at").first(),
            60,
            what="a start after resume",
        )
        for pk in ids:
            ended(pk)
        last = TaskRun.objects.filter(pk__in=ids).order_by("-finished_at").first()
        resume_to_first = (first.started_at - resumed).total_seconds()
        resume_to_all = (last.finished_at - resumed).total_seconds()

        run_id = control_tasks.until_cancelled.delay("lat-cancel").id
        wait_for(lambda: Effect.objects.filter(kind="lat-cancel").exists(), 60)
        asked = timezone.now()
        taskkit.cancel(run_id)
        run = ended(run_id)
        cancel_running = (run.finished_at - asked).total_seconds()

        waiting = control_tasks.controlled.apply_async(("lat-wait",), countdown=30).id
        t0 = time.perf_counter()
        taskkit.cancel(waiting)
        cancel_waiting = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(15)
        relay_log.close()
    figures = {
        "database": connection.vendor,
        "workers": 2,
        "relay_interval_s": 1.0,
        "resume_to_first_start_s": round(resume_to_first, 3),
        "resume_to_all_10_finished_s": round(resume_to_all, 3),
        "cancel_running_to_cancelled_s": round(cancel_running, 3),
        "cancel_waiting_call_s": round(cancel_waiting, 4),
    }
    (OUTPUT / f"control-latency-{connection.vendor}.json").write_text(json.dumps(figures, indent=2))
    print(figures)
    assert run.state == RunState.CANCELLED
    assert TaskRun.objects.get(pk=waiting).state == RunState.CANCELLED


def test_metrics_and_status_count_cancelled_runs(clean_broker):
    """CANCELLED is a state like the others in the metrics and in taskkit_status."""
    import io

    from django.core.management import call_command

    from taskkit.observe import metrics

    for _ in range(2):
        taskkit.cancel(tasks.parked.delay("m").id)
    text = metrics.render().decode()
    assert f'taskkit_runs{{state="CANCELLED",task="{tasks.parked.name}"}} 2.0' in text
    out = io.StringIO()
    call_command("taskkit_status", stdout=out)
    assert "CANCELLED" in out.getvalue()


def test_a_request_that_lands_after_the_failure_was_read_still_cancels(clean_broker):
    """The race: an attempt read "no cancel request", then one came, then the run went RETRYING;
    the worker's check right after the transition settles it CANCELLED. A later operator retry
    clears the request."""
    from taskkit.core import ledger
    from taskkit.producer import dispatch

    run_id = tasks.parked.delay("race").id
    TaskRun.objects.filter(pk=run_id).update(
        state=RunState.RETRYING, cancel_requested_at=timezone.now(), attempts=1
    )
    assert ledger.settle_cancel(run_id)
    assert not ledger.settle_cancel(run_id)  # once
    run = TaskRun.objects.get(pk=run_id)
    assert run.state == RunState.CANCELLED and run.finished_at
    assert dispatch.retry_runs(TaskRun.objects.filter(pk=run_id)) == [run.pk]
    run.refresh_from_db()
    assert run.state in (RunState.PENDING, RunState.QUEUED) and run.cancel_requested_at is None
