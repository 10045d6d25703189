"""taskkit's default logging, connected to its own signals (see ``taskkit.signals``).

One line per transition on the ``taskkit.runs`` logger: dispatched (DEBUG), started (INFO),
retrying (WARNING, with the delay and the exception), succeeded (INFO, with the duration), failed
(ERROR with the exception's traceback as ``exc_info``, the way ``logger.exception`` logs, so error
trackers group it) and discarded (WARNING). Every record carries ``run_id``, ``task_name`` and
``attempt`` as attributes, also when logged outside the attempt (a lost child, an operator).
Connected by ``TaskkitConfig.ready()``; silence or reroute the logger in ``LOGGING``.

A worker that receives a taskkit message for a task it does not know (Celery's ``task_unknown``:
a task renamed or removed by a deploy, or this worker older than the dispatcher) logs what becomes
of the run: nothing in the ledger changes, the relay publishes it again and fails it after
``TASKKIT_UNKNOWN_TASK_GRACE_SECONDS`` (see ``taskkit.relay``).
"""

from __future__ import annotations

import logging
from typing import Any

from ..core import signals

logger = logging.getLogger("taskkit.runs")


def _extra(task_name: str, run_id: Any, attempt: Any = None, **more: Any) -> dict[str, Any]:
    extra = {"task_name": task_name, "run_id": str(run_id), **more}
    if attempt is not None:
        extra["attempt"] = str(attempt)
    return extra


def on_dispatched(sender: str, run_id: Any, created: bool, **kwargs: Any) -> None:
    logger.debug(
        "taskkit: dispatched run %s of %s%s.",
        run_id,
        sender,
        "" if created else " (idempotency key matched an existing run)",
        extra=_extra(sender, run_id, taskkit_event="dispatched"),
    )


def on_started(sender: str, run_id: Any, attempt: int, worker: str, **kwargs: Any) -> None:
    logger.info(
        "taskkit: run %s of %s started attempt %d on %s.",
        run_id,
        sender,
        attempt,
        worker,
        extra=_extra(sender, run_id, attempt, taskkit_event="started", worker=worker),
    )


def on_retrying(
    sender: str,
    run_id: Any,
    attempt: int,
    exception: BaseException,
    delay: float,
    outcome: str,
    **kwargs: Any,
) -> None:
    logger.warning(
        "taskkit: attempt %d of run %s of %s ended %s (%s: %s); retrying in %.1f s.",
        attempt,
        run_id,
        sender,
        outcome,
        type(exception).__name__,
        exception,
        delay,
        extra=_extra(
            sender,
            run_id,
            attempt,
            taskkit_event="retrying",
            delay=delay,
            outcome=outcome,
            exception_type=_class_path(exception),
        ),
    )


def on_succeeded(sender: str, run_id: Any, attempt: int, duration: float, **kwargs: Any) -> None:
    logger.info(
        "taskkit: run %s of %s succeeded on attempt %d in %.3f s.",
        run_id,
        sender,
        attempt,
        duration,
        extra=_extra(sender, run_id, attempt, taskkit_event="succeeded", duration=duration),
    )


def on_failed(
    sender: str, run_id: Any, attempt: int, exception: BaseException, outcome: str, **kwargs: Any
) -> None:
    logger.error(
        "taskkit: run %s of %s failed after %d attempt(s): %s: %s",
        run_id,
        sender,
        attempt,
        type(exception).__name__,
        exception,
        exc_info=(type(exception), exception, exception.__traceback__),
        extra=_extra(
            sender,
            run_id,
            attempt,
            taskkit_event="failed",
            outcome=outcome,
            exception_type=_class_path(exception),
        ),
    )


def on_discarded(sender: str, run_id: Any, attempt: int, reason: str, **kwargs: Any) -> None:
    logger.warning(
        "taskkit: run %s of %s discarded after %d attempt(s): %s",
        run_id,
        sender,
        attempt,
        reason,
        extra=_extra(sender, run_id, attempt, taskkit_event="discarded", reason=reason),
    )


def on_cancelled(sender: str, run_id: Any, attempt: int, reason: str, **kwargs: Any) -> None:
    logger.warning(
        "taskkit: run %s of %s cancelled after %d attempt(s): %s",
        run_id,
        sender,
        attempt,
        reason,
        extra=_extra(sender, run_id, attempt, taskkit_event="cancelled", reason=reason),
    )


def _class_path(exc: BaseException) -> str:
    kind = type(exc)
    return f"{kind.__module__}.{kind.__qualname__}"


HANDLERS = (
    (signals.run_dispatched, on_dispatched),
    (signals.run_started, on_started),
    (signals.run_retrying, on_retrying),
    (signals.run_succeeded, on_succeeded),
    (signals.run_failed, on_failed),
    (signals.run_discarded, on_discarded),
    (signals.run_cancelled, on_cancelled),
)


def on_unknown_task(
    sender: Any = None, message: Any = None, name: Any = None, id: Any = None, **kwargs: Any
) -> None:
    """Celery's consumer met a message for a task this worker does not know.

    Celery has logged it, rejected the message (it is gone from the queue) and stored a
    ``NotRegistered`` failure for its id in the result backend, if there is one (overwritten when
    a worker that knows the task runs it). taskkit's ledger is not touched: the run stays QUEUED.
    """
    headers = getattr(message, "headers", None) or {}
    if not headers.get("taskkit_run"):
        return
    from ..core.conf import settings

    logger.warning(
        "taskkit: this worker does not know task %s; Celery rejected the message for run %s. "
        "The run stays QUEUED in the ledger: the relay publishes it again (a worker that knows "
        "the task, such as an old worker during a rolling deploy, runs it) and ends it FAILED "
        "if no relay has found the task registered for TASKKIT_UNKNOWN_TASK_GRACE_SECONDS "
        "(%.0fs). The result backend may show this id as FAILURE (NotRegistered) meanwhile.",
        name,
        id,
        settings.UNKNOWN_TASK_GRACE_SECONDS,
        extra=_extra(str(name), id, taskkit_event="unknown_task"),
    )


def connect() -> None:
    """Connect the default logging (idempotent: each handler has a ``dispatch_uid``)."""
    from celery import signals as celery_signals

    for signal, handler in HANDLERS:
        signal.connect(handler, dispatch_uid=f"taskkit.signal_handlers.{handler.__name__}")
    celery_signals.task_unknown.connect(
        on_unknown_task, dispatch_uid="taskkit.signal_handlers.on_unknown_task", weak=False
    )
