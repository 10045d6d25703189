"""Keeps Celery's prefork pool from reading a result message twice after a broker reconnect.

The prefork worker's main process reads each child's results from a pipe: a 4-byte length, then
a pickled body. A message can arrive in pieces; Celery then keeps reading it with a generator
that it registers on the event loop (``ResultHandler._recv_message``), and nowhere else. When the
broker connection drops, Celery's event loop resets the hub (``hub.reset()`` clears every
reader) and registers the pool again with a fresh reader per pipe. A message that was half read
at that moment is then read afresh from the middle of its body: those bytes are taken for a
length, and the main process dies with ``Unrecoverable error: UnpicklingError("invalid load key
…")`` — the whole worker stops on a broker blip (seen in taskkit's fault scenario 10 on a busy
machine, Celery 5.7). Nothing is lost with taskkit (the run's lease expires and the relay
recovers it), but the on-call person finds a dead worker.

:func:`keep_partial_results` changes two methods of Celery's ``AsynPool`` so that the reading
state survives: the result reader also remembers a half-read message per pipe (with the pipe it
belongs to) and resumes it, and re-registering the pool puts those generators back on the hub.
Between reconnects Celery behaves exactly as before. It is installed when a worker starts
(``celery.signals.worker_init``, connected by ``TaskkitConfig.ready()``); if Celery's pool no
longer has the methods it wraps, it logs a warning and changes nothing.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Generator
from typing import Any

logger = logging.getLogger("taskkit.worker")

_PATCHED = "_taskkit_keeps_partial_results"
#: Where the stock ``ResultHandler._make_process_result`` is kept once replaced.
STOCK = "_taskkit_stock_make_process_result"
#: Attribute of a ``ResultHandler``: fd -> (the pipe it was, the generator reading its message).
_PARTIAL = "_taskkit_partial_reads"


def _partial_reads(handler: Any) -> dict[int, tuple[Any, Generator[None, None, None]]]:
    partial = handler.__dict__.get(_PARTIAL)
    if partial is None:
        partial = handler.__dict__[_PARTIAL] = {}
    return partial


def _make_process_result(handler: Any, hub: Any) -> Callable[[int], None]:
    """Celery's ``ResultHandler._make_process_result``, resuming a half-read message."""
    fileno_to_outq = handler.fileno_to_outq
    on_state_change = handler.on_state_change
    add_reader = hub.add_reader
    remove_reader = hub.remove_reader
    recv_message = handler._recv_message
    partial = _partial_reads(handler)

    def on_result_readable(fileno: int) -> None:
        queue = fileno_to_outq.get(fileno)
        held = partial.pop(fileno, None)
        if queue is None:  # process gone
            remove_reader(fileno)
            return
        it = None
        if (
            held is not None
            and held[0] is queue
            and inspect.getgeneratorstate(held[1]) != (inspect.GEN_CLOSED)
        ):
            it = held[1]  # the hub was reset mid-message: go on where the reading stopped
        if it is None:
            it = recv_message(add_reader, fileno, on_state_change)
        try:
            next(it)
        except StopIteration:
            pass
        except (OSError, EOFError):
            remove_reader(fileno)
        else:
            partial[fileno] = (queue, it)
            add_reader(fileno, it)

    return on_result_readable


def _restore_partial_reads(pool: Any, hub: Any) -> None:
    """Put the generators of half-read messages back on the hub after Celery registered a fresh
    reader for every pipe (as before the reset: ``AsynPool._finish_partial_read`` looks there)."""
    handler = getattr(pool, "_result_handler", None)
    if handler is None:
        return
    partial = _partial_reads(handler)
    for fd, (queue, it) in list(partial.items()):
        if pool._fileno_to_outq.get(fd) is not queue or (
            inspect.getgeneratorstate(it) == inspect.GEN_CLOSED
        ):
            del partial[fd]
        else:
            hub.add_reader(fd, it)


def keep_partial_results() -> bool:
    """Install the change on Celery's ``AsynPool`` (once per process). True when installed."""
    try:
        from celery.concurrency import asynpool
    except ImportError:  # pragma: no cover - Celery is a dependency
        return False
    handler_cls = asynpool.ResultHandler
    pool_cls = asynpool.AsynPool
    if getattr(pool_cls, _PATCHED, False):
        return True
    if not all(
        callable(getattr(cls, name, None))
        for cls, name in (
            (handler_cls, "_make_process_result"),
            (handler_cls, "_recv_message"),
            (pool_cls, "register_with_event_loop"),
        )
    ):
        logger.warning(
            "taskkit: this Celery's prefork pool has changed; the fix that keeps a half-read "
            "result message across a broker reconnect is not installed"
        )
        return False
    register = pool_cls.register_with_event_loop

    @functools.wraps(register)
    def register_with_event_loop(self: Any, hub: Any) -> Any:
        result = register(self, hub)
        _restore_partial_reads(self, hub)
        return result

    setattr(handler_cls, STOCK, handler_cls._make_process_result)
    handler_cls._make_process_result = _make_process_result
    pool_cls.register_with_event_loop = register_with_event_loop
    setattr(pool_cls, _PATCHED, True)
    return True


def _on_worker_init(**_: Any) -> None:
    keep_partial_results()


def connect() -> None:
    """Called by ``TaskkitConfig.ready()``: install the change when a Celery worker starts."""
    from celery.signals import worker_init

    worker_init.connect(_on_worker_init, weak=False, dispatch_uid="taskkit.worker.pool")


__all__ = ["connect", "keep_partial_results"]
