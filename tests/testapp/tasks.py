"""Reliable tasks the test suite dispatches. Each writes ``Effect`` rows so tests can count."""

import logging
import os
import time

from celery import shared_task
from tenacity import retry_if_exception_type, stop_after_attempt, wait_fixed

from taskkit import current_run, reliable_task

from .models import Effect, Order

FAST = {"wait": wait_fixed(0.3)}


def _effect(kind, **payload):
    run = current_run()
    return Effect.objects.create(
        kind=kind,
        run_id=str(run.run_id) if run else "",
        attempt=run.attempt if run else 0,
        payload=payload,
        pid=os.getpid(),
    )


@reliable_task
def record(kind, **payload):
    _effect(kind, **payload)
    return {"kind": kind}


@reliable_task(queue="inspect")
def parked(kind, *values, **payload):
    """Published to a queue no worker consumes, so tests can look at the messages."""
    return kind


@reliable_task(queue="inspect", idempotency_key=lambda order_id, amount: f"charge:{order_id}")
def parked_charge(order_id, amount):
    return order_id


@reliable_task(idempotency_key=lambda order_id, amount: f"charge:{order_id}")
def charge(order_id, amount):
    _effect("charge", order_id=order_id, amount=str(amount), key=current_run().idempotency_key)


@reliable_task(stop=stop_after_attempt(5), **FAST)
def flaky(kind, failures):
    run = current_run()
    _effect(kind)
    if run.attempt <= failures:
        raise ConnectionError(f"failure {run.attempt} of {failures}")
    return run.attempt


@reliable_task(stop=stop_after_attempt(3), **FAST)
def always_fails(kind):
    _effect(kind)
    raise ValueError(f"{kind} always fails")


@reliable_task(retry=retry_if_exception_type(ConnectionError), **FAST)
def not_retryable(kind):
    _effect(kind)
    raise KeyError(kind)


@reliable_task
def returns_object(kind):
    return object()


@reliable_task
def touch_order(order):
    _effect("touch", order_id=order.pk, note=order.note, amount=str(order.amount))


@reliable_task(on_missing="discard")
def touch_order_discard(order):
    _effect("touch", order_id=order.pk)


@reliable_task(on_missing="retry", stop=stop_after_attempt(3), **FAST)
def touch_order_retry(order):
    _effect("touch", order_id=order.pk)


@reliable_task
def sleep_then_record(kind, seconds):
    _effect(f"{kind}-start")
    time.sleep(seconds)
    _effect(kind)


@reliable_task(atomic=True, stop=stop_after_attempt(1))
def atomic_then_fail(kind):
    _effect(kind)
    Order.objects.create(reference=kind)
    raise RuntimeError("fails after writing")


@reliable_task(atomic=True, stop=stop_after_attempt(3), **FAST)
def atomic_slow_first(kind, seconds):
    """Writes, then sleeps on attempt 1 (long enough to be SIGKILLed mid-body)."""
    _effect(kind)  # inside the attempt's transaction: not visible until it commits
    if current_run().attempt == 1:
        time.sleep(seconds)


@reliable_task(time_limit=2, stop=stop_after_attempt(2), **FAST)
def hangs_first(kind):
    if current_run().attempt == 1:
        time.sleep(30)
    _effect(kind)


@reliable_task(soft_time_limit=1, time_limit=10, stop=stop_after_attempt(2), **FAST)
def soft_limited(kind):
    if current_run().attempt == 1:
        time.sleep(5)
    _effect(kind)


@reliable_task(stop=stop_after_attempt(3), **FAST)
def kills_worker(kind):
    _effect(kind)
    os.kill(os.getpid(), 9)


@reliable_task(atomic=True, stop=stop_after_attempt(20), wait=wait_fixed(0.2), time_limit=6)
def witness(n, sleep=0.0):
    """The fault suite's task: its witness row commits with SUCCEEDED, or not at all."""
    _effect("witness", n=n)
    if sleep:
        time.sleep(sleep)
    return n


@reliable_task(stop=stop_after_attempt(1), **FAST)
def fails_until_flag(kind):
    """Fails until an ``Effect`` row of kind ``flag:<kind>`` exists (an operator then retries)."""
    if not Effect.objects.filter(kind=f"flag:{kind}").exists():
        raise RuntimeError(f"no flag for {kind} yet")
    _effect(kind)
    return "flag seen"


@reliable_task(idempotency_key=lambda kind: f"log:{kind}")
def logs_with_own_logger(kind):
    """Logs through the project's own logger, as user code does."""
    logging.getLogger(__name__).info("user code says %s", kind)
    return kind


@reliable_task
def dispatches_child(kind):
    """Dispatches another run from inside a run."""
    return record.delay(f"{kind}-child").id


@reliable_task(atomic=True, stop=stop_after_attempt(3), wait=wait_fixed(0.2), time_limit=2)
def witness_hangs_first(n, hang=30.0):
    """A witness whose first attempt hangs past its hard time limit, after writing its effect."""
    _effect("witness", n=n)  # rolled back with the attempt the time limit kills
    if current_run().attempt == 1:
        time.sleep(hang)
    return n


def _witness_failing_first(n):
    _effect("witness", n=n)  # rolled back with attempt 1 (atomic): one witness row in the end
    if current_run().attempt == 1:
        raise ConnectionError(f"witness {n}: attempt 1 fails")
    return n


