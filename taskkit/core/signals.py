"""taskkit's own Django signals, sent after the ledger records each transition.

Every signal is sent with ``sender`` = the task name (str) and keyword arguments ``run_id``
(UUID) and ``task_name``; the others are listed per signal. Receivers run in the process that
made the transition (the dispatching process for ``run_dispatched``, a worker otherwise) and must
not raise: an exception in a receiver is logged and swallowed (``send_robust``).
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

logger = logging.getLogger("taskkit.signals")

#: A dispatch wrote a run (``created`` False when an idempotency key matched). Extra: created.
run_dispatched = Signal()
#: A worker claimed the run and starts an attempt. Extra: attempt, worker.
run_started = Signal()
#: An attempt failed and another is scheduled. Extra: attempt, exception, delay, outcome.
run_retrying = Signal()
#: The run succeeded. Extra: attempt, result, duration.
run_succeeded = Signal()
#: The run gave up. Extra: attempt, exception, outcome.
run_failed = Signal()
#: The run was discarded (missing object, or by an operator). Extra: attempt, reason.
run_discarded = Signal()
#: The run was cancelled (``taskkit.cancel``): at once if it was waiting, or when the attempt that
#: was running when cancelling was asked for raised. Extra: attempt, reason.
run_cancelled = Signal()


def send(signal: Signal, task_name: str, **kwargs: Any) -> None:
    for receiver, response in signal.send_robust(sender=task_name, task_name=task_name, **kwargs):
        if isinstance(response, Exception):
            logger.error("taskkit: signal receiver %r raised %r", receiver, response)
