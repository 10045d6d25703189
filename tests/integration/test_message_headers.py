"""Every publish of a run carries what Flower reads: argsrepr, kwargsrepr, root, parent, retries.

Messages are read off the ``inspect`` queue (no worker consumes it), one path at a time: a
dispatch, a bulk dispatch (copies of one encoded message, and message by message), a dispatch
from inside a run, the relay's re-publish and an operator retry.
"""

import datetime
import json
import uuid

import pytest
from django.db import transaction
from django.utils import timezone

from taskkit.core.context import RunContext, _current
from taskkit.models import RunState, TaskRun
from taskkit.producer import dispatch as dispatch_module
from taskkit.relay import sweep as relay
from tests.testapp import tasks
from tests.testapp.models import Order

pytestmark = pytest.mark.django_db(transaction=True)

AGO = datetime.timedelta(hours=1)


def messages(redis_client, queue="inspect") -> dict[str, dict]:
    """The queue's messages' headers by run id (oldest first)."""
    found = [json.loads(m) for m in reversed(redis_client.lrange(queue, 0, -1))]
    return {m["headers"]["id"]: m["headers"] for m in found}


def shown(h: dict) -> tuple:
    return (h["argsrepr"], h["kwargsrepr"], h["root_id"], h["parent_id"], h["retries"])


def test_a_dispatch_shows_its_call_and_is_its_own_root(clean_broker):
    """``.delay()``: the stored call as text, root = the run, no parent, 0 retries."""
    order = Order.objects.create(reference="ORD-1")
    result = tasks.parked.delay("kind", 2, order, note="x")
    h = messages(clean_broker)[result.id]
    assert shown(h) == (
        f"('kind', 2, <testapp.Order #{order.pk}>)",
        "{'note': 'x'}",
        result.id,
        None,
        0,
    )


def test_sensitive_values_never_travel_in_the_headers(clean_broker):
    """A sensitive argument is shown as <sensitive>; its value is nowhere in the message."""
    result = tasks.parked_card.delay("ord-9", card="4111111111111111", extra="secret-extra")
    raw = clean_broker.lrange("inspect", 0, -1)
    assert b"4111111111111111" not in b"".join(raw)
    assert b"secret-extra" not in b"".join(raw)
    h = messages(clean_broker)[result.id]
    assert h["argsrepr"] == "('ord-9',)"
    assert h["kwargsrepr"] == "{'card': <sensitive>, 'extra': <sensitive>}"


@pytest.mark.parametrize("sent_event", [False, True], ids=["copies", "one-by-one"])
def test_a_bulk_dispatch_gives_each_message_its_own_headers(clean_broker, sent_event):
    """``delay_many``: each message shows its own call and is its own root, whether the batch is
    sent as copies of one encoded message or message by message (task-sent events on)."""
    conf = tasks.parked.app.conf
    previous = conf.task_send_sent_event
    conf.task_send_sent_event = sent_event
    try:
        with transaction.atomic():
            results = tasks.parked.delay_many([(f"item-{i}", i) for i in range(5)])
    finally:
        conf.task_send_sent_event = previous
    found = messages(clean_broker)
    assert len(found) == 5
    raw = {
        json.loads(m)["headers"]["id"]: json.loads(m) for m in clean_broker.lrange("inspect", 0, -1)
    }
    for i, result in enumerate(results):
        assert shown(found[result.id]) == (f"('item-{i}', {i})", "{}", result.id, None, 0)
        assert raw[result.id]["properties"]["argsrepr"] == f"('item-{i}', {i})"
        assert raw[result.id]["properties"]["correlation_id"] == result.id
    tags = [
        json.loads(m)["properties"]["delivery_tag"] for m in clean_broker.lrange("inspect", 0, -1)
    ]
    assert len(set(tags)) == 5


def test_a_run_dispatched_from_inside_a_run_names_it_and_its_root(clean_broker):
    """Inside a run (its context set, as a worker sets it), children name it as their parent and
    its root as their root; so do their re-publishes, kept in the run's options."""
    parent, root = uuid.uuid4(), uuid.uuid4()
    token = _current.set(RunContext(parent, "t", 1, None, "celery", root_id=root))
    try:
        single = tasks.parked.delay("child")
        with transaction.atomic():
            bulk = tasks.parked.delay_many([("a",), ("b",), ("c",)])
    finally:
        _current.reset(token)
    found = messages(clean_broker)
    for result in [single, *bulk]:
        h = found[result.id]
        assert (h["root_id"], h["parent_id"]) == (str(root), str(parent))
    run = TaskRun.objects.get(pk=single.id)
    assert run.options["parent_id"] == str(parent)


def test_the_relay_and_an_operator_retry_say_how_many_attempts_were_made(clean_broker, settings):
    """A relay re-publish and an operator retry carry retries = the attempts already made, the
    call and the origin, exactly as the first message did."""
    settings.TASKKIT_RELAY_GRACE_SECONDS = 1
    parent = uuid.uuid4()
    token = _current.set(RunContext(parent, "t", 1, None, "celery"))
    try:
        due = tasks.parked.delay("due", n=1)
        failed = tasks.parked.delay("failed")
    finally:
        _current.reset(token)
    clean_broker.delete("inspect")
    TaskRun.objects.filter(pk=due.id).update(
        state=RunState.RETRYING, attempts=3, queued_at=None, not_before=timezone.now() - AGO
    )
    TaskRun.objects.filter(pk=failed.id).update(state=RunState.FAILED, attempts=10)
    assert relay.sweep().counts["published_retrying"] == 1
    with transaction.atomic():
        assert dispatch_module.retry_runs(TaskRun.objects.filter(pk=failed.id)) == [
            uuid.UUID(failed.id)
        ]
    found = messages(clean_broker)
    assert shown(found[due.id]) == ("('due',)", "{'n': 1}", str(parent), str(parent), 3)
    assert shown(found[failed.id]) == ("('failed',)", "{}", str(parent), str(parent), 10)
