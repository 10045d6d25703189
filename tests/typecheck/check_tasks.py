"""What a type checker sees of ``@reliable_task``: checked by mypy in ``make lint``, never run.

Positive cases are ``assert_type(...)`` calls, which fail if a type is wrong or has decayed to
``Any`` (celery ships no type information, so ``celery.Task`` is ``Any`` to mypy: these prove the
types flow through ``ReliableTask`` regardless). Expected errors carry a
``# type: ignore[<code>]`` with the exact error code; ``warn_unused_ignores`` (pyproject) makes an
expected error that stops being an error fail lint, and a different error code fails it too.

Importing this module is harmless: it declares tasks (Celery registers shared tasks lazily, as for
any tasks module) and defines functions that nothing calls; nothing is dispatched. pytest does
not collect it (its name does not start with ``test_``).
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from typing import Any, assert_type

from taskkit import ReliableTask, reliable_task
from taskkit.models import TaskRun
from taskkit.producer.result import RunResult
from taskkit.testing import capture

# -- Declarations: the bare decorator and the decorator with options both keep the signature.


@reliable_task
def add(x: int, y: int, /) -> int:
    return x + y


@reliable_task(queue="typing", time_limit=30, rate_limit="10/s", sensitive="card")
def charge(order_id: int, card: str, *, amount: float = 0.0, note: str | None = None) -> str:
    return f"{order_id}:{amount}"


@reliable_task
def variadic(kind: str, *values: int, **labels: str) -> None:
    return None


@reliable_task(idempotency_key=lambda ref: f"ref:{ref}")
def by_ref(ref: uuid.UUID) -> dict[str, int]:
    return {}


SHARED: dict[str, Any] = {"wait": 0.3, "time_limit": 60}  # options shared by several tasks


@reliable_task(stop=3, **SHARED)
def shared(kind: str) -> int:
    return 0


@reliable_task
def untyped(a, b=1):
    return a


def check_declarations() -> None:
    assert_type(add, ReliableTask[[int, int], int])
    assert_type(add.run, Callable[[int, int], int])
    task: ReliableTask[Any, Any] = charge  # any task is a ReliableTask
    assert isinstance(task, ReliableTask)


# -- .delay(), the direct call and .run: typed from the function.


def check_calls() -> None:
    assert_type(add.delay(1, 2), RunResult)
    assert_type(add(1, 2), int)
    assert_type(add.run(1, 2), int)
    assert_type(charge.delay(1, "tok", amount=9.5), RunResult)
    assert_type(charge.delay(order_id=1, card="tok", note=None), RunResult)
    assert_type(charge(1, "tok"), str)
    assert_type(variadic.delay("k", 1, 2, 3, colour="red"), RunResult)
    assert_type(variadic("k"), None)
    assert_type(by_ref(uuid.uuid4()), dict[str, int])
    assert_type(shared.delay("k"), RunResult)
    assert_type(untyped.delay(1), RunResult)  # an unannotated function: its arity still counts
    as_function: Callable[[int, int], int] = add  # a task is the function, when called
    assert_type(as_function(1, 2), int)


def check_wrong_calls() -> None:
    add.delay("1", 2)  # type: ignore[arg-type]
    add.delay(1)  # type: ignore[call-arg]
    add.delay(1, 2, 3)  # type: ignore[call-arg]
    add.delay(x=1, y=2)  # type: ignore[call-arg]
    add(1, "2")  # type: ignore[arg-type]
    add.run(1, None)  # type: ignore[arg-type]
    charge.delay(1)  # type: ignore[call-arg]
    charge.delay(1, "tok", amount="9.50")  # type: ignore[arg-type]
    charge.delay(1, "tok", amont=9.5)  # type: ignore[call-arg]
    charge.delay(1, "tok", 9.5)  # type: ignore[call-arg]
    variadic.delay("k", "not an int")  # type: ignore[arg-type]
    variadic.delay("k", colour=1)  # type: ignore[arg-type]
    by_ref.delay("not a uuid")  # type: ignore[arg-type]
    shared.delay(1)  # type: ignore[arg-type]
    untyped.delay()  # type: ignore[call-arg]
    untyped.delay(1, 2, 3)  # type: ignore[call-arg]
    text: str = add(1, 2)  # type: ignore[assignment]
    assert text


# -- apply_async and delay_many: arguments untyped (a tuple and a dict), options typed.


def check_apply_async() -> None:
    eta = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    assert_type(add.apply_async((1, 2)), RunResult)
    assert_type(add.apply_async([1], {"y": 2}, countdown=5, queue="q", priority=3), RunResult)
    assert_type(
        charge.apply_async(
            (1, "tok"), eta=eta, idempotency_key="k", task_id=uuid.uuid4(), routing_key="r"
        ),
        RunResult,
    )
    add.apply_async(("1", "2"))  # not checked against P: a tuple has no ParamSpec form
    add.apply_async((1, 2), countdown="soon")  # type: ignore[arg-type]
    add.apply_async((1, 2), eta="2030-01-01")  # type: ignore[arg-type]
    add.apply_async((1, 2), expires=60)  # type: ignore[call-arg]
    add.apply_async((1, 2), headers={})  # type: ignore[call-arg]


def check_delay_many() -> None:
    assert_type(add.delay_many([(1, 2), ((1,), {"y": 2})]), list[RunResult])
    assert_type(add.delay_many([(1, 2)], countdown=1.5, queue="bulk"), list[RunResult])
    add.delay_many([(1, 2)], idempotency_key="k")  # type: ignore[call-arg]
    add.delay_many([(1, 2)], task_id="x")  # type: ignore[call-arg]


# -- Decorator options: a typo or a replaced Celery option is an error too.


def check_decorator_options() -> None:
    reliable_task(queu="typing")  # type: ignore[call-overload]
    reliable_task(max_retries=3)  # type: ignore[call-overload]
    reliable_task(time_limit="30s")  # type: ignore[call-overload]


# -- The testing helpers take any task.


def check_testing() -> None:
    with capture() as captured:
        add.delay(1, 2)
    assert_type(captured.runs_of(add), list[TaskRun])
    captured.assert_dispatched(charge, (1, "tok"))
