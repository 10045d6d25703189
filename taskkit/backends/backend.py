"""``TaskkitBackend``: Django's task API (``django.tasks``) on taskkit's run ledger.

``TASKS = {"default": {"BACKEND": "taskkit.backends.TaskkitBackend", "QUEUES": [...],
"OPTIONS": {...}}}``. ``.enqueue()`` writes a run in the caller's transaction and publishes it
when that commits (a rollback leaves nothing), through the same dispatch as ``.delay()``: from
there the run is claimed, leased, retried by its policy, recovered by the relay and shown in the
admin like any other. ``get_result()`` reads the ledger (``taskkit.backends.results``).

- ``QUEUES``: the Celery queues Django's ``queue_name`` may name (the name is used as it is:
  workers consume it with ``-Q``). Django's default queue is called ``default``.
- ``OPTIONS``: the default taskkit options of every task (``taskkit.backends.options``:
  ``stop``, ``wait``, ``retry``, ``atomic``, ``time_limit``, ``soft_time_limit``); a task
  overrides them with ``@task_options``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import uuid
from typing import Any

from django.core import checks
from django.db import transaction
from django.tasks import DEFAULT_TASK_QUEUE_NAME, Task, TaskResult
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils.json import normalize_json

from ..core.db import db_alias
from ..core.exceptions import ConfigurationError
from ..models import TaskRun
from ..producer.dispatch import dispatch
from . import bridge, options, priority, registry, results

#: The key of a run's options under which the backend keeps what Django's API needs back.
META = "django"


class TaskkitBackend(BaseTaskBackend):
    """Django's task backend on taskkit: every enqueued task is a ledger run."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.problems: list[checks.CheckMessage] = []
        self.task_defaults: dict[str, Any] = {}
        queues = params.get("QUEUES", [DEFAULT_TASK_QUEUE_NAME])
        if not isinstance(queues, list | tuple | set) or not all(
            isinstance(q, str) and q for q in queues
        ):
            self.problems.append(
                checks.Error(
                    f"TASKS[{alias!r}]['QUEUES'] = {queues!r} is not a list of queue names.",
                    hint='List the Celery queues Django tasks may use, e.g. ["default"].',
                    id="taskkit.E103",
                )
            )
        try:
            self.task_defaults = options.check(self.options, f"TASKS[{alias!r}]['OPTIONS']")
        except ConfigurationError as exc:
            self.problems.append(
                checks.Error(
                    str(exc),
                    hint="OPTIONS takes @reliable_task's stop, wait, retry, atomic, "
                    "time_limit and soft_time_limit.",
                    id="taskkit.E102",
                )
            )
        bridge.connect()

    # -- Django's backend API ---------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        return list(self.problems)

    def validate_task(self, task: Task) -> None:
        """Django's checks, then taskkit's: a priority the broker cannot honour is refused.
        A valid task's reliable task is registered (``taskkit.backends.registry``)."""
        if self.problems:
            raise InvalidTaskBackend(self.problems[0].msg)
        super().validate_task(task)
        if task.priority != 0:
            try:
                priority.broker_priority(task.priority, _app())
            except ValueError as exc:
                raise InvalidTask(f"priority={task.priority}: {exc}") from None
        registry.register(task, self)

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Write the run in the caller's transaction; publish it when that commits."""
        self.validate_task(task)
        args, kwargs = _json_round_trip(args), _json_round_trip(kwargs)
        entry = registry.register(task, self)
        reliable = registry.reliable_of(entry)
        run_options: dict[str, Any] = {
            "queue": task.queue_name,
        }
        broker_priority = priority.broker_priority(task.priority, reliable.app)
        if broker_priority is not None:
            run_options["priority"] = broker_priority
        if task.run_after is not None:
            run_options["eta"] = task.run_after
        db = db_alias()
        # The result is the run as enqueued, read before it is published: outside a transaction
        # on_commit would publish inside dispatch, and a fast worker could be running it by the
        # time it is read. Inside the caller's transaction the publish waits for its commit.
        outside = not transaction.get_connection(db).in_atomic_block
        with transaction.atomic(using=db) if outside else contextlib.nullcontext():
            handle = dispatch(
                reliable.spec,
                tuple(args),
                kwargs,
                run_options,
                annotate={META: _meta(task, self.alias)},
            )
            run = TaskRun.objects.using(db).get(pk=handle.id)
        result = results.task_result(run, [], task, self.alias)
        sender = type(self)
        transaction.on_commit(lambda: bridge.send(task_enqueued, sender, result), using=db)
        return result

    def get_result(self, result_id: Any) -> TaskResult:
        """The run ``result_id`` as Django's ``TaskResult``, read from the ledger."""
        try:
            run_id = uuid.UUID(str(result_id))
        except ValueError:
            raise TaskResultDoesNotExist(result_id) from None
        db = db_alias()
        run = TaskRun.objects.using(db).filter(pk=run_id).first()
        if run is None or META not in (run.options or {}):
            raise TaskResultDoesNotExist(result_id)
        return results.task_result(
            run, results.attempts_of(run, db), task_of(run), run.options[META]["backend"]
        )


def task_of(run: TaskRun) -> Task:
    """The Django task of a run enqueued through the backend, with the run's own priority,
    queue and ``run_after`` (as ``Task.using`` gave them)."""
    from django.utils.module_loading import import_string

    entry = registry.lookup(run.task_name)
    if entry is not None:
        task = entry.task
    else:
        found = import_string(run.task_name)  # the module defines it: registers it too
        if not isinstance(found, Task):
            raise TaskResultDoesNotExist(f"{run.pk}: {run.task_name} is not a Django task")
        task = found
    meta = run.options[META]
    try:
        return task.using(
            priority=meta.get("priority", 0),
            queue_name=run.queue or None,
            run_after=results.run_after_of(run),
            backend=meta.get("backend"),
        )
    except InvalidTask:  # the settings changed since (a queue or backend removed)
        return task


def _meta(task: Task, alias: str) -> dict[str, Any]:
    return {
        "backend": alias,
        "priority": task.priority,
        "run_after": _iso(task.run_after),
    }


def _iso(value: datetime.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _json_round_trip(value: Any) -> Any:
    """Django's contract for arguments: ``normalize_json`` (its ``TypeError`` / ``ValueError``
    for what JSON cannot carry), then what a JSON round trip gives (``{1: x}`` → ``{"1": x}``)."""
    return json.loads(json.dumps(normalize_json(value)))


def _app() -> Any:
    import celery

    return celery.current_app


__all__ = ["META", "TaskkitBackend", "task_of"]
