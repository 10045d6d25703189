"""A single publish is a copy of the message Celery builds for its task (producer.templates).

What users rely on: the message is exactly the one Celery would send (ids, monitor headers,
priority queue), observers of Celery's publish signals still see every message (the template
steps aside for them), and a failure of the template's ``LPUSH`` costs no message and no more
attempts than the publish retry policy allows. Against the real Redis broker.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from celery import signals
from django.db import transaction

from taskkit.core.headers import MessageHeaders
from taskkit.models import RunState, TaskRun
from taskkit.producer import publisher, templates
from tests.integration.test_execution import finished
from tests.testapp import tasks

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

PRIORITY_KEY = "inspect\x06\x166"  # kombu's Redis priority steps 0, 3, 6, 9: priority 7 -> 6


@pytest.fixture(autouse=True)
def templates_in_use() -> Iterator[None]:
    """The test settings send task-sent events (for Flower), which templates leave to Celery:
    off here, in this process (the publisher's side). No template is left from another test."""
    conf = tasks.parked.app.conf
    previous = conf.task_send_sent_event
    conf.task_send_sent_event = False
    templates._templates.clear()
    with tasks.parked.app.producer_or_acquire() as producer:
        producer.channel  # noqa: B018 - connected: the first publish of a test builds a template
    try:
        yield
    finally:
        conf.task_send_sent_event = previous
        templates._templates.clear()


@pytest.fixture
def sends(monkeypatch) -> list[str]:
    """What each ``single_send`` did: "copy" (sent from a template), "celery" (no template
    applies: Celery sends it) or the error it raised (Celery then sends it as a retry)."""
    outcomes: list[str] = []
    original = templates.single_send

    def spy(*args, **kwargs):
        try:
            sent = original(*args, **kwargs)
        except Exception as exc:
            outcomes.append(type(exc).__name__)
            raise
        outcomes.append("copy" if sent else "celery")
        return sent

    monkeypatch.setattr(templates, "single_send", spy)
    return outcomes


@contextmanager
def through_celery() -> Iterator[list[str]]:
    """A ``before_task_publish`` receiver (as tracing tools connect): every message is then built
    by Celery, and the receiver sees each one. Yields the ids it saw."""
    seen: list[str] = []

    def receiver(headers: dict | None = None, **kwargs: object) -> None:
        seen.append((headers or {}).get("id", "?"))

    signals.before_task_publish.connect(receiver, weak=False)
    try:
        yield seen
    finally:
        signals.before_task_publish.disconnect(receiver)


def normalized(raw: bytes) -> dict:
    """A message with its run id written ``<run>`` and kombu's per-message delivery tag gone."""
    message = json.loads(raw)
    run_id = message["headers"]["id"]
    shape = json.loads(json.dumps(message).replace(run_id, "<run>"))
    assert shape["properties"].pop("delivery_tag")
    return shape


def popped(client: redis.Redis, key: str = "inspect") -> list[bytes]:
    """The messages on ``key``, oldest first, taken off it."""
    messages = client.lrange(key, 0, -1)[::-1]
    client.delete(key)
    return messages


def test_a_dispatch_sends_the_message_celery_builds(clean_broker, sends):
    with through_celery() as seen, transaction.atomic():
        built = tasks.parked.apply_async(("x", 1), {"k": "é"}, priority=7)
    assert seen == [built.id]
    with transaction.atomic():
        copies = [tasks.parked.apply_async(("y", i), {"k": "é"}, priority=7) for i in range(3)]
    assert sends == ["celery", "copy", "copy", "copy"]
    raw = popped(clean_broker, PRIORITY_KEY)
    assert [json.loads(m)["headers"]["id"] for m in raw] == [built.id] + [c.id for c in copies]
    reference = normalized(raw[0])
    for part in ("headers", "properties"):
        reference[part].pop("argsrepr")
    for message, result, i in zip(raw[1:], copies, range(3), strict=True):
        shape = normalized(message)
        # each run's own call, in the headers and (as Celery copies the option) the properties
        for part in ("headers", "properties"):
            assert shape[part].pop("argsrepr") == f"('y', {i})"
            assert shape[part]["kwargsrepr"] == "{'k': 'é'}"
        assert shape["headers"]["root_id"] == "<run>"
        assert json.loads(message)["properties"]["correlation_id"] == result.id
        assert shape == reference
    delivery_tags = {json.loads(m)["properties"]["delivery_tag"] for m in raw}
    assert len(delivery_tags) == 4  # fresh per message, as kombu makes them


def test_monitor_headers_of_a_child_run_are_its_own(clean_broker, sends):
    """Root, parent, retries and texts that need escaping: the same bytes' meaning either way."""
    shown = MessageHeaders(
        argsrepr="('quote \" and \\\\ back',)",
        kwargsrepr="{'ü': '\\n'}",
        root_id="root-run",
        parent_id="parent-run",
        retries=3,
    )
    spec = tasks.parked.spec
    ids = ["11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"]
    with through_celery():
        assert publisher.publish(spec, ids[0], {"queue": "inspect"}, headers=shown)
    for _ in range(2):
        assert publisher.publish(spec, ids[1], {"queue": "inspect"}, headers=shown)
    assert sends == ["celery", "copy", "copy"]
    raw = popped(clean_broker)
    assert [normalized(m) for m in raw[1:]] == [normalized(raw[0])] * 2
    headers = json.loads(raw[2])["headers"]
    assert (headers["root_id"], headers["parent_id"], headers["retries"]) == (
        "root-run",
        "parent-run",
        3,
    )
    assert (headers["argsrepr"], headers["kwargsrepr"]) == (shown.argsrepr, shown.kwargsrepr)


def test_each_thread_gets_its_own_reply_queue(clean_broker, sends):
    """Celery names the sending thread's reply queue (``app.thread_oid``, where the ``rpc://``
    result backend replies): a copy sent from another thread than the template's names its own."""
    app = tasks.parked.app
    oids: list[str] = []
    ids: list[str] = []

    first_done, second_done = threading.Event(), threading.Event()

    def dispatch(times: int, done: threading.Event, wait_for: threading.Event | None) -> None:
        oids.append(app.thread_oid)
        ids.extend(tasks.parked.delay(i).id for i in range(times))
        done.set()
        if wait_for is not None:  # alive until the other thread has sent: distinct idents
            wait_for.wait(30)

    threads = [
        threading.Thread(target=dispatch, args=(2, first_done, second_done)),
        threading.Thread(target=dispatch, args=(1, second_done, None)),
    ]
    threads[0].start()
    assert first_done.wait(30)  # the first thread builds the template
    threads[1].start()  # the second copies it
    for thread in threads:
        thread.join(30)
    assert sends == ["copy", "copy", "copy"]
    assert oids[0] != oids[1]
    replies = [json.loads(m)["properties"]["reply_to"] for m in popped(clean_broker)]
    assert replies == [oids[0], oids[0], oids[1]]


def test_publish_signal_receivers_see_every_message(clean_broker, sends):
    tasks.parked.delay("warm")
    tasks.parked.delay("copied")
    with through_celery() as seen:
        results = [tasks.parked.delay(i) for i in range(3)]
    assert seen == [r.id for r in results]
    assert sends == ["copy", "copy", "celery", "celery", "celery"]
    assert [json.loads(m)["headers"]["id"] for m in popped(clean_broker)][2:] == seen


def fail_first_lpush(monkeypatch) -> list[str]:
    """The next ``LPUSH`` of any Redis client fails as a dropped connection; later ones pass."""
    failures: list[str] = []
    original = redis.Redis.lpush

    def lpush_fails_once(self, name, *values):
        if not failures:
            failures.append(name)
            raise redis.ConnectionError("connection reset by peer")
        return original(self, name, *values)

    monkeypatch.setattr(redis.Redis, "lpush", lpush_fails_once)
    return failures


def test_a_failed_copy_is_sent_through_celery_once(clean_broker, monkeypatch, sends):
    """The template's LPUSH fails (the connection dropped): Celery sends the message, as the
    retry the policy allows; one message, the run QUEUED."""
    tasks.parked.delay("warm")
    tasks.parked.delay("copied")
    failures = fail_first_lpush(monkeypatch)
    result = tasks.parked.delay("dropped")
    assert failures == ["inspect"]
    assert sends == ["copy", "copy", "ConnectionError"]
    ids = [json.loads(m)["headers"]["id"] for m in popped(clean_broker)]
    assert ids[2:] == [result.id]
    assert TaskRun.objects.get(pk=result.id).state == RunState.QUEUED


def test_with_no_retries_allowed_a_failed_copy_is_the_only_attempt(
    clean_broker, settings, monkeypatch, sends
):
    """``TASKKIT_PUBLISH_MAX_RETRIES = 0``: the failed copy was the one attempt; the run goes
    back to PENDING for the relay, and nothing is on the queue."""
    settings.TASKKIT_PUBLISH_MAX_RETRIES = 0
    tasks.parked.delay("warm")
    tasks.parked.delay("copied")
    clean_broker.delete("inspect")
    failures = fail_first_lpush(monkeypatch)  # Celery's attempt would get through
    result = tasks.parked.delay("refused")
    assert failures == ["inspect"]
    assert sends == ["copy", "copy", "ConnectionError"]
    assert clean_broker.llen("inspect") == 0
    run = TaskRun.objects.get(pk=result.id)
    assert (run.state, run.publish_count) == (RunState.PENDING, 0)


def test_a_failed_build_is_the_first_attempt_and_delivers_no_placeholder(
    clean_broker, settings, monkeypatch, sends
):
    """Building the template sends through Celery without retrying; its failure counts as the
    first attempt. Nothing but real runs reaches the queue."""
    import celery

    settings.TASKKIT_PUBLISH_MAX_RETRIES = 0
    calls: list[bool] = []
    refusing = [True]
    original = celery.Task.apply_async

    def refuse_a_build(self, *args, **kwargs):
        calls.append(kwargs.get("retry"))
        if refusing and kwargs.get("retry") is False:
            refusing.clear()
            raise redis.ConnectionError("connection reset by peer")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(celery.Task, "apply_async", refuse_a_build)
    result = tasks.parked.delay("refused")
    assert calls == [False]  # the build, not retried; no second attempt allowed
    assert sends == ["ConnectionError"]
    assert clean_broker.llen("inspect") == 0
    assert TaskRun.objects.get(pk=result.id).state == RunState.PENDING

    # kombu replaced the failed producer's connection: Celery sends the next message (and
    # connects); the one after builds a template, which fails, and Celery's retry sends it.
    settings.TASKKIT_PUBLISH_MAX_RETRIES = 1
    refusing.append(True)
    calls.clear()
    results = [tasks.parked.delay("reconnects"), tasks.parked.delay("retried")]
    assert calls == [True, False, True]
    assert sends == ["ConnectionError", "celery", "ConnectionError"]
    assert [json.loads(m)["headers"]["id"] for m in popped(clean_broker)] == [r.id for r in results]


def test_more_publishing_threads_than_connections_lose_nothing(
    clean_broker, settings, monkeypatch, sends
):
    """The channel's Redis pool has no connection left for this thread: not a broker failure,
    Celery sends the message and no retry is used up."""
    settings.TASKKIT_PUBLISH_MAX_RETRIES = 0
    tasks.parked.delay("warm")
    original = redis.Redis.lpush
    exhausted = getattr(redis.exceptions, "MaxConnectionsError", redis.ConnectionError)
    failures: list[str] = []

    def pool_exhausted_once(self, name, *values):
        if not failures:
            failures.append(name)
            raise exhausted("Too many connections")
        return original(self, name, *values)

    monkeypatch.setattr(redis.Redis, "lpush", pool_exhausted_once)
    result = tasks.parked.delay("crowded")
    assert sends == ["copy", "celery"] and failures == ["inspect"]
    assert [json.loads(m)["headers"]["id"] for m in popped(clean_broker)][1:] == [result.id]
    assert TaskRun.objects.get(pk=result.id).state == RunState.QUEUED


def test_a_template_follows_its_channel_when_kombu_closes_it(clean_broker, sends):
    """kombu closes the connection the template's channel belongs to (as after a connection
    error): the next publish goes through Celery, which reconnects, and the one after builds a
    new template."""
    tasks.parked.delay("warm")
    tasks.parked.delay("copied")
    (template,) = templates._templates.values()
    template.channel.connection.client.close()  # the kombu Connection: its channels close
    results = [tasks.parked.delay(i) for i in range(3)]
    assert sends == ["copy", "copy", "celery", "copy", "copy"]
    assert [json.loads(m)["headers"]["id"] for m in popped(clean_broker)][2:] == [
        r.id for r in results
    ]


def test_a_countdown_message_is_built_by_celery(clean_broker, sends):
    """A message with an ETA differs in time from any other: Celery builds it."""
    tasks.parked.delay("warm")
    results = [tasks.parked.apply_async(("later",), countdown=5) for _ in range(2)]
    assert sends == ["copy", "celery", "celery"]
    messages = [json.loads(m) for m in popped(clean_broker)[1:]]
    assert [m["headers"]["id"] for m in messages] == [r.id for r in results]
    assert all(m["headers"]["eta"] for m in messages)


def test_a_router_function_routes_every_message(clean_broker, sends):
    """A router function may route each call differently: no template, every call routed."""
    app = tasks.parked.app
    previous = app.conf.task_routes
    routed: list[str] = []

    def router(name, args, kwargs, options, task=None, **kw):
        routed.append(name)
        return None  # no opinion: the task's own queue

    def use_routes(routes: object) -> None:
        app.conf.task_routes = routes
        app.amqp.flush_routes()  # Celery reads its routes once
        app.amqp.__dict__.pop("router", None)

    use_routes((router,))
    try:
        for i in range(3):
            tasks.parked.delay(i)
    finally:
        use_routes(previous)
    assert sends == ["celery"] * 3
    assert routed.count(tasks.parked.name) == 3
    assert len(popped(clean_broker)) == 3


def test_a_worker_runs_the_runs_sent_from_templates(worker, sends):
    results = [tasks.record.delay(f"templated-{i}") for i in range(5)]
    assert sends == ["copy"] * 5
    for result in results:
        assert finished(result.id).state == RunState.SUCCEEDED


def test_an_option_that_is_not_a_plain_value_is_left_to_celery():
    def build(*args):
        raise AssertionError("no template is built")

    sent = templates.single_send(
        tasks.parked.app, tasks.parked.name, "run", {"queue": ["not", "hashable"]}, None, build
    )
    assert sent is False


def test_a_task_whose_messages_expire_is_built_by_celery(clean_broker, sends, monkeypatch):
    """A task's own ``expires`` (a class attribute or ``task_annotations``) becomes a time in
    each message: Celery builds every one."""
    monkeypatch.setattr(tasks.parked, "expires", 600, raising=False)
    monkeypatch.setattr(tasks.parked, "_exec_options", None, raising=False)  # Celery's cache
    results = [tasks.parked.delay(i) for i in range(2)]
    assert sends == ["celery", "celery"]
    messages = [json.loads(m) for m in popped(clean_broker)]
    assert [m["headers"]["id"] for m in messages] == [r.id for r in results]
    assert messages[0]["headers"]["expires"] != messages[1]["headers"]["expires"]