@reliable_task(atomic=True, stop=stop_after_attempt(3), wait=wait_fixed(4))
def witness_retry_4s(n):
    """The fault suite's retrying witness: attempt 1 fails, the retry waits 4 s."""
    return _witness_failing_first(n)


@reliable_task(atomic=True, stop=stop_after_attempt(3), wait=wait_fixed(8))
def witness_retry_8s(n):
    """The fault suite's retrying witness: attempt 1 fails, the retry waits 8 s."""
    return _witness_failing_first(n)


# -- secrets (sensitive=) and the result cap ------------------------------------------------------


def card_digest(card):
    """What the secret tasks record of a card: proof the exact value arrived, without storing it."""
    import hashlib

    return hashlib.sha256(str(card).encode()).hexdigest()


@reliable_task(sensitive=("card",), stop=stop_after_attempt(2), **FAST)
def charges_card(order_ref, card, fail=""):
    """``card`` is sensitive. fail="echo": every attempt raises with the card in its message;
    fail="once": attempt 1 does, attempt 2 succeeds."""
    _effect("charge", order_ref=order_ref, digest=card_digest(card))
    if fail == "echo" or (fail == "once" and current_run().attempt == 1):
        raise ValueError(f"card {card} declined for {order_ref}")
    return {"order": order_ref}


@reliable_task(queue="inspect", sensitive=("card", "extra"), stop=stop_after_attempt(1))
def parked_card(order_ref, card=None, **extra):
    """A sensitive task on a queue no worker consumes (operator actions, relay recovery)."""
    return order_ref


@reliable_task
def big_result(size):
    """Returns a string of ``size`` characters (over TASKKIT_MAX_RESULT_BYTES when large)."""
    _effect("big", size=size)
    return "x" * size


class BrokenStr(Exception):
    """An exception whose ``__str__`` itself raises."""

    def __str__(self):
        raise RuntimeError("__str__ of BrokenStr fails")


#: Exception texts no text column takes as they are (built in the worker: they never travel).
NASTY_TEXTS = {
    "surrogate": "undecodable \udc80 byte and a lone \ud800",
    "nul": "a NUL \x00 in the middle",
    "huge": "x" * 3_000_000,
}


@reliable_task(stop=stop_after_attempt(1))
def raises_nasty(kind):
    """Fails with an exception whose text cannot be written as it is (see NASTY_TEXTS)."""
    _effect(f"nasty-{kind}")
    if kind == "broken-str":
        raise BrokenStr()
    raise RuntimeError(NASTY_TEXTS[kind])


@reliable_task(stop=stop_after_attempt(2), **FAST)
def type_error_in_body(kind):
    """A TypeError raised by the body: an ordinary, retryable failure (not an undecodable call)."""
    _effect(kind)
    return len(None)


@reliable_task(adopt=False)
def not_adoptable(kind):
    """Refuses messages sent without taskkit."""
    _effect(kind)


@reliable_task(stop=stop_after_attempt(20), wait=wait_fixed(0.2), time_limit=6)
def soak_gate(n, release_path):
    """The soak's kill point: its attempt waits until the file ``release_path`` exists.

    The soak SIGKILLs the worker while this attempt waits, so every kill hits an attempt in
    flight whatever the machine's speed; the file is created after the kill, so the attempt
    the relay recovers completes. Not atomic: it holds no transaction (on SQLite an open write
    transaction would block every other run) and writes nothing.
    """
    while not os.path.exists(release_path):
        time.sleep(0.05)
    return n


# -- the TaskResult row taskkit writes, beside what Celery + django-celery-results write --------

OUTCOME_VALUE = {"answer": 42, "items": [1, "two", None], "text": "é"}


@reliable_task
def reliable_ok():
    return OUTCOME_VALUE


@reliable_task(stop=stop_after_attempt(1))
def reliable_fails():
    raise ValueError("it broke", 7)


@reliable_task(stop=stop_after_attempt(3), wait=wait_fixed(3600))
def reliable_retries_later():
    raise ValueError("it broke", 7)


@shared_task
def plain_ok():
    return OUTCOME_VALUE


@shared_task
def plain_fails():
    raise ValueError("it broke", 7)


@shared_task(bind=True)
def plain_retries_later(self):
    raise self.retry(exc=ValueError("it broke", 7), countdown=3600)


# -- what Flower shows (tests/integration/test_flower_agreement.py) -------------------------------


@reliable_task(stop=stop_after_attempt(10), wait=wait_fixed(0.05))
def fails_ten_times(kind):
    """Every attempt fails: 10 attempts, then FAILED (Flower must say 9 retries)."""
    raise ConnectionError(f"{kind}: attempt {current_run().attempt} failed")


@reliable_task(stop=stop_after_attempt(10), wait=wait_fixed(0.05))
def fails_three_times(kind, note=""):
    """Attempts 1-3 fail, attempt 4 succeeds."""
    if current_run().attempt <= 3:
        raise ConnectionError(f"{kind}: attempt {current_run().attempt} failed")
    return current_run().attempt


@reliable_task
def dispatches_tree(kind, depth):
    """Dispatches itself with ``depth - 1`` until 0: a chain root → child → grandchild."""
    if depth > 0:
        return dispatches_tree.delay(kind, depth - 1).id
    return None
