"""A dispatch is one write, and a bulk dispatch one pipelined publish (issue 10, points 1 and 3).

The run is inserted QUEUED, *published unless proven otherwise*, with a deadline
(``requeue_at``, the relay grace after it is due): the happy path writes nothing after the
publish. A publish known to have failed puts the run back to PENDING; a run whose publish never
happened (a dispatcher killed after its commit: fault scenario 14) is published by the relay at
its deadline. A backlog left unclaimed past the deadline costs one extra message per run, after
which the requeue backoff applies.

On Redis, ``delay_many`` (and the relay) send their messages in pipelines: each message built by
Celery and kombu exactly as one by one, priority queues and task-sent events included; a broker
failure mid-pipeline leaves the runs of the failed pipeline PENDING for the relay.
"""

import base64
import datetime
import json
from urllib.parse import urlparse

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from taskkit.models import RunState, TaskRun
from taskkit.producer import publisher
from taskkit.relay import sweep as relay
from tests.conftest import wait_for
from tests.integration.test_execution import finished
from tests.testapp import tasks

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

AGO = datetime.timedelta(hours=1)


def ids_on(redis_client, key: str = "inspect") -> list[str]:
    """Ids of the messages on ``key``, oldest first."""
    return [json.loads(m)["headers"]["id"] for m in redis_client.lrange(key, 0, -1)][::-1]


def test_the_happy_path_is_one_insert_and_no_write_after_the_publish(clean_broker, settings):
    settings.TASKKIT_RELAY_GRACE_SECONDS = 30
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        result = tasks.parked.delay("one write")
    ledger_statements = [q["sql"] for q in queries if "taskkit_taskrun" in q["sql"]]
    assert len(ledger_statements) == 1 and ledger_statements[0].startswith("INSERT INTO")
    assert ids_on(clean_broker) == [result.id]
    run = TaskRun.objects.get(pk=result.id)
    assert run.state == RunState.QUEUED and run.publish_count == 1
    assert 29 < (run.requeue_at - run.queued_at).total_seconds() < 31  # the deadline

    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        results = tasks.parked.delay_many([("a",), ("b",), ("c",)])
    ledger_statements = [q["sql"] for q in queries if "taskkit_taskrun" in q["sql"]]
    assert len(ledger_statements) == 1 and ledger_statements[0].startswith("INSERT INTO")
    assert ids_on(clean_broker) == [result.id] + [r.id for r in results]


def test_a_failed_publish_puts_the_run_back_to_pending(clean_broker, settings, monkeypatch):
    """The broker refuses: the run is not left marked published; the relay publishes it."""
    settings.TASKKIT_RELAY_GRACE_SECONDS = 1
    import redis

    def refuse(self, name, *values):
        raise redis.ConnectionError("broker down")

    with monkeypatch.context() as patch:
        patch.setattr(redis.Redis, "lpush", refuse)  # kombu's and the templates' push
        with transaction.atomic():
            result = tasks.parked.delay("refused")
    run = TaskRun.objects.get(pk=result.id)
    assert (run.state, run.queued_at, run.publish_count, run.requeue_at) == (
        RunState.PENDING,
        None,
        0,
        None,
    )
    TaskRun.objects.filter(pk=result.id).update(created_at=timezone.now() - AGO)
    assert relay.sweep().counts["published_pending"] == 1
    assert ids_on(clean_broker) == [result.id]


def test_a_backlog_past_the_deadline_costs_one_extra_message_per_run(clean_broker, settings):
    """Runs published but left unclaimed past their deadline: one sweep publishes each once
    more; further sweeps publish nothing until the requeue backoff (2 x, then 4 x
    TASKKIT_REQUEUE_AFTER) says so."""
    settings.TASKKIT_RELAY_GRACE_SECONDS = 0.5
    settings.TASKKIT_REQUEUE_AFTER = 30
    ids = [tasks.parked.delay(i).id for i in range(10)]
    with transaction.atomic():
        ids += [r.id for r in tasks.parked.delay_many((i,) for i in range(10, 30))]
    assert sorted(ids_on(clean_broker)) == sorted(ids)
    deadline = max(TaskRun.objects.values_list("requeue_at", flat=True))
    wait_for(lambda: timezone.now() > deadline, 10, what="the runs' deadline to pass")

    counts = relay.sweep().counts
    assert counts["published_queued"] == 30
    on_queue = ids_on(clean_broker)
    assert sorted(on_queue) == sorted(ids + ids)  # exactly one extra message per run
    runs = TaskRun.objects.filter(pk__in=ids)
    assert {r.publish_count for r in runs} == {2}
    assert all(59 < (r.requeue_at - r.queued_at).total_seconds() < 61 for r in runs)
    for _ in range(3):  # the backoff holds: no more copies
        assert relay.sweep().counts["published_queued"] == 0
    assert len(ids_on(clean_broker)) == 60

    TaskRun.objects.filter(pk__in=ids).update(requeue_at=timezone.now() - AGO)  # 2 x later
    assert relay.sweep().counts["published_queued"] == 30
    runs = TaskRun.objects.filter(pk__in=ids)
    assert {r.publish_count for r in runs} == {3}
    assert all(119 < (r.requeue_at - r.queued_at).total_seconds() < 121 for r in runs)


