"""Runs that will not run, shown to Celery's tooling as Celery shows a revoked task.

A run the worker ends *Discarded* or *Cancelled*, or a message skipped because its run already
is (cancelled or discarded while the message waited), ends the Celery task with ``Ignore``, for
which Celery sends no event and stores no result: Flower and ``celery events`` would keep showing
the run ``STARTED``. :func:`announce` does what Celery does for a task it revoked
(``Request._announce_revoked``): the ``task-revoked`` event (not terminated, not expired) and
the result stored ``REVOKED`` through the task's backend (django-celery-results' ``TaskResult``,
written by Celery's backend: a rare path, not the ledger's one-statement end). ``REVOKED`` is
Celery's name for a task that will not run.

Like every task event, the event is sent only by a worker started with task events (``-E`` /
``worker_send_task_events``): the worker's setting is read when it starts
(``celery.signals.worker_init``, connected by ``TaskkitConfig.ready()``), before the pool's
children are forked, so each child knows it. Both are best effort, as Celery's own are: an error
is logged, and the run's state in the ledger is recorded already.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.app.task import get_actual_ignore_result

logger = logging.getLogger("taskkit.worker")

#: Whether this worker sends task events (set when it starts; ``None`` outside a worker).
_task_events: bool | None = None


def announce(task: Any, request: Any, reason: str | None = None) -> None:
    """Send ``task-revoked`` for ``request`` (the message of ``task`` being executed) if this
    worker sends task events; with ``reason``, also store the task's result as ``REVOKED``."""
    if task is None or request is None or not getattr(request, "id", None):
        return
    if getattr(request, "is_eager", False):
        return
    try:
        if reason is not None:
            ignored = get_actual_ignore_result(task, request)
            stored = not ignored or task.store_errors_even_if_ignored  # as Celery's Request does
            task.backend.mark_as_revoked(request.id, reason, request=request, store_result=stored)
        if _task_events and getattr(task, "send_events", True):
            task.send_event("task-revoked", terminated=False, signum=None, expired=False)
    except Exception:  # a monitor's view must never fail the run's bookkeeping
        logger.warning(
            "taskkit: could not show run %s as revoked to Celery's tooling; they may show it "
            "STARTED (the ledger has its state).",
            request.id,
            exc_info=True,
        )


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    global _task_events
    _task_events = bool(getattr(sender, "task_events", False))


def connect() -> None:
    """Called by ``TaskkitConfig.ready()``: learn the worker's task-events setting as it starts."""
    from celery.signals import worker_init

    worker_init.connect(_on_worker_init, weak=False, dispatch_uid="taskkit.worker.revoked")


__all__ = ["announce", "connect"]
