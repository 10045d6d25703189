"""Worker-side hooks that run in the worker's main process, where a dead child is noticed.

When a prefork child is killed mid-attempt (SIGKILL, OOM) or exceeds its hard time limit, the
child cannot record anything. ``ReliableRequest`` records the lost attempt for it, from the
parent, and schedules the next attempt by the task's policy (a lost worker is always retryable,
within the stop strategy, so a task that kills its worker every time ends FAILED). A worker whose
main process dies is recovered by the relay when the attempt's lease expires.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from typing import Any

from billiard.einfo import ExceptionWithTraceback
from billiard.exceptions import WorkerLostError
from celery.exceptions import TimeLimitExceeded
from celery.worker.request import Request
from django.db import close_old_connections, connections

from ..core import ledger
from ..models import AttemptOutcome

logger = logging.getLogger("taskkit.worker")


class ReliableRequest(Request):
    def _kill_child(self) -> None:
        """Kill the child past its hard time limit now, before anything is recorded.

        billiard kills it only after running the failure and timeout handlers, which write to
        the database. Until then the child may still finish the attempt, and on SQLite its open
        transaction holds the write lock those writes wait for (for as long as it hangs).
        """
        if self.worker_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.worker_pid, signal.SIGKILL)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        if not soft:
            self._kill_child()
            record_lost_attempt(self, AttemptOutcome.TIMED_OUT, TimeLimitExceeded(timeout))
        super().on_timeout(soft, timeout)

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        if isinstance(exc, TimeLimitExceeded):
            self._kill_child()  # before Celery stores the failure in the result backend
        lost = isinstance(exc, WorkerLostError) or (
            isinstance(exc, SystemExit | KeyboardInterrupt)
            and not (self._already_cancelled or self._already_revoked)
        )
        if lost:
            record_lost_attempt(self, AttemptOutcome.LOST, WorkerLostError(str(exc)))
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


def record_lost_attempt(request: Request, outcome: str, exc: Exception) -> None:
    """Record the attempt the child ``request.worker_pid`` held, and schedule what comes next."""
    from .execution import record_failure, worker_id

    task = request.task
    if not getattr(task, "is_reliable", False) or not request.worker_pid:
        return
    spec = task.spec  # a ReliableTask's (taskkit.task is the face; this side knows the spec)
    try:
        close_old_connections()
        claim = ledger.holder_claim(request.id, worker_id(request, request.worker_pid))
        if claim is None:
            return  # the child died before claiming, or the outcome was already recorded
        state, _ = record_failure(spec, claim, exc, outcome, request=request._context)
        logger.warning(
            "taskkit: attempt %d of run %s of %s ended %s; run is now %s.",
            claim.attempt,
            request.id,
            spec.name,
            outcome,
            state,
        )
    except Exception:
        logger.exception(
            "taskkit: could not record the lost attempt of run %s; the relay will "
            "recover it when its lease expires.",
            request.id,
        )
    finally:
        connections.close_all()
