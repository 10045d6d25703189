"""The ``TaskResult`` row of a reliable task: written by taskkit with the outcome, as Celery's
django-db backend writes it for a plain Celery task (field by field), and read back by
``AsyncResult``. Each test runs a reliable task and a plain Celery task doing the same thing
through the same real worker and compares their rows."""

import json

import pytest
from celery.result import AsyncResult
from django_celery_results.models import TaskResult

from taskkit.models import RunState, TaskRun
from tests.celery_app import app
from tests.conftest import wait_for
from tests.testapp import tasks

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

#: Fields that must be equal between the two rows (the rest: ids, names, dates, tracebacks).
SAME = (
    "status",
    "result",
    "content_type",
    "content_encoding",
    "meta",
    "task_args",
    "task_kwargs",
    "worker",
    "periodic_task_name",
    "date_started",
)


def row(task_id: str, status: str) -> TaskResult:
    return wait_for(
        lambda: TaskResult.objects.filter(task_id=task_id, status=status).first(),
        what=f"a {status} TaskResult for {task_id}",
    )


def assert_same_row(ours: TaskResult, theirs: TaskResult, name: str, skip=()) -> None:
    for field in set(SAME) - set(skip):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert ours.task_name == name
    assert ours.date_created is not None and ours.date_done >= ours.date_created


def test_a_success_row_is_the_one_django_celery_results_writes(worker):
    ours = tasks.reliable_ok.delay()
    theirs = tasks.plain_ok.delay()
    mine, plain = row(ours.id, "SUCCESS"), row(theirs.id, "SUCCESS")
    assert_same_row(mine, plain, tasks.reliable_ok.name)
    assert json.loads(mine.result) == tasks.OUTCOME_VALUE
    assert mine.traceback is None and mine.content_type == "application/json"
    assert TaskResult.objects.filter(task_id=ours.id).count() == 1
    # read back through Celery, by the handle .delay() returned and by a bare AsyncResult
    assert ours.get(timeout=10) == tasks.OUTCOME_VALUE
    assert AsyncResult(ours.id, app=app).state == "SUCCESS"
    assert AsyncResult(ours.id, app=app).result == tasks.OUTCOME_VALUE
    assert TaskRun.objects.get(pk=ours.id).state == RunState.SUCCEEDED


def test_a_failure_row_is_the_one_django_celery_results_writes(worker):
    ours = tasks.reliable_fails.delay()
    theirs = tasks.plain_fails.delay()
    mine, plain = row(ours.id, "FAILURE"), row(theirs.id, "FAILURE")
    assert_same_row(mine, plain, tasks.reliable_fails.name)
    assert json.loads(mine.result) == {
        "exc_type": "ValueError",
        "exc_message": ["it broke", 7],
        "exc_module": "builtins",
    }
    # the tracebacks differ in their frames (Celery's goes through its tracer), not in the error
    assert mine.traceback.strip().splitlines()[-1] == plain.traceback.strip().splitlines()[-1]
    assert "in reliable_fails" in mine.traceback
    result = AsyncResult(ours.id, app=app)
    assert result.state == "FAILURE"
    with pytest.raises(ValueError, match="it broke"):
        result.get(timeout=10)
    assert TaskRun.objects.get(pk=ours.id).state == RunState.FAILED
    assert TaskResult.objects.filter(task_id=ours.id).count() == 1


def test_a_retry_row_is_the_one_django_celery_results_writes(worker):
    ours = tasks.reliable_retries_later.delay()
    theirs = tasks.plain_retries_later.delay()
    mine, plain = row(ours.id, "RETRY"), row(theirs.id, "RETRY")
    # Celery's Task.retry() sends the next message from inside the task, so it is a child in
    # meta; taskkit schedules the next attempt after recording this one (here: the relay will)
    assert_same_row(mine, plain, tasks.reliable_retries_later.name, skip=("meta",))
    assert json.loads(mine.meta) == {"children": []}
    # Celery's RETRY traceback is the Retry's; taskkit's is the error's, which says more
    assert mine.traceback.strip().splitlines()[-1] == "ValueError: ('it broke', 7)"
    assert AsyncResult(ours.id, app=app).state == "RETRY"
    assert TaskRun.objects.get(pk=ours.id).state == RunState.RETRYING
