"""Log context: a real worker's records carry the run and the request; the middleware sets ids."""

import json
import logging

import pytest
from django.conf import settings
from django.test import override_settings

from taskkit.core.context import reset_request_id, set_request_id
from taskkit.models import TaskRun
from taskkit.observe.log_context import FIELDS, RunContextFilter
from taskkit.observe.middleware import request_id_from
from tests.conftest import wait_for
from tests.integration.test_execution import finished
from tests.testapp import tasks

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

MIDDLEWARE = [*settings.MIDDLEWARE, "taskkit.observe.middleware.RequestIdMiddleware"]


def records(**match):
    """The JSON records every process of this test run wrote, filtered by exact field values."""
    with open(settings.JSON_LOG_FILE) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return [r for r in lines if all(r.get(k) == v for k, v in match.items())]


def one(**match):
    return wait_for(lambda: records(**match), what=f"a log record with {match}")[0]


def test_user_logger_records_carry_the_run_and_request(worker):
    """A task logging with its own logger in a worker: task, run, attempt, key, queue, request."""
    token = set_request_id("req-abc-123")
    try:
        result = tasks.logs_with_own_logger.delay("ctx")
    finally:
        reset_request_id(token)
    assert finished(result.id).state == "SUCCEEDED"
    record = one(name="tests.testapp.tasks", run_id=result.id)
    assert record["message"] == "user code says ctx"
    assert record["task_name"] == "tests.testapp.tasks.logs_with_own_logger"
    assert record["attempt"] == "1"
    assert record["idempotency_key"] == "log:ctx"
    assert record["queue"] == "celery"
    assert record["request_id"] == "req-abc-123"
    # Celery's own success line, logged just after the attempt, names the run too.
    celery_line = one(name="celery.app.trace", run_id=result.id)
    assert celery_line["task_name"] == "tests.testapp.tasks.logs_with_own_logger"
    # taskkit's default signal logging, from the worker
    started = one(name="taskkit.runs", run_id=result.id, taskkit_event="started")
    assert started["levelname"] == "INFO" and started["attempt"] == "1"
    assert started["request_id"] == "req-abc-123"
    succeeded = one(name="taskkit.runs", run_id=result.id, taskkit_event="succeeded")
    assert succeeded["duration"] >= 0 and succeeded["attempt"] == "1"
    assert succeeded["request_id"] == "req-abc-123"


def test_a_run_dispatched_from_a_run_inherits_its_request_id(worker):
    """The request id travels on: a run dispatched inside a run keeps the original request's id."""
    token = set_request_id("req-parent")
    try:
        parent = tasks.dispatches_child.delay("nested")
    finally:
        reset_request_id(token)
    child_id = finished(parent.id).result
    assert TaskRun.objects.get(pk=child_id).request_id == "req-parent"
    assert finished(child_id).state == "SUCCEEDED"


def test_worker_logs_retries_and_final_failure_with_traceback(worker):
    """Retrying is a WARNING with delay and exception; giving up is an ERROR with a traceback."""
    result = tasks.always_fails.delay("doomed")
    assert finished(result.id).state == "FAILED"
    retrying = one(name="taskkit.runs", run_id=result.id, taskkit_event="retrying", attempt="1")
    assert retrying["levelname"] == "WARNING"
    assert retrying["delay"] == pytest.approx(0.3)
    assert retrying["exception_type"] == "builtins.ValueError"
    failed = one(name="taskkit.runs", run_id=result.id, taskkit_event="failed")
    assert failed["levelname"] == "ERROR" and failed["attempt"] == "3"
    assert "Traceback" in failed["exc_info"]
    assert "ValueError: doomed always fails" in failed["exc_info"]


def test_records_outside_a_run_have_empty_fields():
    """Outside a run every field is an empty string; in a request only request_id is set."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    RunContextFilter().filter(record)
    assert {name: getattr(record, name) for name in FIELDS} == dict.fromkeys(FIELDS, "")
    token = set_request_id("r-1")
    try:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
        RunContextFilter().filter(record)
    finally:
        reset_request_id(token)
    assert record.request_id == "r-1" and record.run_id == ""


def test_a_record_keeps_its_own_values():
    """Values passed with extra= (e.g. by the worker's main process) are not overwritten."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.run_id = "given"
    RunContextFilter().filter(record)
    assert record.run_id == "given"


@override_settings(MIDDLEWARE=MIDDLEWARE)
def test_middleware_honours_a_sane_request_id_and_stores_it_on_runs(client, clean_broker):
    """An incoming X-Request-ID is kept, returned, and stored on the runs the request dispatches."""
    response = client.get("/dispatch", HTTP_X_REQUEST_ID="abc-123.def")
    assert response["X-Request-ID"] == "abc-123.def"
    assert TaskRun.objects.get(pk=response.content.decode()).request_id == "abc-123.def"


@override_settings(MIDDLEWARE=MIDDLEWARE)
def test_middleware_replaces_an_insane_request_id(client, clean_broker):
    """A header that could forge log lines or is too long is replaced by a fresh id."""
    response = client.get("/dispatch", HTTP_X_REQUEST_ID="bad id\nINFO forged")
    generated = response["X-Request-ID"]
    assert len(generated) == 32 and "\n" not in generated
    assert TaskRun.objects.get(pk=response.content.decode()).request_id == generated
    second = client.get("/dispatch")
    assert second["X-Request-ID"] not in ("", generated)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("abc", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("", False),
        ("-x", False),
        ("a b", False),
    ],
)
def test_request_id_sanity(given, kept):
    """Short ids of safe characters are kept; anything else is replaced."""
    assert (request_id_from(given) == given) is kept
