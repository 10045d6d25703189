"""Sends the broker message that says "look at run X", with bounded time and no exceptions.

A publish either succeeds quickly or is given up quickly: socket timeouts and a short retry
policy keep a dead or blackholed broker from hanging the caller. A failed publish is logged and
leaves the run in the ledger (PENDING or RETRYING) for the relay; it never raises into the caller,
whose data has already committed.

``publish_many`` is the one publish point: every message taskkit sends for a known task goes
through it (``publish``, dispatch, bulk dispatch, operator retries, the relay, and the worker's
retries through ``TaskSpec.publish``), so ``taskkit.testing.capture()`` replaces it alone.
Tasks are known here as ``taskkit.core.spec.TaskSpec``; this module never imports
``taskkit.task`` or the worker side.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import celery
from django.utils import timezone

from ..core import ledger
from ..core.conf import settings
from ..core.db import db_alias
from ..core.headers import MessageHeaders, for_run
from ..core.spec import PUBLISH_OPTIONS, RUN_HEADER, TaskSpec
from . import templates

logger = logging.getLogger("taskkit.publish")

_configured_apps: set[int] = set()


def _ensure_timeouts(app: celery.Celery) -> None:
    """Give the app's broker connections socket timeouts unless the project set its own."""
    if id(app) in _configured_apps:
        return
    timeout = settings.PUBLISH_TIMEOUT
    options = app.conf.broker_transport_options
    if options is None:
        options = app.conf.broker_transport_options = {}
    options.setdefault("socket_connect_timeout", timeout)
    options.setdefault("socket_timeout", max(timeout, 5.0))
    _configured_apps.add(id(app))


def publish(
    spec: TaskSpec,
    run_id: Any,
    options: dict[str, Any],
    not_before: datetime.datetime | None = None,
    headers: MessageHeaders | None = None,
) -> bool:
    """Publish one message for ``run_id``; ``True`` if the broker took it."""
    shown = {run_id: headers} if headers is not None else None
    return bool(publish_many(spec, [run_id], options, not_before, shown))


#: Whether a delay is too long for an ETA message and waits in the ledger instead.
deferred_to_relay = ledger.deferred_to_relay


def publish_new(
    spec: TaskSpec,
    run_id: Any,
    options: dict[str, Any],
    not_before: datetime.datetime | None,
    queued_at: datetime.datetime | None = None,
    headers: MessageHeaders | None = None,
) -> None:
    """The on-commit callback of a dispatch: publish; nothing more is written unless the publish
    fails, in which case the run (written QUEUED at ``queued_at``) goes back to PENDING."""
    if deferred_to_relay(not_before):
        return  # stays PENDING; the relay publishes it when due
    if not publish(spec, run_id, options, not_before, headers) and queued_at is not None:
        _mark_unsent([run_id], queued_at)


def _mark_unsent(run_ids: list[Any], queued_at: datetime.datetime) -> None:
    try:
        ledger.mark_unsent(run_ids, queued_at)
    except Exception:  # the relay still publishes them at their deadline
        logger.exception(
            "taskkit: %d run(s) were not published and could not be put back to PENDING; the "
            "relay publishes them at their deadline all the same.",
            len(run_ids),
        )


def task_for(name: str, app: celery.Celery | None = None) -> Any:
    """The registered reliable task called ``name`` (a Celery task with a ``spec``), importing
    the project's task modules; ``None`` if there is none."""
    app = app or celery.current_app
    if name not in app.tasks:
        app.loader.import_default_modules()
    task = app.tasks.get(name)
    return task if getattr(task, "is_reliable", False) else None


def spec_for(name: str, app: celery.Celery | None = None) -> TaskSpec | None:
    """The spec of the registered reliable task called ``name``, or ``None``."""
    task = task_for(name, app)
    return None if task is None else task.spec


def publish_runs(run_ids: list[Any]) -> int:
    """Publish one message for each run (PENDING ones become QUEUED); returns how many went out."""
    from ..models import TaskRun

    sent = 0
    runs = TaskRun.objects.using(db_alias()).filter(pk__in=run_ids)
    fields = ("id", "task_name", "options", "not_before", "state", "args", "kwargs", "attempts")
    for run in runs.only(*fields).iterator():
        spec = spec_for(run.task_name)
        if spec is None:
            logger.error(
                "taskkit: run %s names task %s, which this process does not know; it stays %s.",
                run.pk,
                run.task_name,
                run.state,
            )
            continue
        headers = for_run(run.args, run.kwargs, run.options, run.attempts)
        if publish(spec, run.pk, run.options, run.not_before, headers):
            sent += 1
            ledger.mark_queued([run.pk], run.not_before)
    return sent


#: Messages per Redis pipeline (one round trip each): a failed pipeline leaves at most this many
#: runs whose delivery is unknown (they are left for the relay, never counted as sent).
PIPELINE_SIZE = 1000


