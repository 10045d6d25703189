"""A logging filter that stamps every record with the run being executed and the request behind it.

``RunContextFilter`` adds ``task_name``, ``run_id``, ``attempt``, ``idempotency_key``, ``queue``
and ``request_id`` to each record it sees: taskkit's, Celery's and the project's own. Inside an
attempt the values come from ``taskkit.current_run()``; in a web request only ``request_id`` is
set (by ``taskkit.middleware.RequestIdMiddleware``); elsewhere they are empty strings, so a
formatter can always name them. Attach it to *handlers*: a filter on a logger sees only the
records logged to that very logger, not those of its children.
"""

from __future__ import annotations

import logging

from celery._state import get_current_task

from ..core.context import current_request_id, current_run

#: The attributes the filter adds, in the order a formatter may list them.
FIELDS = ("task_name", "run_id", "attempt", "idempotency_key", "queue", "request_id")


class RunContextFilter(logging.Filter):
    """Add the run's and the request's context to every record; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in context_fields().items():
            # A record may carry its own values (``extra=``), e.g. from the worker's main process
            # reporting on a child's run: keep them.
            if getattr(record, name, None) in (None, ""):
                setattr(record, name, value)
        return True


def context_fields() -> dict[str, str]:
    """The values ``RunContextFilter`` adds, as strings ("" where there is none)."""
    run = current_run()
    if run is not None:
        return {
            "task_name": run.task_name,
            "run_id": str(run.run_id),
            "attempt": str(run.attempt),
            "idempotency_key": run.idempotency_key or "",
            "queue": run.queue,
            "request_id": run.request_id,
        }
    fields = dict.fromkeys(FIELDS, "")
    fields["request_id"] = current_request_id()
    task = get_current_task()
    if task is not None and getattr(task, "is_reliable", False):
        # Celery's own lines around an attempt (e.g. "Task … succeeded") are logged just after
        # the attempt's context is gone, while Celery still has the request: its id is the run id.
        fields["task_name"] = task.name or ""
        fields["run_id"] = str(task.request.id or "")
    return fields


__all__ = ["FIELDS", "RunContextFilter", "context_fields"]