def _message_shape(raw: bytes) -> dict:
    message = json.loads(raw)
    run_id = message["headers"]["id"]
    shape = json.loads(json.dumps(message).replace(run_id, "<run>"))
    shape["properties"].pop("delivery_tag")  # a fresh uuid per message, as kombu makes
    shape["headers"].pop("eta", None)
    shape["headers"].pop("argsrepr")  # each run's own call (taskkit.core.headers)
    shape["properties"].pop("argsrepr")  # Celery copies the option into the properties too
    return shape


def test_pipelined_messages_are_the_ones_celery_sends_one_by_one(clean_broker):
    """Same headers, properties and body as a single ``apply_async``; the priority queue and
    the queue option are honoured."""
    single = tasks.parked.apply_async(("x",), priority=7)
    with transaction.atomic():
        many = tasks.parked.delay_many([("y",), ("z",), ("w",)], priority=7)
    priority_key = "inspect\x06\x166"  # kombu's Redis priority steps 0, 3, 6, 9
    assert clean_broker.llen("inspect") == 0
    raw = clean_broker.lrange(priority_key, 0, -1)
    assert [json.loads(m)["headers"]["id"] for m in raw[::-1]] == [single.id] + [r.id for r in many]
    shapes = [_message_shape(m) for m in raw]
    assert all(shape == shapes[0] for shape in shapes)
    assert shapes[0]["properties"]["priority"] == 7
    assert shapes[0]["headers"]["taskkit_run"] == "1"
    for part in ("headers", "properties"):
        reprs = [json.loads(m)[part]["argsrepr"] for m in raw[::-1]]
        assert reprs == ["('x',)", "('y',)", "('z',)", "('w',)"]
    clean_broker.delete(priority_key)

    # A queue no worker consumes (the session's worker would take messages off "celery").
    with transaction.atomic():
        other = tasks.parked.delay_many([("q",), ("r",)], queue="parked-elsewhere")
    assert sorted(ids_on(clean_broker, "parked-elsewhere")) == sorted(r.id for r in other)
    clean_broker.delete("parked-elsewhere")


def test_task_sent_events_go_out_with_pipelined_messages(clean_broker):
    conf = tasks.parked.app.conf
    previous = conf.task_send_sent_event
    conf.task_send_sent_event = True
    try:
        _task_sent_events(clean_broker)
    finally:
        conf.task_send_sent_event = previous


def _task_sent_events(clean_broker) -> None:
    pubsub = clean_broker.pubsub()
    pubsub.psubscribe("*celeryev*")
    wait_for(lambda: pubsub.get_message(timeout=0.1) is not None, 10, what="subscription")
    with transaction.atomic():
        results = tasks.parked.delay_many((i,) for i in range(5))
    sent: list[str] = []

    def collect() -> bool:
        message = pubsub.get_message(timeout=0.1)
        if message and message["type"] == "pmessage":
            event = json.loads(base64.b64decode(json.loads(message["data"])["body"]))
            if event["type"] == "task-sent":
                sent.append(event["uuid"])
        return len(sent) >= 5

    wait_for(collect, 20, what="five task-sent events")
    pubsub.close()
    assert sorted(sent) == sorted(r.id for r in results)
    assert sorted(ids_on(clean_broker)) == sorted(r.id for r in results)


def test_a_real_worker_runs_pipelined_runs_with_priority(worker):
    with transaction.atomic():
        results = tasks.record.delay_many(((f"piped-{i}",) for i in range(30)), priority=9)
    for r in results:
        assert finished(r.id).state == RunState.SUCCEEDED


@pytest.mark.skipif(
    urlparse(django_settings.REDIS_URL).port in (None, 6379),
    reason="changes the Redis server's memory limit: only against a private (embedded) Redis",
)
def test_a_broker_failure_mid_pipeline_leaves_the_unsent_runs_pending(
    clean_broker, settings, monkeypatch
):
    """Redis refuses writes part-way through (maxmemory, noeviction): the runs of the failed
    pipeline (and the rest) go back to PENDING; every run left QUEUED has its message."""
    monkeypatch.setattr(publisher, "PIPELINE_SIZE", 10)
    used = int(clean_broker.info("memory")["used_memory"])
    policy = clean_broker.config_get("maxmemory-policy")["maxmemory-policy"]
    clean_broker.config_set("maxmemory-policy", "noeviction")
    clean_broker.config_set("maxmemory", used + 40_000)
    try:
        with transaction.atomic():
            results = tasks.parked.delay_many((i,) for i in range(300))
    finally:
        clean_broker.config_set("maxmemory", 0)
        clean_broker.config_set("maxmemory-policy", policy)
    ids = [r.id for r in results]
    on_queue = set(ids_on(clean_broker))
    queued = {
        str(pk) for pk in TaskRun.objects.filter(state=RunState.QUEUED).values_list("pk", flat=True)
    }
    pending = {
        str(pk)
        for pk in TaskRun.objects.filter(state=RunState.PENDING).values_list("pk", flat=True)
    }
    assert queued and pending, (len(queued), len(pending))
    assert queued | pending == set(ids)
    assert queued <= on_queue  # never a run marked published whose message was not accepted
    assert len(queued) % 10 == 1  # the first message, then whole pipelines of 10
    assert set(ids) - on_queue <= pending

    settings.TASKKIT_RELAY_GRACE_SECONDS = 1
    TaskRun.objects.filter(pk__in=ids).update(created_at=timezone.now() - AGO)
    assert relay.sweep().counts["published_pending"] == len(pending)
    assert set(ids_on(clean_broker)) == set(ids)
