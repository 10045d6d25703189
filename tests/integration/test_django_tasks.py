"""Django's task API (``django.tasks``) on taskkit, run by a real worker: a task enqueued with
``.enqueue()`` is a ledger run, written in the caller's transaction, retried by its policy, read
back with ``get_result()``; Django's signals fire with the backend as sender."""

from __future__ import annotations

import asyncio
import datetime
import json
import os

import django
import pytest
from django.db import transaction
from django.utils import timezone

from taskkit.models import RunState, TaskRun
from tests.conftest import Worker, wait_for
from tests.testapp.models import Effect

pytestmark = [
    pytest.mark.skipif(
        django.VERSION < (6, 0),
        reason="Django's task API (django.tasks) needs Django >= 6.0; "
        f"this is {django.get_version()}",
    ),
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

if django.VERSION >= (6, 0):
    from django.tasks import TaskResultStatus as Status
    from django.tasks.exceptions import TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued

    from taskkit.backends import TaskkitBackend
    from tests.testapp import django_tasks

QUEUE_KEYS = ("default", "celery", "parked")


@pytest.fixture(scope="module")
def dj_worker(django_db_setup, django_db_blocker):
    """A worker consuming Django's default queue ("default") and Celery's ("celery")."""
    worker = Worker("dj", queues="celery,default").start()
    yield worker
    worker.stop()


@pytest.fixture
def broker(redis_client):
    """The test Redis with the backend's queues (and their priority lists) emptied."""
    for key in redis_client.scan_iter(match="*"):
        if key.decode(errors="replace").split("\x06\x16")[0] in (*QUEUE_KEYS, "unacked"):
            redis_client.delete(key)
    redis_client.delete("unacked_index")
    return redis_client


@pytest.fixture
def worker(dj_worker, transactional_db, broker):
    if not dj_worker.alive:
        dj_worker.stop()
        dj_worker.start()
    return dj_worker


def finished(result, timeout=45.0):
    """Refresh ``result`` until it is SUCCESSFUL or FAILED."""

    def done():
        result.refresh()
        return result.is_finished

    wait_for(done, timeout, what=f"{result.task.name} {result.id} to finish")
    return result


def test_enqueue_in_a_rolled_back_transaction_leaves_nothing(broker):
    """A rollback leaves no run, publishes no message and sends no task_enqueued."""
    seen = []
    task_enqueued.connect(lambda sender, task_result, **kw: seen.append(task_result.id))
    with pytest.raises(RuntimeError), transaction.atomic():
        result = django_tasks.add.enqueue(1, 2)
        assert TaskRun.objects.filter(pk=result.id).exists()  # written in the transaction
        raise RuntimeError("roll back")
    assert not TaskRun.objects.filter(pk=result.id).exists()
    assert all(broker.llen(key) == 0 for key in broker.scan_iter(match="default*"))
    assert seen == []


def test_enqueue_publishes_on_commit_and_sends_task_enqueued(broker):
    """Inside a transaction the message waits for the commit; task_enqueued is sent then, with
    the backend's class as sender and the READY result."""
    seen = []

    def receiver(sender, task_result, **kwargs):
        seen.append((sender, task_result.id, task_result.status))

    task_enqueued.connect(receiver, weak=False)
    try:
        with transaction.atomic():
            result = django_tasks.add.enqueue(1, 2)
            assert broker.llen("default\x06\x163") == 0 and seen == []
        assert broker.llen("default\x06\x163") == 1  # priority 0 → Redis 5 → step 3
        assert seen == [(TaskkitBackend, result.id, Status.READY)]
    finally:
        task_enqueued.disconnect(receiver)


def test_a_task_runs_to_success_and_get_result_reads_every_field(worker):
    """enqueue → READY; the worker runs it; get_result and refresh read the ledger's fields."""
    before = timezone.now()
    result = django_tasks.add.enqueue(2, 3)
    assert result.status == Status.READY and result.backend == "default"
    assert (result.args, result.kwargs, result.errors, result.worker_ids) == ([2, 3], {}, [], [])
    assert before <= result.enqueued_at <= timezone.now()
    assert result.started_at is result.finished_at is result.last_attempted_at is None
    with pytest.raises(ValueError, match="not finished"):
        _ = result.return_value
    finished(result)
    run = TaskRun.objects.get(pk=result.id)
    assert run.task_name == "tests.testapp.django_tasks.add"  # the admin's and metrics' name
    fetched = django_tasks.add.get_result(result.id)
    for got in (result, fetched):
        assert got.status == Status.SUCCESSFUL and got.return_value == 5
        assert got.enqueued_at == run.created_at
        assert got.started_at == run.first_started_at == got.last_attempted_at == run.started_at
        assert got.finished_at == run.finished_at and got.finished_at >= got.started_at
        assert got.worker_ids == [run.claimed_by] and got.worker_ids[0].startswith("dj@")
        assert got.attempts == 1 and got.errors == []
    assert fetched.task.func is django_tasks.add.func and fetched.args == [2, 3]
    assert asyncio.run(django_tasks.add.aget_result(result.id)).return_value == 5


def test_get_result_of_an_unknown_id_raises_djangos_error(transactional_db):
    """Unknown ids, ids that are not run ids, and runs not enqueued through Django's API."""
    from taskkit.backends import TaskkitBackend  # noqa: F401 (the configured backend)
    from tests.testapp import tasks

    backend = django_tasks.add.get_backend()
    plain = tasks.parked.delay("not a django task").id
    for unknown in ("00000000-0000-0000-0000-000000000000", "not-a-uuid", plain):
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(unknown)


def test_retries_then_succeeds_with_each_error_recorded(worker):
    """Two failed attempts then a success: errors (class path + traceback) per failed attempt,
    one worker id per attempt, the context's attempt number."""
    result = django_tasks.flaky.enqueue("dj-flaky", 2)
    finished(result)
    assert result.status == Status.SUCCESSFUL
    assert result.return_value == {"attempt": 3, "id": result.id}
    assert result.attempts == 3 and len(result.worker_ids) == 3
    assert [e.exception_class_path for e in result.errors] == ["builtins.ConnectionError"] * 2
    assert "ConnectionError: failure 1 of 2" in result.errors[0].traceback
    assert "ConnectionError: failure 2 of 2" in result.errors[1].traceback
    assert result.errors[0].exception_class is ConnectionError
    assert sorted(Effect.objects.filter(kind="dj-flaky").values_list("attempt", flat=True)) == [
        1,
        2,
        3,
    ]


def test_gives_up_failed_after_the_policy_stops(worker):
    """@task_options(stop=2): FAILED after 2 attempts, both errors recorded."""
    result = finished(django_tasks.always_fails.enqueue("dj-fails"))
    assert result.status == Status.FAILED and result.attempts == 2
    assert [e.exception_class_path for e in result.errors] == ["builtins.ValueError"] * 2
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    assert TaskRun.objects.get(pk=result.id).state == RunState.FAILED


def test_run_after_is_held_in_the_ledger(worker):
    """A deferred task waits for run_after (the run's not_before), then runs."""
    run_after = timezone.now() + datetime.timedelta(seconds=3)
    result = django_tasks.add.using(run_after=run_after).enqueue(1, 1)
    run = TaskRun.objects.get(pk=result.id)
    assert run.not_before == run_after
    assert result.task.run_after == run_after
    finished(result)
    assert result.started_at >= run_after
    assert django_tasks.add.get_result(result.id).task.run_after == run_after


def test_async_task_runs_to_completion(worker):
    """An async def task is awaited to completion in the worker."""
    result = finished(django_tasks.add_async.enqueue(20, 22))
    assert result.status == Status.SUCCESSFUL and result.return_value == {"sum": 42}


def test_aenqueue_and_arefresh(worker):
    """The async API: aenqueue writes and publishes the run; arefresh reads it back."""

    async def scenario():
        result = await django_tasks.add.aenqueue(4, 5)
        assert result.status == Status.READY
        for _ in range(600):
            await result.arefresh()
            if result.is_finished:
                return result
            await asyncio.sleep(0.05)
        raise AssertionError("the run did not finish in 30 s")

    result = asyncio.run(scenario())
    assert result.status == Status.SUCCESSFUL and result.return_value == 9


def test_takes_context_gets_the_running_result(worker):
    """The context's TaskResult is the run's, RUNNING, with this attempt's worker."""
    result = finished(django_tasks.describe_context.enqueue())
    seen = result.return_value
    assert seen["id"] == result.id and seen["attempt"] == 1
    assert seen["status"] == "RUNNING" and seen["started"]
    assert seen["worker_ids"] == result.worker_ids


def test_status_is_running_while_an_attempt_runs(worker):
    """get_result mid-attempt: RUNNING, started, one worker id, not finished."""
    result = django_tasks.sleeps.enqueue(2.0)
    wait_for(
        lambda: django_tasks.sleeps.get_result(result.id).status == Status.RUNNING,
        30,
        what="the attempt to start",
    )
    running = django_tasks.sleeps.get_result(result.id)
    assert running.started_at and running.finished_at is None and running.attempts == 1
    assert finished(result).return_value == 1


def test_djangos_signals_fire_in_the_worker_with_the_backend_as_sender(worker):
    """task_started per attempt (RUNNING), task_finished once (the final status)."""
    result = finished(django_tasks.flaky.enqueue("dj-signals", 1))
    effects = wait_for(
        lambda: list(
            Effect.objects.filter(run_id=result.id, kind__startswith="signal:").order_by("id")
        )
        if Effect.objects.filter(run_id=result.id, kind="signal:task_finished").exists()
        else None,
        20,
        what="task_finished",
    )
    seen = [(e.kind, e.attempt, e.payload["status"], e.payload["sender"]) for e in effects]
    assert seen == [
        ("signal:task_started", 1, "RUNNING", "TaskkitBackend"),
        ("signal:task_started", 2, "RUNNING", "TaskkitBackend"),
        ("signal:task_finished", 2, "SUCCESSFUL", "TaskkitBackend"),
    ]


def test_arguments_follow_djangos_json_contract(broker):
    """What Django's normaliser refuses is refused at enqueue with its error, nothing written;
    what it accepts is stored as a JSON round trip gives it back."""
    count = TaskRun.objects.count()
    with pytest.raises(TypeError, match="Unsupported type"):
        django_tasks.add.enqueue(object(), 1)
    with pytest.raises(TypeError, match="Unsupported type"):
        django_tasks.add.enqueue({1, 2}, 1)
    assert TaskRun.objects.count() == count
    result = django_tasks.add.enqueue((1, 2), {1: b"x"})
    assert result.args == [[1, 2], {"1": "x"}]
    assert TaskRun.objects.get(pk=result.id).args == [[1, 2], {"1": "x"}]


def test_priority_lands_on_the_mapped_redis_list_and_runs_first(broker, transactional_db):
    """Priorities -100, 0 and 100 go to kombu's lists for 9, 5 (step 3) and 0; a worker takes
    the highest Django priority first."""
    parked = django_tasks.record.using(queue_name="parked")
    low = [parked.using(priority=-100).enqueue(f"low-{i}") for i in range(2)]
    middle = parked.enqueue("middle")
    high = parked.using(priority=100).enqueue("high")
    assert broker.llen("parked") == 1  # step 0
    assert broker.llen("parked\x06\x163") == 1
    assert broker.llen("parked\x06\x169") == 2
    assert "priority" not in TaskRun.objects.get(pk=high.id).options  # 0: Redis's default
    assert TaskRun.objects.get(pk=middle.id).options["priority"] == 5
    assert TaskRun.objects.get(pk=low[0].id).options["django"]["priority"] == -100
    worker = Worker("dj-prio", concurrency=1, queues="parked").start()
    try:
        for result in (high, middle, *low):
            finished(result)
    finally:
        worker.stop()
    order = [
        r.id for r in sorted((high, middle, *low), key=lambda r: r.started_at)  # type: ignore
    ]
    assert order[:2] == [high.id, middle.id]


def test_the_run_shows_in_the_admin_and_metrics_like_any_other(worker, admin_client, settings):
    """The admin shows the run and the metrics count it, under the task's path."""
    result = finished(django_tasks.record.enqueue("admin-visible"))
    page = admin_client.get(f"/admin/taskkit/taskrun/{result.id}/change/")
    assert page.status_code == 200
    assert b"tests.testapp.django_tasks.record" in page.content
    settings.TASKKIT_METRICS_TOKEN = "dj-token"
    metrics = admin_client.get("/metrics", HTTP_AUTHORIZATION="Bearer dj-token")
    assert metrics.status_code == 200
    assert (
        'taskkit_runs{state="SUCCEEDED",task="tests.testapp.django_tasks.record"}'
        in metrics.content.decode()
    )


def test_a_runs_life_through_djangos_api(worker, capsys):
    """One run's status and fields at each step (printed for the report)."""
    lines = []

    def note(step, r):
        lines.append(
            json.dumps(
                {
                    "step": step,
                    "status": str(r.status),
                    "attempts": r.attempts,
                    "errors": [e.exception_class_path for e in r.errors],
                    "enqueued_at": str(r.enqueued_at),
                    "started_at": str(r.started_at),
                    "last_attempted_at": str(r.last_attempted_at),
                    "finished_at": str(r.finished_at),
                    "worker_ids": r.worker_ids,
                    "return_value": r.return_value if r.status == Status.SUCCESSFUL else None,
                }
            )
        )

    task = django_tasks.slow_flaky
    with transaction.atomic():
        result = task.enqueue(1.0, 1)
        note("enqueued, before commit", result)
    note("committed", task.get_result(result.id))
    for state, step in (
        (RunState.RUNNING, "attempt 1 running"),
        (RunState.RETRYING, "attempt 1 failed, retry due"),
    ):
        wait_for(lambda s=state: TaskRun.objects.filter(pk=result.id, state=s).exists(), 30)
        note(step, task.get_result(result.id))
    wait_for(
        lambda: TaskRun.objects.filter(pk=result.id, state=RunState.RUNNING, attempts=2).exists(),
        30,
    )
    note("attempt 2 running", task.get_result(result.id))
    finished(result)
    note("finished", result)
    with capsys.disabled():
        print(f"\nlife of run {result.id} (pid {os.getpid()}):")
        for line in lines:
            print(line)
    assert result.status == Status.SUCCESSFUL and result.attempts == 2
