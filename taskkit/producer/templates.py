"""Message templates: the Redis message Celery builds for a task, built once and copied per run.

taskkit's messages carry no arguments (the run holds them): every message of a task with the same
publish options is the same bytes apart from a few per-run fields (the run id as task and
correlation id, the monitor headers, kombu's delivery tag). Building one through Celery and kombu
(``apply_async``: routing, the message, a fresh Redis client) takes about 0.4 ms on the bench
machine; a publish that copies a template and sends it with one ``LPUSH`` about 0.15 ms.

- ``Cloner`` makes the copies of one encoded message (used by the bulk pipelines too).
- ``single_send`` sends one run's message from a template, building the template on the first
  publish of a (task, options, process), through Celery with the delivery intercepted. A template
  is kept one second at most (``MAX_AGE``), and dropped when the app's producer pool is replaced
  (a new broker URL), when kombu closes the channel it was built on, or when a send through it
  fails, so a change of routing reaches it quickly.

A template is used only where a copy is exactly what Celery would send: the Redis transport, no
countdown, ETA or expiry, no eager mode, no task-sent events, no publish signal receivers, no
router function (it could route each call differently), one queue without an expiry, task
protocol 2. Anywhere else the publisher sends through Celery as before. The copy's ``reply_to``
is the sending thread's (Celery's ``thread_oid``, where the ``rpc://`` backend replies).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import celery

from ..core.headers import MessageHeaders

#: Seconds a template is used before it is built again through Celery.
MAX_AGE = 1.0

#: The fields of a message that differ from run to run: (part of the message, key). Celery
#: also copies ``argsrepr`` / ``kwargsrepr`` into the properties (an ``apply_async`` option it
#: passes on to kombu), so they are replaced there too when present.
_PER_RUN_FIELDS = (
    ("headers", "id"),
    ("headers", "root_id"),
    ("headers", "parent_id"),
    ("headers", "argsrepr"),
    ("headers", "kwargsrepr"),
    ("headers", "retries"),
    ("properties", "correlation_id"),
    ("properties", "delivery_tag"),
    ("properties", "argsrepr"),
    ("properties", "kwargsrepr"),
    ("properties", "reply_to"),
)


class Cloner:
    """Copies of one encoded message with the per-run fields (``_PER_RUN_FIELDS``) replaced: the
    message is encoded once with a marker in each field present, made a format string at the
    markers, and each copy is that string filled with the run's values (JSON-encoded).

    Raises ``ValueError`` for a message without the run id in its headers and properties (task
    protocol 1): its copies would all carry the first run's id."""

    def __init__(self, message: dict[str, Any]) -> None:
        from kombu.utils.json import dumps

        if "id" not in message.get("headers", {}) or "correlation_id" not in message.get(
            "properties", {}
        ):
            raise ValueError("not a task protocol 2 message: no id header / correlation id")
        self.first = dumps(message)
        self.reply_to: str | None = message["properties"].get("reply_to")
        marked = {**message, "headers": dict(message["headers"])}
        marked["properties"] = dict(message["properties"])
        markers: dict[int, str] = {}
        for index, (part, key) in enumerate(_PER_RUN_FIELDS):
            if key in marked[part] and (key != "reply_to" or isinstance(self.reply_to, str)):
                marker = f"\x00taskkit-{index}\x00"
                marked[part][key] = marker
                markers[index] = json.dumps(marker)
        template = dumps(marked)
        found = sorted((template.index(marker), index) for index, marker in markers.items())
        #: positions in ``_PER_RUN_FIELDS`` of the fields, in the order the message holds them
        self.order = [index for _, index in found]
        pieces: list[str] = []
        at = 0
        for position, index in found:
            pieces.append(template[at:position].replace("{", "{{").replace("}", "}}"))
            at = position + len(markers[index])
        pieces.append(template[at:].replace("{", "{{").replace("}", "}}"))
        self.format = "{}".join(pieces).format

    def __call__(
        self, run_id: Any, shown: MessageHeaders | None, reply_to: str | None = None
    ) -> str:
        """The message of ``run_id``; ``reply_to`` (default: the first message's) is the
        sending thread's reply queue."""
        text = _quote(str(run_id))
        if shown is None:
            root, parent, args, kwargs, retries = text, "null", '"()"', '"{}"', "0"
        else:
            root = _quote(shown.root_id) if shown.root_id else text
            parent = _quote(shown.parent_id) if shown.parent_id else "null"
            args, kwargs = _quote(shown.argsrepr), _quote(shown.kwargsrepr)
            retries = str(int(shown.retries))
        # in the order of _PER_RUN_FIELDS
        values = (
            text,
            root,
            parent,
            args,
            kwargs,
            retries,
            text,
            f'"{uuid.uuid4()}"',
            args,
            kwargs,
            _quote(reply_to or self.reply_to or ""),
        )
        return self.format(*[values[index] for index in self.order])


