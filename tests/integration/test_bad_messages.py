"""Bad messages are contained: the worker keeps serving and real runs still complete (inv. 9)."""

import json

import pytest

from taskkit.models import RunState
from tests.conftest import wait_for
from tests.integration.test_execution import finished
from tests.testapp import tasks

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


def test_an_unknown_task_name_does_not_crash_the_worker(worker):
    """A message for a task nobody registered is logged and discarded."""
    tasks.record.app.send_task("nobody.registered.this", args=(1,))
    wait_for(lambda: "nobody.registered.this" in worker.log(), what="the log line")
    assert finished(tasks.record.delay("after-unknown").id).state == RunState.SUCCEEDED
    assert worker.alive


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps({"no": "headers"}),
        json.dumps(
            {
                "body": "bm90IGpzb24=",
                "content-type": "application/json",
                "content-encoding": "utf-8",
                "headers": {},
                "properties": {},
            }
        ),
    ],
    ids=["json-without-envelope", "envelope-without-task"],
)
def test_malformed_json_messages_do_not_crash_the_worker(worker, clean_broker, raw):
    """JSON that is not a Celery message is dropped; the next real run completes."""
    clean_broker.lpush("celery", raw)
    assert finished(tasks.record.delay("after-malformed").id).state == RunState.SUCCEEDED
    assert worker.alive


@pytest.mark.parametrize("raw", [b"this is not json", b"\xff\xfe not utf-8"], ids=["text", "bytes"])
def test_a_non_json_entry_does_not_stop_a_worker_with_default_settings(worker, clean_broker, raw):
    """tests/settings.py chooses no broker transport, as the README's Install section: taskkit
    uses its own for the Redis broker, which logs and drops the entry (kombu's would exit)."""
    dropped = "ERROR/MainProcess] taskkit: dropped an entry from a Redis queue"
    before = worker.log().count(dropped)
    clean_broker.lpush("celery", raw)
    assert finished(tasks.record.delay("after-non-json").id).state == RunState.SUCCEEDED
    assert worker.alive, worker.log()[-3000:]
    assert worker.log().count(dropped) == before + 1
