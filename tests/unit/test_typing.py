"""The typed face of ``@reliable_task`` (taskkit/task.py) agrees with the runtime.

mypy checks the types themselves (tests/typecheck/check_tasks.py, in ``make lint``); these tests
keep the option TypedDicts that type checkers read equal to the options the runtime accepts, and
show that making ``ReliableTask`` generic changed nothing Celery relies on.
"""

from __future__ import annotations

import typing

import celery

from taskkit.core.spec import PUBLISH_OPTIONS
from taskkit.producer.dispatch import _PER_RUN_OPTIONS, SUPPORTED_OPTIONS
from taskkit.task import (
    CELERY_OPTIONS,
    ApplyOptions,
    BatchOptions,
    CeleryTaskOptions,
    ReliableTask,
    reliable_task,
)


def test_decorator_options_typed_are_the_celery_options_passed_through() -> None:
    assert set(CeleryTaskOptions.__annotations__) == CELERY_OPTIONS


def test_apply_async_options_typed_are_the_supported_options() -> None:
    # task_id is a named parameter of apply_async, the rest arrive as **options
    assert set(ApplyOptions.__annotations__) | {"task_id"} == SUPPORTED_OPTIONS
    assert set(PUBLISH_OPTIONS) <= set(BatchOptions.__annotations__)


def test_delay_many_options_typed_are_the_supported_options_but_per_run_ones() -> None:
    assert set(BatchOptions.__annotations__) == SUPPORTED_OPTIONS - set(_PER_RUN_OPTIONS)


def _mul(a: int, b: int = 2) -> int:
    return a * b


def test_a_typed_task_is_still_a_celery_task_built_by_shared_task() -> None:
    task = reliable_task(name="tests.unit.test_typing.mul")(_mul)
    assert isinstance(task, ReliableTask)
    assert isinstance(task, celery.Task)
    assert task(3) == 6  # the direct call runs the function in-process
    assert task.run(3, b=3) == 9
    assert task.__class__.__mro__[1:3] == (ReliableTask, celery.Task)  # shared_task: a proxy
    # subscripting, as annotations do when evaluated (e.g. by typing.get_type_hints)
    alias = ReliableTask[[int, int], int]
    assert typing.get_origin(alias) is ReliableTask
