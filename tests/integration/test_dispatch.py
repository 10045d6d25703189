"""Dispatch: the run is written in the caller's transaction and published on commit (inv. 1)."""

import json
import uuid
from decimal import Decimal

import pytest
from django.db import transaction

from taskkit import InvalidIdempotencyKey, PayloadTooLarge, UnsafeArgument, UnsupportedOption
from taskkit.models import RunState, TaskRun
from tests.testapp import tasks
from tests.testapp.models import Order

pytestmark = pytest.mark.django_db(transaction=True)


def queued(redis_client) -> list[dict]:
    return [json.loads(m) for m in reversed(redis_client.lrange("inspect", 0, -1))]  # oldest first


def test_rollback_leaves_no_run_and_publishes_nothing(clean_broker):
    """A dispatch inside a transaction that rolls back leaves no row and no message."""
    with pytest.raises(RuntimeError), transaction.atomic():
        result = tasks.parked.delay("rolled-back")
        assert TaskRun.objects.filter(pk=result.id).exists()  # visible inside the transaction
        raise RuntimeError("roll back")
    assert not TaskRun.objects.exists()
    assert queued(clean_broker) == []


def test_commit_publishes_once_after_commit(clean_broker):
    """Inside a transaction the message goes out on commit, exactly once, with the run's id."""
    with transaction.atomic():
        result = tasks.parked.delay("committed")
        assert queued(clean_broker) == []
        # written published-unless-proven-otherwise: no second write after the publish
        assert TaskRun.objects.get(pk=result.id).state == RunState.QUEUED
    messages = queued(clean_broker)
    assert [m["headers"]["id"] for m in messages] == [result.id]
    assert messages[0]["headers"]["taskkit_run"] == "1"
    run = TaskRun.objects.get(pk=result.id)
    assert run.state == RunState.QUEUED
    assert run.queued_at is not None and run.queue == "inspect"


def test_outside_a_transaction_publishes_at_once(clean_broker):
    """In autocommit mode the run is published immediately."""
    result = tasks.parked.delay("autocommit")
    assert [m["headers"]["id"] for m in queued(clean_broker)] == [result.id]
    assert result.created is True
    assert uuid.UUID(result.id) == TaskRun.objects.get().pk


def test_the_message_carries_no_arguments(clean_broker):
    """The broker only learns the run id; the arguments stay in the ledger."""
    order = Order.objects.create(reference="A-1", note="secret")
    tasks.parked.delay("args", order, Decimal("9.99"), when="now")
    body = json.loads(__import__("base64").b64decode(queued(clean_broker)[0]["body"]))
    assert body[0] == [] and body[1] == {}
    run = TaskRun.objects.get()
    assert run.args[1] == {"__taskkit__": "model", "model": "testapp.Order", "pk": order.pk}
    assert run.args[2] == {"__taskkit__": "decimal", "value": "9.99"}


def test_countdown_sets_not_before_and_delays_the_message(clean_broker):
    """countdown= is stored as not_before and the message carries an ETA."""
    result = tasks.parked.apply_async(("later",), countdown=30)
    run = TaskRun.objects.get(pk=result.id)
    assert run.not_before is not None
    assert 25 < (run.not_before - run.created_at).total_seconds() < 35
    assert queued(clean_broker)[0]["headers"]["eta"] is not None


@pytest.mark.parametrize(
    ("args", "kwargs", "needle"),
    [
        (
            (Order(reference="unsaved"),),
            {},
            "argument 'kind' of tests.testapp.tasks.parked() is an unsaved testapp.Order",
        ),
        (("k", {1, 2}), {}, "argument '*args[0]'"),
        (("k",), {"qs": "QS"}, "argument 'qs'"),
        (("k",), {"fn": lambda: 1}, "functions and classes cannot travel"),
        (("k",), {"blob": b"x"}, "bytes have no JSON form"),
        (("k",), {"obj": object()}, "argument 'obj'"),
    ],
)
def test_unsafe_arguments_are_refused_at_the_call_site(clean_broker, args, kwargs, needle):
    """Values that cannot travel raise UnsafeArgument naming the argument; nothing is written."""
    if kwargs.get("qs") == "QS":
        kwargs = {"qs": Order.objects.all()}
        needle = "argument 'qs' of tests.testapp.tasks.parked() is a django.db.models.query."
    with pytest.raises(UnsafeArgument) as info:
        tasks.parked.delay(*args, **kwargs)
    assert needle in str(info.value)
    assert isinstance(info.value, TypeError)
    assert not TaskRun.objects.exists()
    assert queued(clean_broker) == []


def test_a_call_the_function_cannot_accept_is_refused(clean_broker):
    """Arguments are bound to the signature before anything is written."""
    with pytest.raises(TypeError, match="missing a required argument: 'amount'"):
        tasks.parked_charge.delay(1)
    assert not TaskRun.objects.exists()


def test_payload_over_the_limit_is_refused(clean_broker, settings):
    """Arguments over TASKKIT_MAX_PAYLOAD_BYTES raise PayloadTooLarge at the call site."""
    settings.TASKKIT_MAX_PAYLOAD_BYTES = 1000
    tasks.parked.delay("x" * 900)
    with pytest.raises(PayloadTooLarge, match="TASKKIT_MAX_PAYLOAD_BYTES"):
        tasks.parked.delay("x" * 1100)
    assert TaskRun.objects.count() == 1


def test_unsupported_apply_async_options_are_refused(clean_broker):
    """Options that would bypass the ledger are refused with the reason."""
    with pytest.raises(UnsupportedOption, match=r"link=.*bypass the ledger"):
        tasks.parked.apply_async(("x",), link=tasks.record.s("y"))
    with pytest.raises(InvalidIdempotencyKey):
        tasks.parked.apply_async(("x",), idempotency_key="")
    assert not TaskRun.objects.exists()


def test_idempotency_key_sequential(clean_broker):
    """A second dispatch with a key in the ledger returns the same run and publishes nothing."""
    first = tasks.parked_charge.delay(42, Decimal("10"))
    with transaction.atomic():
        second = tasks.parked_charge.delay(42, Decimal("99"))
        third = tasks.parked.apply_async(("x",), idempotency_key="charge:42")  # other task name
        Order.objects.create(reference="still usable")  # the transaction is not broken
    assert second.id == first.id and second.created is False and first.created is True
    assert third.id != first.id
    assert TaskRun.objects.filter(task_name=tasks.parked_charge.name).count() == 1
    assert [m["headers"]["id"] for m in queued(clean_broker)] == [first.id, third.id]
    assert TaskRun.objects.get(pk=first.id).args == [42, {"__taskkit__": "decimal", "value": "10"}]


def test_same_key_twice_in_one_transaction(clean_broker):
    """Two dispatches of one key in one transaction make one run and one message."""
    with transaction.atomic():
        a = tasks.parked.apply_async(("x",), idempotency_key="k1")
        b = tasks.parked.apply_async(("x",), idempotency_key="k1")
    assert a.id == b.id
    assert len(queued(clean_broker)) == 1


def test_calling_the_task_directly_runs_the_function(clean_broker):
    """task(...) runs in-process like Celery: no run, no message."""
    assert tasks.parked("direct") == "direct"
    assert not TaskRun.objects.exists()
    assert queued(clean_broker) == []