def publish_many(
    spec: TaskSpec,
    run_ids: list[Any],
    options: dict[str, Any],
    not_before: datetime.datetime | None = None,
    headers: Mapping[Any, MessageHeaders] | None = None,
) -> list[Any]:
    """Publish one message per run over one broker connection; returns the ids that went out.

    ``headers`` gives each run's monitor-facing headers (``taskkit.core.headers``: what Flower
    shows as its arguments, root, parent and retries); a run without gets Celery's defaults.

    One producer is acquired for the whole batch. On Redis the messages are built by Celery
    (``apply_async``) and kombu as usual, and sent in pipelines of ``PIPELINE_SIZE`` (one round
    trip each; kombu's ``Producer.batch``); other transports publish one by one. The first failed
    publish or pipeline ends the batch: the broker is down, and waiting out the publish timeout
    once per remaining run would hold the caller for minutes. The runs not known to be sent stay
    in the ledger for the relay, as a failed single publish does.
    """
    _ensure_timeouts(spec.app)
    publish_options = _publish_options(options, not_before)
    retry_policy = _retry_policy()

    def send_shown(
        run_id: Any, producer: Any, shown: MessageHeaders | None, retry: bool = True
    ) -> None:
        spec.send(
            args=(),
            kwargs={},
            task_id=str(run_id),
            producer=producer,
            headers={RUN_HEADER: "1"},
            retry=retry,
            retry_policy=retry_policy,
            **publish_options,
            **_shown(shown, run_id),
        )

    def send(run_id: Any, producer: Any) -> None:
        send_shown(run_id, producer, _header_of(headers, run_id))

    if len(run_ids) == 1:
        run_id = run_ids[0]
        try:
            if templates.single_send(
                spec.app,
                spec.name,
                run_id,
                publish_options,
                _header_of(headers, run_id),
                _built_outside_worker_task(send_shown),
            ):
                return [run_id]
        except Exception as exc:  # that was the first attempt: Celery retries, one time fewer
            if retry_policy["max_retries"] < 1:
                _given_up(spec.name, "", 1, f"{type(exc).__name__}: {exc}")
                return []
            retry_policy["max_retries"] -= 1
    return _send_all(spec.app, spec.name, run_ids, send, "", headers)


def _built_outside_worker_task(send_shown: Any) -> Any:
    """A template's ``build``: one message through Celery, no retries (a failure is the first
    attempt of the publish retry policy)."""

    def build(run_id: Any, producer: Any, shown: MessageHeaders | None) -> None:
        with _outside_worker_task():
            send_shown(run_id, producer, shown, retry=False)

    return build


def _header_of(headers: Mapping[Any, MessageHeaders] | None, run_id: Any) -> MessageHeaders | None:
    return headers.get(run_id) if headers else None


def _shown(shown: MessageHeaders | None, run_id: Any) -> dict[str, Any]:
    """The ``apply_async`` options that put ``shown`` on the message (none: Celery's own)."""
    return shown.publish_options(run_id) if shown is not None else {}


@contextlib.contextmanager
def _outside_worker_task() -> Iterator[None]:
    """Hide the task the worker is executing from Celery while publishing.

    Celery's ``send_task`` names the executing task as the parent (and its root as the root) of
    any message sent without both ids: a run re-publishing itself (a retry) would be its own
    parent. taskkit says who the parent is (``taskkit.core.headers``), so Celery must not guess.
    """
    from celery._state import _task_stack

    local = _task_stack._local
    stack = getattr(local, "stack", None)
    if not stack:
        yield
        return
    local.stack = []
    try:
        yield
    finally:
        local.stack = stack


def _send_all(
    app: celery.Celery,
    name: str,
    run_ids: list[Any],
    send: Any,
    how: str,
    headers: Mapping[Any, MessageHeaders] | None = None,
) -> list[Any]:
    sent: list[Any] = []
    try:
        with _outside_worker_task(), app.producer_or_acquire() as producer:
            for run_id in run_ids[:1]:
                # alone, so that connecting is bounded by the publish retry policy
                send(run_id, producer)
                sent.append(run_id)
            if len(run_ids) > 1 and _pipelines(producer):  # a single .delay() skips the checks
                cloning = templates.can_clone(app)
                for start in range(1, len(run_ids), PIPELINE_SIZE):
                    chunk = run_ids[start : start + PIPELINE_SIZE]
                    if not (cloning and _pipeline_clones(producer, chunk, send, headers)):
                        with _pipeline(producer, len(chunk)):
                            for run_id in chunk:
                                send(run_id, producer)
                    sent += chunk  # the pipeline was executed: Redis took every command
            else:
                for run_id in run_ids[1:]:
                    send(run_id, producer)
                    sent.append(run_id)
    except Exception as exc:
        _given_up(name, how, len(run_ids) - len(sent), f"{type(exc).__name__}: {exc}", len(run_ids))
    return sent


def _given_up(name: str, how: str, unsent: int, why: str, total: int | None = None) -> None:
    logger.warning(
        "taskkit: could not publish %d of %d runs of %s%s (%s); they stay in the ledger for the "
        "relay to publish.",  # e.g. "could not publish 1 of 1 runs"
        unsent,
        unsent if total is None else total,
        name,
        how,
        why,
    )


