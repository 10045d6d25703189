"""taskkit's default logging on its signals, in-process with eager mode (the worker's is in
test_logging)."""

import logging

import pytest

from taskkit.core import signals
from taskkit.models import RunState, TaskRun
from tests.celery_app import app
from tests.testapp import tasks

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
def eager():
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = False


def events(caplog, run_id):
    return {
        r.taskkit_event: r
        for r in caplog.records
        if r.name == "taskkit.runs" and r.run_id == str(run_id)
    }


def test_eager_success_logs_dispatched_started_succeeded(eager, caplog):
    """Dispatched (DEBUG), started (INFO), succeeded (INFO, with the duration)."""
    caplog.set_level(logging.DEBUG, logger="taskkit.runs")
    result = tasks.record.delay("eager-ok")
    assert TaskRun.objects.get(pk=result.id).state == RunState.SUCCEEDED
    seen = events(caplog, result.id)
    assert seen["dispatched"].levelno == logging.DEBUG
    assert seen["started"].levelno == logging.INFO and seen["started"].attempt == "1"
    assert seen["succeeded"].levelno == logging.INFO and seen["succeeded"].duration >= 0
    assert seen["succeeded"].task_name == "tests.testapp.tasks.record"


def test_eager_final_failure_is_logged_with_exc_info(eager, caplog):
    """A run that gives up is logged at ERROR with (type, exception, traceback)."""
    result = tasks.not_retryable.delay("eager-ko")
    assert TaskRun.objects.get(pk=result.id).state == RunState.FAILED
    failed = events(caplog, result.id)["failed"]
    assert failed.levelno == logging.ERROR
    kind, exc, tb = failed.exc_info
    assert kind is KeyError and isinstance(exc, KeyError) and tb is not None
    assert failed.outcome == "FAILED"


def test_eager_retry_is_a_warning_with_delay_and_exception(eager, caplog):
    """A retry is logged at WARNING with the chosen delay and the exception's class."""
    result = tasks.flaky.delay("eager-retry", 1)
    retrying = events(caplog, result.id)["retrying"]
    assert retrying.levelno == logging.WARNING
    assert retrying.delay == pytest.approx(0.3)
    assert retrying.exception_type == "builtins.ConnectionError"
    assert "retrying in 0.3 s" in retrying.getMessage()


def test_discarded_is_a_warning(caplog):
    """A discard (here by an operator) is logged at WARNING with the reason."""
    signals.send(signals.run_discarded, "some.task", run_id="r1", attempt=0, reason="obsolete")
    (record,) = [r for r in caplog.records if r.name == "taskkit.runs"]
    assert record.levelno == logging.WARNING and record.reason == "obsolete"
    assert record.run_id == "r1" and record.taskkit_event == "discarded"
