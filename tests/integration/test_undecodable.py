"""Runs a worker can never run, and failures whose text no column takes as it is (inv. 11, 12).

A run whose stored call does not decode (a removed model, an unknown tag, a bad value, a pk of
the wrong type, nesting past what the worker can read) or no longer fits the function's signature
records its attempt and ends FAILED at once, naming the argument and the cause. A TypeError raised
inside the body stays an ordinary failure. Exception texts with lone surrogates, NUL bytes,
megabytes, or a ``__str__`` that raises are recorded sanitised and capped, by a real worker.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from taskkit.core import ledger
from taskkit.core.serialization import TAG
from taskkit.models import AttemptOutcome, RunState, TaskAttempt, TaskRun
from tests.integration.test_execution import finished
from tests.testapp import tasks
from tests.testapp.models import Effect, Order

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


def dispatch_then_store(task: Any, args: tuple, stored_args: Any, stored_kwargs: Any) -> str:
    """Dispatch ``task(*args)``, then replace the stored call before the message is published
    (as rows written by an older release look to the new worker)."""
    with transaction.atomic():
        run_id = task.delay(*args).id  # published when the transaction commits
        TaskRun.objects.filter(pk=run_id).update(args=stored_args, kwargs=stored_kwargs)
    return run_id


UNDECODABLE = [
    # (stored args, stored kwargs, words the error must contain)
    pytest.param(
        [{TAG: "model", "model": "shop.Order", "pk": 1}],
        {},
        ["argument 'order' of", "model 'shop.Order' is not installed (removed by a deploy?)"],
        id="removed-model",
    ),
    pytest.param(
        [{TAG: "vector", "value": [1, 2]}],
        {},
        ["argument 'order' of", "unknown tagged value 'vector'"],
        id="unknown-tag",
    ),
    pytest.param(
        [{TAG: "datetime", "value": "the day after tomorrow"}],
        {},
        ["argument 'order' of", "bad datetime value"],
        id="bad-datetime",
    ),
    pytest.param(
        [{TAG: "model", "model": "testapp.Order", "pk": "not-a-number"}],
        {},
        ["argument 'order' of", "does not fit testapp.Order's primary key"],
        id="pk-of-the-wrong-type",
    ),
    pytest.param(
        [deep(900)],
        {},
        ["argument 'order' of", "nested too deeply to decode"],
        id="nesting-the-worker-cannot-decode",
    ),
    pytest.param(
        [],
        {},
        ["no longer fits its signature", "missing a required argument: 'order'"],
        id="signature-lost-an-argument",
    ),
    pytest.param(
        [1, 2],
        {},
        ["no longer fits its signature", "too many positional arguments"],
        id="signature-gained-an-argument",
    ),
    pytest.param(
        [],
        {"order": 1, "customer": 2},
        ["no longer fits its signature", "unexpected keyword argument 'customer'"],
        id="renamed-keyword",
    ),
]


@pytest.mark.parametrize(("stored_args", "stored_kwargs", "words"), UNDECODABLE)
def test_an_undecodable_run_fails_at_once_naming_the_argument(
    worker, stored_args, stored_kwargs, words
):
    """The attempt is recorded and the run ends FAILED after one attempt (on_missing="retry"
    does not matter: it is not a missing object), its lease released; the worker serves on."""
    order = Order.objects.create(reference="kept")
    run_id = dispatch_then_store(tasks.touch_order_retry, (order,), stored_args, stored_kwargs)
    run = finished(run_id)
    assert (run.state, run.attempts, run.lease_until) == (RunState.FAILED, 1, None)
    assert run.error_type == "taskkit.exceptions.UndecodableCall"
    for word in words:
        assert word in run.error_message, run.error_message
    assert "tests.testapp.tasks.touch_order_retry()" in run.error_message
    attempt = TaskAttempt.objects.get(run_id=run_id)
    assert attempt.outcome == AttemptOutcome.FAILED and attempt.retry_delay is None
    assert not Effect.objects.exists()
    assert finished(tasks.record.delay("after").id).state == RunState.SUCCEEDED
    assert worker.alive


def test_a_type_error_inside_the_body_is_an_ordinary_failure(worker):
    """Binding happens before the call: a TypeError the body raises is retried by the policy."""
    run = finished(tasks.type_error_in_body.delay("te").id)
    assert (run.state, run.attempts) == (RunState.FAILED, 2)
    assert run.error_type == "builtins.TypeError"
    assert Effect.objects.filter(kind="te").count() == 2


def test_a_missing_object_keeps_its_on_missing_policy(worker):
    """A deleted row is not 'undecodable': on_missing="retry" still retries it."""
    order = Order.objects.create(reference="gone")
    with transaction.atomic():
        run_id = tasks.touch_order_retry.delay(order).id
        order.delete()
    run = finished(run_id)
    assert (run.state, run.attempts, run.error_type) == (
        RunState.FAILED,
        3,
        "taskkit.exceptions.MissingObject",
    )


@pytest.mark.parametrize("kind", ["surrogate", "nul", "huge", "broken-str"])
def test_any_exception_text_is_recorded(worker, kind):
    """An exception with lone surrogates, a NUL, 3 MB of text or a raising __str__ is written
    (sanitised, capped) to the run and its attempt; the run ends FAILED, not RUNNING."""
    run = finished(tasks.raises_nasty.delay(kind).id)
    assert (run.state, run.attempts, run.lease_until) == (RunState.FAILED, 1, None)
    attempt = TaskAttempt.objects.get(run=run)
    assert attempt.outcome == AttemptOutcome.FAILED
    for text in (run.error_message, run.error_traceback, attempt.error_message):
        text.encode("utf-8")  # no lone surrogate survived
        assert "\x00" not in text
    assert len(run.error_message) <= ledger.MAX_ERROR_MESSAGE
    assert len(run.error_traceback) <= ledger.MAX_ERROR_TRACEBACK
    expected = {
        "surrogate": ("builtins.RuntimeError", "undecodable \\udc80 byte and a lone \\ud800"),
        "nul": ("builtins.RuntimeError", "a NUL \\x00 in the middle"),
        "huge": ("builtins.RuntimeError", "x" * 1000),
        "broken-str": ("tests.testapp.tasks.BrokenStr", "<str() of the exception raised"),
    }[kind]
    assert run.error_type == expected[0]
    assert expected[1] in run.error_message
    if kind == "huge":
        assert run.error_message.endswith("(cut) …")
    assert worker.alive
    assert finished(tasks.record.delay("after").id).state == RunState.SUCCEEDED


NASTY = [
    pytest.param(RuntimeError("lone \udc80 surrogate"), "lone \\udc80 surrogate", id="surrogate"),
    pytest.param(RuntimeError("nul \x00 byte"), "nul \\x00 byte", id="nul"),
    pytest.param(RuntimeError("y" * 5_000_000), "y" * 100, id="megabytes"),
    pytest.param(
        tasks.BrokenStr(), "<str() of the exception raised RuntimeError>", id="str-raises"
    ),
]


@pytest.mark.parametrize(("exc", "expected"), NASTY)
def test_every_writer_of_failures_can_write_any_exception(exc, expected):
    """``ledger.fail`` with ``ErrorInfo.from_exception``, as the worker's main process (lost
    child, hard time limit) and the relay use it, writes whatever the exception holds."""
    run = TaskRun.objects.create(task_name=tasks.record.name, state=RunState.QUEUED)
    claim = ledger.claim(run, "tester:1", 60)
    assert claim is not None
    try:
        raise exc
    except Exception as raised:
        error = ledger.ErrorInfo.from_exception(raised)
    assert ledger.fail(claim, error, None, AttemptOutcome.LOST) == RunState.FAILED
    run.refresh_from_db()
    assert expected in run.error_message
    assert run.error_message == TaskAttempt.objects.get(run=run).error_message
    assert "Traceback" in run.error_traceback
