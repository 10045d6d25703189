"""A kombu Redis transport that drops a queue entry it cannot decode instead of dying.

kombu's Redis transport pops an entry off the queue (``BRPOP``) and decodes it as JSON before
anything can acknowledge or reject it. An entry that is not JSON (or not UTF-8) raises out of
the worker's event loop, and Celery stops the worker ("Unrecoverable error: JSONDecodeError");
the entry is already gone. One bad entry, pushed by anything that can reach Redis, takes a
worker down.

This transport is kombu's own, with one change: an entry that cannot be *decoded* is logged (with
the start of its raw text) and dropped, and the worker goes on to the next message. Nothing else
is caught: an error raised while a decoded message is being delivered is kombu's and Celery's
business and propagates as before. JSON that is not a Celery message is already handled by
Celery and kombu. A real run is never lost this way: a message only says "look at run X", and
the relay re-publishes any run whose message went missing.

taskkit uses it for Redis brokers without being asked: when Django starts, ``taskkit.worker.broker``
points kombu's ``redis`` and ``rediss`` aliases at it, so every ``redis://`` / ``rediss://``
broker URL gets it. Naming it explicitly also works::

    CELERY_BROKER_TRANSPORT = "taskkit.transport:Transport"   # Django settings, namespace CELERY

``CELERY_BROKER_TRANSPORT = "kombu.transport.redis:Transport"`` asks for kombu's own transport
(check ``taskkit.W010`` warns).
"""

from __future__ import annotations

import json
import logging
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis

logger = logging.getLogger("taskkit.transport")

#: What kombu's decode of a raw queue entry raises (``bytes.decode`` and ``json.loads``).
DECODE_ERRORS = (json.JSONDecodeError, UnicodeDecodeError)

_IN_DELIVERY = "_taskkit_raised_in_delivery"


def _raw_head(exc: BaseException, limit: int = 200) -> str:
    raw: Any = getattr(exc, "doc", None)  # JSONDecodeError: the text being parsed
    if raw is None:
        raw = getattr(exc, "object", None)  # UnicodeDecodeError: the bytes
    if raw is None:
        return "?"
    return repr(raw[:limit]) + (" …" if len(raw) > limit else "")


def _drop(exc: BaseException, where: str) -> None:
    logger.error(
        "taskkit: dropped an entry from a Redis queue (%s) that is not a JSON message "
        "(%s: %s); the worker goes on. The entry began: %s",
        where,
        type(exc).__name__,
        exc,
        _raw_head(exc),
    )


class Channel(kombu_redis.Channel):
    def _brpop_read(self, **options: Any) -> Any:
        try:
            return super()._brpop_read(**options)
        except DECODE_ERRORS as exc:
            if getattr(exc, _IN_DELIVERY, False):
                raise
            # kombu's own ``finally`` has reset the BRPOP state: the next poll issues a new BRPOP.
            _drop(exc, "BRPOP")
            return True

    def _get(self, queue: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super()._get(queue, *args, **kwargs)
        except DECODE_ERRORS as exc:
            _drop(exc, f"queue {queue!r}")
            raise Empty() from None  # kombu's poller asks again on the next cycle


class Transport(kombu_redis.Transport):
    Channel = Channel

    def _deliver(self, message: Any, queue: Any) -> None:
        try:
            super()._deliver(message, queue)
        except DECODE_ERRORS as exc:
            # raised by a consumer of a decoded message, not by decoding the entry: not ours
            setattr(exc, _IN_DELIVERY, True)
            raise


__all__ = ["DECODE_ERRORS", "Channel", "Transport"]
