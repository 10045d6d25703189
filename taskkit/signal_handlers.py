"""taskkit's default logging, connected to its own signals (see ``taskkit.signals``).

One line per transition on the ``taskkit.runs`` logger: dispatched (DEBUG), started (INFO),
retrying (WARNING, with the delay and the exception), succeeded (INFO, with the duration), failed
(ERROR with the exception's traceback as ``exc_info``, the way ``logger.exception`` logs, so error
trackers group it) and discarded (WARNING). Every record carries ``run_id``, ``task_name`` and
``attempt`` as attributes, also when logged outside the attempt (a lost child, an operator).
Connected by ``TaskkitConfig.ready()``; silence or reroute the logger in ``LOGGING``.
"""

from __future__ import annotations

import logging
from typing import Any

from . import signals

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
)


def connect() -> None:
    """Connect the default logging (idempotent: each handler has a ``dispatch_uid``)."""
    for signal, handler in HANDLERS:
        signal.connect(handler, dispatch_uid=f"taskkit.signal_handlers.{handler.__name__}")
