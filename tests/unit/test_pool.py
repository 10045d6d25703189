"""A prefork worker's result pipe read across a broker reconnect (``taskkit.worker.pool``).

Driven with kombu's real event loop (``Hub``), a real pipe and Celery's own ``ResultHandler``
methods: a result message is half read, the hub is reset and the pool registered again (what
Celery's event loop does when the broker connection drops), then the rest arrives.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
from collections.abc import Iterator
from types import GeneratorType, SimpleNamespace
from typing import Any

import pytest
from celery.concurrency.asynpool import AsynPool, ResultHandler
from kombu.asynchronous import Hub

from taskkit.worker import pool as taskkit_pool

pytestmark = pytest.mark.timeout(30)


def frame(message: object) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return struct.pack(">i", len(body)) + body


def fire(hub: Hub, fd: int) -> None:
    """What the hub does when ``fd`` is readable."""
    callback, args = hub.readers[fd]
    if isinstance(callback, GeneratorType):
        with contextlib.suppress(StopIteration):
            next(callback)
    else:
        callback(*args)


class Pipe:
    """One child's result pipe as the pool's main process sees it, plus the handler reading it."""

    def __init__(self, make_process_result: Any) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.queue = object()  # stands for the child's outqueue
        self.received: list[object] = []
        self.handler = ResultHandler.__new__(ResultHandler)
        self.handler.fileno_to_outq = {self.read_fd: self.queue}
        self.handler.on_state_change = self.received.append
        self.make_process_result = make_process_result
        # what AsynPool.register_with_event_loop reads
        self.pool = SimpleNamespace(
            _result_handler=self.handler, _fileno_to_outq=self.handler.fileno_to_outq
        )

    def register(self, hub: Hub) -> None:
        """``AsynPool.register_with_event_loop``'s part for result pipes."""
        self.handler.handle_event = self.make_process_result(self.handler, hub)
        hub.add_reader(self.read_fd, self.handler.handle_event, self.read_fd)

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


@pytest.fixture
def hub() -> Iterator[Hub]:
    loop = Hub()
    yield loop
    loop.close()


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    assert taskkit_pool.keep_partial_results()


#: Inside the first message's body, bytes that read as a frame of their own: a 3-byte length,
#: then a "pickle" starting with \x01 (the error seen in fault scenario 10).
LOOKS_LIKE_A_FRAME = b"\x00\x00\x00\x03\x01\x02\x03"
FIRST = ("first", LOOKS_LIKE_A_FRAME)
SECOND = ("second", 2)


def reconnect_mid_message(pipe: Pipe, hub: Hub, *, restore: bool) -> None:
    """Part of a message read, the hub reset and the pool registered again, then the rest."""
    first, second = frame(FIRST), frame(SECOND)
    half = first.index(LOOKS_LIKE_A_FRAME)
    pipe.register(hub)
    os.write(pipe.write_fd, first[:half])
    fire(hub, pipe.read_fd)
    assert pipe.received == []  # half a message: the reader waits for the rest
    hub.reset()  # Celery's event loop on a broker connection error
    pipe.register(hub)  # the consumer starts again
    if restore:
        taskkit_pool._restore_partial_reads(pipe.pool, hub)
    os.write(pipe.write_fd, first[half:] + second)
    fire(hub, pipe.read_fd)
    fire(hub, pipe.read_fd)


def test_stock_celery_reads_the_rest_of_a_half_read_message_as_a_new_one(hub: Hub) -> None:
    """Why the change exists: Celery's own reader loses its place and the main process dies.
    If this ever passes without raising, Celery has fixed it and taskkit's change can go."""
    pipe = Pipe(getattr(ResultHandler, taskkit_pool.STOCK))
    try:
        with pytest.raises(pickle.UnpicklingError, match="invalid load key, '\\\\x01'"):
            reconnect_mid_message(pipe, hub, restore=False)
    finally:
        pipe.close()


def test_a_half_read_message_survives_a_reconnect(hub: Hub) -> None:
    """With taskkit's reader the message read across the reset arrives whole, and so does the
    next one."""
    pipe = Pipe(ResultHandler._make_process_result)
    try:
        reconnect_mid_message(pipe, hub, restore=False)
        assert pipe.received == [FIRST, SECOND]
    finally:
        pipe.close()


def test_the_half_read_message_is_back_on_the_hub_after_registering_again(hub: Hub) -> None:
    """As before the reset, the hub holds the generator reading the message (Celery's shutdown
    finishes a partial read from there), and the message still arrives whole."""
    pipe = Pipe(ResultHandler._make_process_result)
    try:
        reconnect_mid_message(pipe, hub, restore=True)
        assert pipe.received == [FIRST, SECOND]
        assert hub.readers[pipe.read_fd][0] == pipe.handler.handle_event
    finally:
        pipe.close()


def test_a_half_read_message_of_a_replaced_child_is_not_resumed(hub: Hub) -> None:
    """A child that died leaves its half-read message behind: a new child whose pipe got the
    same descriptor number is read from the start of its own message."""
    pipe = Pipe(ResultHandler._make_process_result)
    try:
        pipe.register(hub)
        os.write(pipe.write_fd, frame(("lost", 0))[:5])
        fire(hub, pipe.read_fd)
        pipe.handler.fileno_to_outq[pipe.read_fd] = object()  # a new child, same fd number
        hub.reset()
        pipe.register(hub)
        taskkit_pool._restore_partial_reads(pipe.pool, hub)
        os.write(pipe.write_fd, frame(("new child", 1)))
        fire(hub, pipe.read_fd)
        assert pipe.received == [("new child", 1)]
    finally:
        pipe.close()


def test_installed_once_on_celerys_pool() -> None:
    """Idempotent, and in place for a worker's pool (``worker_init`` installs it)."""
    assert taskkit_pool.keep_partial_results()
    assert ResultHandler._make_process_result is taskkit_pool._make_process_result
    assert AsynPool._taskkit_keeps_partial_results is True
