"""Messages sent without taskkit (celery beat, ``send_task``), sent for real to a real worker.

Adoption runs the checks ``.delay()`` makes (signature, JSON safety with the reserved tag refused,
payload cap); a refused message is a FAILED run with the reason, never run and never dropped.
``TASKKIT_ADOPT = False`` and ``@reliable_task(adopt=False)`` refuse every such message.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from taskkit.core.serialization import TAG
from taskkit.models import RunState, TaskAttempt, TaskRun
from tests.conftest import Worker, wait_for
from tests.integration.test_execution import finished
from tests.testapp import tasks
from tests.testapp.models import Effect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]


def send(task: Any, *args: Any, **kwargs: Any) -> str:
    """Send a message the way celery beat does: no ledger row, no taskkit header."""
    run_id = str(uuid.uuid4())
    task.app.send_task(task.name, args=args, kwargs=kwargs, task_id=run_id)
    return run_id


REFUSED = [
    # (args, kwargs, words the reason must contain)
    pytest.param(
        ("big",),
        {"blob": "x" * 400_000},
        ["over the limit of", "TASKKIT_MAX_PAYLOAD_BYTES"],
        id="400-KB-argument",
    ),
    pytest.param(
        ({TAG: "model", "model": "auth.User", "pk": 1},),
        {},
        ["argument 'kind' of", "reserved key '__taskkit__'", "plain JSON"],
        id="forged-model-reference",
    ),
    pytest.param((), {}, ["missing a required argument: 'kind'"], id="call-that-does-not-bind"),
    pytest.param(("nul\x00",), {}, ["argument 'kind' of", "NUL character"], id="nul"),
    pytest.param(("ok",), {"n": 2**70}, ["argument 'n' of", "64-bit"], id="huge-int"),
]


@pytest.mark.parametrize(("args", "kwargs", "words"), REFUSED)
def test_a_message_refused_by_the_checks_is_a_failed_run(worker, args, kwargs, words):
    """The worker records a FAILED run with the reason and no arguments; nothing runs; the
    message is acknowledged and the worker serves on."""
    run = finished(send(tasks.record, *args, **kwargs))
    assert run.state == RunState.FAILED
    assert run.error_type == "taskkit.exceptions.AdoptionRefused"
    assert "sent without taskkit" in run.error_message
    for word in words:
        assert word in run.error_message, run.error_message
    assert (run.args, run.kwargs, run.attempts) == ([], {}, 0)
    assert not TaskAttempt.objects.filter(run=run).exists()
    assert not Effect.objects.exists()
    assert finished(tasks.record.delay("after").id).state == RunState.SUCCEEDED
    assert worker.alive


def test_a_valid_message_is_adopted_and_run(worker):
    """A message that passes the checks is adopted, stored encoded, and runs once."""
    run = finished(send(tasks.record, "adopted", n=1))
    assert (run.state, run.args, run.kwargs) == (RunState.SUCCEEDED, ["adopted"], {"n": 1})
    assert Effect.objects.filter(kind="adopted").count() == 1


def test_a_task_declared_adopt_false_refuses_messages_sent_without_taskkit(worker):
    """@reliable_task(adopt=False): a FAILED run saying adoption is off and how to enable it;
    .delay() of the same task runs as usual."""
    run = finished(send(tasks.not_adoptable, "beat"))
    assert run.state == RunState.FAILED and run.attempts == 0
    assert "adoption is off (@reliable_task(adopt=False))" in run.error_message
    assert "TASKKIT_ADOPT = True" in run.error_message
    assert not Effect.objects.filter(kind="beat").exists()
    assert finished(tasks.not_adoptable.delay("delayed").id).state == RunState.SUCCEEDED


@pytest.fixture
def worker_without_adoption(transactional_db, clean_broker, session_worker):
    """A worker with TASKKIT_ADOPT = False (the session worker stopped meanwhile, so that this
    one takes every message)."""
    session_worker.stop()
    worker = Worker("no-adopt", env={"TASKKIT_TEST_ADOPT": "0"}).start()
    try:
        yield worker
    finally:
        worker.stop()
        session_worker.start()


def test_taskkit_adopt_false_refuses_every_message_sent_without_taskkit(worker_without_adoption):
    """TASKKIT_ADOPT = False: a FAILED run saying so, the message acknowledged, nothing run."""
    run = finished(send(tasks.record, "beat"))
    assert run.state == RunState.FAILED
    assert "adoption is off (TASKKIT_ADOPT = False)" in run.error_message
    assert not Effect.objects.filter(kind="beat").exists()
    wait_for(lambda: "refused to adopt run" in worker_without_adoption.log(), what="the log line")
    assert finished(tasks.record.delay("delayed").id).state == RunState.SUCCEEDED
    assert TaskRun.objects.count() == 2
