"""The reliable task behind each Django task: registered with Celery under the task's path.

A worker runs a run by its task name, so every Django task the backend validates is registered
as a ``ReliableTask`` named ``task.module_path`` (the name Celery would give the function). Its
body calls the Django task's function (``Task.call``: a coroutine function runs to completion
through ``async_to_sync``), first passing Django's ``TaskContext`` to ``takes_context`` tasks,
and makes the return value follow Django's JSON contract. Registration happens when Django
validates the task (at ``@task``, when its module is imported), so a worker that imports the
project's task modules knows every one; the registry is per process, never per backend instance
(Django keeps one backend instance per thread).
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from typing import Any

from django.tasks import Task, TaskContext
from django.tasks.exceptions import InvalidTask
from django.utils.json import normalize_json

from ..core.context import current_run
from ..core.db import db_alias
from ..core.exceptions import ResultNotSerializable
from ..models import TaskRun
from ..task import ReliableTask, reliable_task
from . import options, results


@dataclass(frozen=True)
class Entry:
    """A Django task known to this process, and the reliable task that runs it."""

    task: Task
    backend: str
    backend_class: type
    body: Any
    reliable: Any  # Celery's proxy of the ReliableTask


_entries: dict[str, Entry] = {}
_lock = threading.Lock()


def lookup(name: str) -> Entry | None:
    """The entry of the Django task called ``name`` (its ``module_path``), if registered here."""
    return _entries.get(name)


def register(task: Task, backend: Any) -> Entry:
    """The entry of ``task``, registering its reliable task on first sight."""
    name = task.module_path
    entry = _entries.get(name)
    if entry is not None:
        if entry.task.func is not task.func:
            raise InvalidTask(
                f"Two task functions are called {name!r} (a module imported twice under two "
                "names?); taskkit runs a task by its path, so each path must name one function."
            )
        return entry
    with _lock:
        entry = _entries.get(name)
        if entry is None:
            body = _body_for(task, backend.alias)
            reliable = reliable_task(name=name, **options.merged(backend.task_defaults, task.func))(
                body
            )
            entry = Entry(task, backend.alias, type(backend), body, reliable)
            _entries[name] = entry
    return entry


def reliable_of(entry: Entry) -> ReliableTask[Any, Any]:
    """The registered reliable task of ``entry``; ``InvalidTask`` if another Celery task took
    the name first (Celery keeps the first task registered under a name)."""
    reliable = entry.reliable._get_current_object()
    if getattr(reliable, "__wrapped__", None) is not entry.body:
        raise InvalidTask(
            f"A Celery task named {entry.task.module_path!r} is registered already, so the Django "
            "task of that path cannot be: rename one of them."
        )
    return reliable


def _body_for(task: Task, backend: str) -> Any:
    func = task.func

    def body(*args: Any, **kwargs: Any) -> Any:
        if task.takes_context:
            args = (TaskContext(task_result=current_result(task, backend)), *args)
        value = task.call(*args, **kwargs)
        try:
            return normalize_json(value)
        except (TypeError, ValueError) as exc:
            raise ResultNotSerializable(
                f"{task.module_path} returned {type(value).__name__}, which Django's task API "
                f"cannot carry ({exc}); return JSON (dict, list, str, int, float, bool, None)."
            ) from None

    signature = inspect.signature(func)
    parameters = list(signature.parameters.values())
    if task.takes_context:
        parameters = parameters[1:]  # the context is the worker's to pass, not the caller's
    body.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    body.__module__ = func.__module__
    body.__name__ = func.__name__
    body.__qualname__ = func.__qualname__
    body.__doc__ = func.__doc__
    return body


def current_result(task: Task, backend: str) -> Any:
    """The ``TaskResult`` of the run whose attempt is under way in this process (RUNNING)."""
    context = current_run()
    if context is None:
        raise RuntimeError(f"{task.module_path} takes a context, which only a worker gives it.")
    db = db_alias()
    run = TaskRun.objects.using(db).get(pk=context.run_id)
    return results.task_result(run, results.attempts_of(run, db), task, backend)


__all__ = ["Entry", "current_result", "lookup", "register", "reliable_of"]
