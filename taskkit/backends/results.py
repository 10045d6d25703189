"""A run of the ledger as Django's ``TaskResult``: the status mapping and the fields.

Django has four statuses; the ledger has more states. ``STATUS`` maps every ``RunState``
(``tests/unit/test_django_backend.py`` fails when a state is added without a mapping):

============  ==========  ================================================================
Ledger        Django      Why
============  ==========  ================================================================
PENDING       READY       written in the caller's transaction, its message not yet sent
QUEUED        READY       its message is on the broker
RUNNING       RUNNING     a worker holds its claim
RETRYING      READY       an attempt failed; the next is due at ``not_before``
SUCCEEDED     SUCCESSFUL
FAILED        FAILED      gave up (the last error is the last of ``errors``)
DISCARDED     FAILED      a missing object (``on_missing``) or an operator discarded it
CANCELLED     FAILED      cancelled (``taskkit.cancel``, the run page); Django has no such status
============  ==========  ================================================================

The fields come from the run and its attempts: ``enqueued_at`` the run's creation,
``started_at`` its first attempt's start, ``last_attempted_at`` its latest attempt's start,
``finished_at`` when it ended; ``worker_ids`` one ``host:pid`` per attempt (the running one
included, so ``attempts`` is the attempt number while it runs, as Django's ``TaskContext``
expects); ``errors`` one ``TaskError`` (class path, traceback) per failed attempt.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.tasks import Task, TaskResult, TaskResultStatus
from django.tasks.base import TaskError

from ..models import AttemptOutcome, RunState, TaskAttempt, TaskRun

#: Django's status of a run in each ledger state.
STATUS: dict[str, TaskResultStatus] = {
    RunState.PENDING: TaskResultStatus.READY,
    RunState.QUEUED: TaskResultStatus.READY,
    RunState.RUNNING: TaskResultStatus.RUNNING,
    RunState.RETRYING: TaskResultStatus.READY,
    RunState.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    RunState.FAILED: TaskResultStatus.FAILED,
    RunState.DISCARDED: TaskResultStatus.FAILED,
    RunState.CANCELLED: TaskResultStatus.FAILED,
}


def task_result(
    run: TaskRun, attempts: Iterable[TaskAttempt], task: Task, backend: str
) -> TaskResult:
    """``run`` (with its ``attempts``, in order) as Django's ``TaskResult`` of ``task``."""
    done = list(attempts)
    worker_ids = [attempt.worker for attempt in done]
    if run.state == RunState.RUNNING and (not done or done[-1].number < run.attempts):
        worker_ids.append(run.claimed_by)  # the attempt under way has no row yet
    result: TaskResult = TaskResult(
        task=task,
        id=str(run.pk),
        status=STATUS[run.state],
        enqueued_at=run.created_at,
        started_at=run.first_started_at,
        finished_at=run.finished_at if run.is_terminal else None,
        last_attempted_at=run.started_at,
        args=list(run.args),
        kwargs=dict(run.kwargs),
        backend=backend,
        errors=[
            TaskError(exception_class_path=attempt.error_type, traceback=attempt.traceback)
            for attempt in done
            if attempt.outcome != AttemptOutcome.SUCCEEDED
        ],
        worker_ids=worker_ids,
    )
    if run.state == RunState.SUCCEEDED:
        object.__setattr__(result, "_return_value", run.result)  # Django's backends do the same
    return result


def attempts_of(run: TaskRun, db: str) -> list[TaskAttempt]:
    """The run's attempts, in order (only the fields ``task_result`` reads)."""
    return list(
        TaskAttempt.objects.using(db)
        .filter(run_id=run.pk)
        .order_by("number")
        .only("number", "outcome", "worker", "error_type", "traceback")
    )


def run_after_of(run: TaskRun) -> Any:
    """The ``run_after`` the run was enqueued with (kept in its options by the backend)."""
    from django.utils.dateparse import parse_datetime

    value = (run.options or {}).get("django", {}).get("run_after")
    return parse_datetime(value) if value else None


__all__ = ["STATUS", "attempts_of", "run_after_of", "task_result"]