def _quote(text: str) -> str:
    """``text`` as a JSON string, as kombu's encoder writes it (ASCII, escaped)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'  # nothing to escape (run ids, most argument texts)
    return json.dumps(text)


def can_clone(app: celery.Celery) -> bool:
    """Whether messages may be copies of one built by Celery, ids apart: nothing per message is
    asked of Celery (no task-sent events, no publish signal receivers)."""
    from celery import signals

    if app.conf.task_send_sent_event:
        return False
    return not (
        signals.before_task_publish.receivers
        or signals.after_task_publish.receivers
        or signals.task_sent.receivers  # deprecated, still sent by Celery when connected
    )


def _static_routes(routes: Any) -> bool:
    """Whether Celery's router (``app.amqp.router.routes``, built once from ``task_routes``)
    routes every call of a task alike: mapping routes only (a router function may route each
    call differently)."""
    from celery.app.routes import MapRoute

    return all(isinstance(route, MapRoute) for route in routes)


@dataclass
class _Template:
    #: The app's producer pool when built: another one means another broker.
    pool: Any
    built: float
    #: The Redis list the messages go to; ``None``: sent through Celery (cannot be copied).
    key: str | None = None
    clone: Cloner | None = None
    client: Any = None
    #: The kombu channel whose connection pool ``client`` uses: closed, the template is stale.
    channel: Any = None

    def usable(self, pool: Any, now: float) -> bool:
        if self.pool is not pool or now - self.built > MAX_AGE:
            return False
        channel = self.channel
        return channel is None or (
            not channel.closed and getattr(channel, "_pool", None) is self.client.connection_pool
        )


_templates: dict[tuple[Any, ...], _Template] = {}
# A forked child publishes on its own connections, built afresh.
os.register_at_fork(after_in_child=_templates.clear)

#: Stands for the run id while a template is built (the message is never delivered).
_PLACEHOLDER = "00000000-0000-4000-8000-000000000000"
_PLACEHOLDER_HEADERS = MessageHeaders(
    argsrepr="()", kwargsrepr="{}", root_id=None, parent_id=None, retries=0
)


def single_send(
    app: celery.Celery,
    name: str,
    run_id: Any,
    publish_options: dict[str, Any],
    shown: MessageHeaders | None,
    build: Any,
) -> bool:
    """Send the message of ``run_id`` from the template of (``name``, ``publish_options``);
    ``False`` if no template applies (the caller sends through Celery). An error while building
    the template or pushing the copy is raised: nothing is known sent, and the caller counts it
    as the first attempt of its retry policy.

    ``build(run_id, producer, shown)`` sends one message through Celery on ``producer``, without
    retrying; it is called with a placeholder run and the delivery intercepted to make the
    template.
    """
    if "countdown" in publish_options or "eta" in publish_options:
        return False  # the message carries its own time
    if app.conf.task_always_eager or not can_clone(app):
        return False
    if not _static_routes(app.amqp.router.routes):
        return False
    pool = app.pool
    key = (id(app), name, tuple(sorted(publish_options.items())), shown is not None, os.getpid())
    try:
        template = _templates.get(key)
    except TypeError:  # an option that is not a plain value (a kombu Queue object)
        return False
    now = time.monotonic()
    if template is None or not template.usable(pool, now):
        _forget_stale(now)
        built = _build(app, pool, now, shown, build)
        if built is None:
            return False
        template = _templates[key] = built
    if template.key is None or template.clone is None:
        return False
    try:
        template.client.lpush(template.key, template.clone(run_id, shown, app.thread_oid))
    except Exception as exc:
        if _pool_exhausted(exc):
            return False  # the broker is fine: Celery sends it on a connection of its own
        _templates.pop(key, None)  # built again, through Celery, next time
        raise
    return True


def _forget_stale(now: float) -> None:
    for key in [k for k, t in _templates.items() if now - t.built > MAX_AGE]:
        _templates.pop(key, None)


def _pool_exhausted(exc: Exception) -> bool:
    """Whether the channel's Redis connection pool had no connection left for this thread (more
    threads publishing at once than kombu's ``max_connections``): not a broker failure."""
    import redis

    exhausted = getattr(redis.exceptions, "MaxConnectionsError", None)
    if exhausted is not None and isinstance(exc, exhausted):
        return True
    return isinstance(exc, redis.ConnectionError) and str(exc) == "Too many connections"