def _pipelines(producer: Any) -> bool:
    """Whether the producer's transport sends a batch in one round trip (kombu's Redis
    transport, kombu ≥ 5.7's ``Producer.batch``); others publish message by message."""
    if not hasattr(producer, "batch"):
        return False
    channel = producer.channel
    return callable(getattr(channel, "create_publish_batch", None)) and bool(
        getattr(channel, "supports_batch_publish", True)
    )


def _pipeline_clones(
    producer: Any,
    chunk: list[Any],
    send: Any,
    headers: Mapping[Any, MessageHeaders] | None = None,
) -> bool:
    """Send ``chunk`` in one pipeline: the first message is built, routed and encoded by Celery
    and kombu (``send``); the others are the same bytes with their own run id (the task id and
    correlation id), monitor headers (``headers``: argsrepr, kwargsrepr, root, parent, retries)
    and a fresh delivery tag, exactly what Celery would send for them. ``False`` (nothing sent)
    if the first message is not one plain ``LPUSH`` (a queue bound twice, or with an expiry):
    the caller then sends the chunk message by message."""
    channel = producer.channel
    captured = templates.intercepted(channel, lambda: send(chunk[0], producer))
    copy = templates.copyable(channel, captured)
    if copy is None:
        for queue, message in captured:  # deliver what was routed, as kombu would have
            channel._put(queue, message)
        return False
    key, clone = copy
    with channel.conn_or_acquire() as client:
        pipe = client.pipeline(transaction=False)
        pipe.lpush(key, clone.first)
        for run_id in chunk[1:]:
            pipe.lpush(key, clone(run_id, _header_of(headers, run_id)))
        pipe.execute()
    return True


@contextlib.contextmanager
def _pipeline(producer: Any, size: int) -> Iterator[None]:
    """kombu's ``Producer.batch`` for ``size`` messages, sent on exit in one pipeline.

    Messages are built and routed by Celery and kombu exactly as one by one (priority queues,
    the task-sent event when ``task_send_sent_event`` is on, which joins the same pipeline); the
    routing table of an exchange (one ``SMEMBERS``) is read once per pipeline instead of once per
    message. An exception, or a failed pipeline, raises out of the block: the caller counts none
    of its messages as sent.
    """
    channel = producer.channel
    tables: dict[str, Any] = {}
    read_table = channel.get_table

    def get_table(exchange: str) -> Any:
        if exchange not in tables:
            tables[exchange] = read_table(exchange)
        return tables[exchange]

    channel.get_table = get_table
    try:
        # room for every message's commands (a LPUSH, an event's PUBLISH, a queue's PEXPIREs)
        with producer.batch(max_size=size * 8 + 8):
            yield
    finally:
        del channel.get_table  # back to the class's method


def _publish_options(
    options: dict[str, Any], not_before: datetime.datetime | None
) -> dict[str, Any]:
    publish_options = {k: v for k, v in options.items() if k in PUBLISH_OPTIONS and v is not None}
    if not_before is not None:
        countdown = (not_before - timezone.now()).total_seconds()
        if countdown > 0:
            publish_options["countdown"] = countdown
    return publish_options


def _retry_policy() -> dict[str, Any]:
    return {
        "max_retries": settings.PUBLISH_MAX_RETRIES,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.5,
    }


def publish_many_by_name(
    app: celery.Celery,
    task_name: str,
    run_ids: list[Any],
    options: dict[str, Any],
    not_before: datetime.datetime | None = None,
    headers: Mapping[Any, MessageHeaders] | None = None,
) -> list[Any]:
    """``publish_many`` for a task this process does not know (``app.send_task``).

    The message is the one ``publish_many`` sends (task id = run id, the ``taskkit_run`` header,
    the run's publish options), so a worker that does know the name (an old worker during a
    rolling deploy) runs it as usual. Returns the ids that went out.
    """
    _ensure_timeouts(app)
    publish_options = _publish_options(options, not_before)
    retry_policy = _retry_policy()

    def send(run_id: Any, producer: Any) -> None:
        app.send_task(
            task_name,
            args=(),
            kwargs={},
            task_id=str(run_id),
            producer=producer,
            headers={RUN_HEADER: "1"},
            retry=True,
            retry_policy=retry_policy,
            add_to_parent=False,
            **publish_options,
            **_shown(_header_of(headers, run_id), run_id),
        )

    return _send_all(app, task_name, run_ids, send, " by name", headers)


def publish_new_many(
    spec: TaskSpec,
    run_ids: list[Any],
    options: dict[str, Any],
    not_before: datetime.datetime | None,
    queued_at: datetime.datetime | None = None,
    headers: Mapping[Any, MessageHeaders] | None = None,
) -> None:
    """The on-commit callback of a bulk dispatch: publish (pipelined on Redis); the runs the
    broker did not take go back to PENDING (written QUEUED at ``queued_at``)."""
    if deferred_to_relay(not_before):
        return  # they stay PENDING; the relay publishes them when due
    sent = publish_many(spec, run_ids, options, not_before, headers)
    if len(sent) < len(run_ids) and queued_at is not None:
        taken = set(sent)
        _mark_unsent([run_id for run_id in run_ids if run_id not in taken], queued_at)
