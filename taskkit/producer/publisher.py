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

import datetime
import logging
from typing import Any

import celery
from django.utils import timezone

from ..core import ledger
from ..core.conf import settings
from ..core.db import db_alias
from ..core.spec import PUBLISH_OPTIONS, RUN_HEADER, TaskSpec

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
) -> bool:
    """Publish one message for ``run_id``; ``True`` if the broker took it."""
    return bool(publish_many(spec, [run_id], options, not_before))


#: Whether a delay is too long for an ETA message and waits in the ledger instead.
deferred_to_relay = ledger.deferred_to_relay


def publish_new(
    spec: TaskSpec, run_id: Any, options: dict[str, Any], not_before: datetime.datetime | None
) -> None:
    """The on-commit callback of a dispatch."""
    if deferred_to_relay(not_before):
        return  # stays PENDING; the relay publishes it when due
    if publish(spec, run_id, options, not_before):
        try:
            ledger.mark_queued([run_id], not_before)
        except Exception:
            logger.exception("taskkit: run %s was published but could not be marked QUEUED", run_id)


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
    for run in runs.only("id", "task_name", "options", "not_before", "state").iterator():
        spec = spec_for(run.task_name)
        if spec is None:
            logger.error(
                "taskkit: run %s names task %s, which this process does not know; it stays %s.",
                run.pk,
                run.task_name,
                run.state,
            )
            continue
        if publish(spec, run.pk, run.options, run.not_before):
            sent += 1
            ledger.mark_queued([run.pk], run.not_before)
    return sent


def publish_many(
    spec: TaskSpec,
    run_ids: list[Any],
    options: dict[str, Any],
    not_before: datetime.datetime | None = None,
) -> list[Any]:
    """Publish one message per run over one broker connection; returns the ids that went out.

    One producer is acquired for the whole batch, so the connection and channel are set up once.
    The first failed publish ends the batch: the broker is down, and waiting out the publish
    timeout once per remaining run would hold the caller for minutes. The runs not sent stay in
    the ledger for the relay, as a failed single publish does.
    """
    _ensure_timeouts(spec.app)
    publish_options = _publish_options(options, not_before)
    retry_policy = _retry_policy()
    sent: list[Any] = []
    try:
        with spec.app.producer_or_acquire() as producer:
            for run_id in run_ids:
                spec.send(
                    args=(),
                    kwargs={},
                    task_id=str(run_id),
                    producer=producer,
                    headers={RUN_HEADER: "1"},
                    retry=True,
                    retry_policy=retry_policy,
                    **publish_options,
                )
                sent.append(run_id)
    except Exception as exc:
        logger.warning(
            "taskkit: could not publish %d of %d runs of %s (%s: %s); they stay in the ledger "
            "for the relay to publish.",  # e.g. "could not publish 1 of 1 runs"
            len(run_ids) - len(sent),
            len(run_ids),
            spec.name,
            type(exc).__name__,
            exc,
        )
    return sent


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
) -> list[Any]:
    """``publish_many`` for a task this process does not know (``app.send_task``).

    The message is the one ``publish_many`` sends (task id = run id, the ``taskkit_run`` header,
    the run's publish options), so a worker that does know the name (an old worker during a
    rolling deploy) runs it as usual. Returns the ids that went out.
    """
    _ensure_timeouts(app)
    publish_options = _publish_options(options, not_before)
    sent: list[Any] = []
    try:
        with app.producer_or_acquire() as producer:
            for run_id in run_ids:
                app.send_task(
                    task_name,
                    args=(),
                    kwargs={},
                    task_id=str(run_id),
                    producer=producer,
                    headers={RUN_HEADER: "1"},
                    retry=True,
                    retry_policy=_retry_policy(),
                    add_to_parent=False,
                    **publish_options,
                )
                sent.append(run_id)
    except Exception as exc:
        logger.warning(
            "taskkit: could not publish %d of %d runs of %s by name (%s: %s); they stay in the "
            "ledger for the relay to publish.",
            len(run_ids) - len(sent),
            len(run_ids),
            task_name,
            type(exc).__name__,
            exc,
        )
    return sent


def publish_new_many(
    spec: TaskSpec,
    run_ids: list[Any],
    options: dict[str, Any],
    not_before: datetime.datetime | None,
) -> None:
    """The on-commit callback of a bulk dispatch: publish, then PENDING → QUEUED in one UPDATE."""
    if deferred_to_relay(not_before):
        return  # they stay PENDING; the relay publishes them when due
    sent = publish_many(spec, run_ids, options, not_before)
    if not sent:
        return
    try:
        ledger.mark_queued(sent, not_before)
    except Exception:
        logger.exception("taskkit: %d runs were published but not marked QUEUED", len(sent))