def intercepted(channel: Any, send: Callable[[], None]) -> list[tuple[str, dict[str, Any]]]:
    """The deliveries (queue, message) that ``send()`` makes on kombu's Redis ``channel``,
    intercepted: none of them reaches Redis."""
    captured: list[tuple[str, dict[str, Any]]] = []

    def capture(queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        captured.append((queue, message))

    channel._put = capture
    try:
        send()
    finally:
        del channel._put  # back to the class's method
    return captured


def copyable(channel: Any, captured: list[tuple[str, dict[str, Any]]]) -> tuple[str, Cloner] | None:
    """The Redis list and the ``Cloner`` of the one delivery in ``captured``, or ``None`` if its
    copies would not be what kombu sends: more than one delivery (a queue bound twice, a fanout),
    a queue with an expiry (kombu sets it again on each message), task protocol 1."""
    expires = getattr(channel, "_expires", None) or {}
    if len(captured) != 1 or captured[0][0] in expires:
        return None
    queue, message = captured[0]
    try:
        clone = Cloner(message)
    except ValueError:
        return None
    priority = channel._get_message_priority(message, reverse=False)
    return channel._q_for_pri(queue, priority), clone


def _build(
    app: celery.Celery, pool: Any, now: float, shown: MessageHeaders | None, build: Any
) -> _Template | None:
    """The template of the next message ``build`` sends, or ``None`` if the producer it was
    handed has no open channel yet (then Celery sends this message, connecting as bounded by the
    publish retry policy: nothing here may wait on a broker outside that policy)."""
    with app.producer_or_acquire() as producer:
        connection = getattr(producer, "__connection__", None)
        if connection is None or getattr(connection.transport, "driver_type", None) != "redis":
            return _Template(pool, now)  # not kombu's Redis transport
        if not (connection.connected and connection._default_channel):
            return None
        channel = producer.channel  # the connection's open channel: no round trip
        if not all(hasattr(channel, a) for a in ("_put", "_q_for_pri", "_create_client")):
            return _Template(pool, now)
        captured = intercepted(
            channel,
            lambda: build(_PLACEHOLDER, producer, None if shown is None else _PLACEHOLDER_HEADERS),
        )
        copy = copyable(channel, captured)
        if copy is None:
            return _Template(pool, now)
        headers, properties = captured[0][1]["headers"], captured[0][1]["properties"]
        if headers.get("eta") or headers.get("expires") or properties.get("expiration"):
            return _Template(pool, now)  # a time of its own (a task's default expires=)
        key, clone = copy
        return _Template(pool, now, key, clone, channel._create_client(), channel)


__all__ = ["MAX_AGE", "Cloner", "can_clone", "copyable", "intercepted", "single_send"]
