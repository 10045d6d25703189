"""The run being executed, reachable from inside a task body.

``current_run()`` returns a ``RunContext`` while a reliable task's attempt runs (in a worker, or
eagerly), and ``None`` elsewhere. A task hands ``idempotency_key`` (or ``run_id``) to an external
API so that a retried attempt is recognised there as the same request.
"""

from __future__ import annotations

import contextvars
import time
import uuid
from dataclasses import dataclass, field

#: ``RunContext.cancel_requested`` reads the ledger at most this often (seconds).
CANCEL_CHECK_INTERVAL = 1.0


@dataclass
class _CancelCheck:
    """The last answer of the ledger to "was cancelling this run asked for?", and when."""

    requested: bool = False
    checked_at: float | None = None


@dataclass(frozen=True)
class RunContext:
    run_id: uuid.UUID
    task_name: str
    attempt: int
    idempotency_key: str | None
    queue: str
    request_id: str = ""  # the web request that dispatched the run, if any
    #: The root of the run's tree: the first run of the chain that dispatched it (or itself).
    root_id: uuid.UUID | str | None = None
    _cancel: _CancelCheck = field(default_factory=_CancelCheck, compare=False, repr=False)

    @property
    def key(self) -> str:
        """The idempotency key if the run has one, else the run id: stable across attempts."""
        return self.idempotency_key or str(self.run_id)

    @property
    def cancel_requested(self) -> bool:
        """Whether an operator asked to cancel this run (``taskkit.cancel``) while it runs.

        A long task checks it between steps and returns (the run ends SUCCEEDED with what it
        returns) or raises (the run ends CANCELLED; it is never retried either way). Reads the
        ledger at most once per ``CANCEL_CHECK_INTERVAL`` (one query by primary key); a request,
        once seen, is never withdrawn.
        """
        check = self._cancel
        now = time.monotonic()
        if check.requested or (
            check.checked_at is not None and now - check.checked_at < CANCEL_CHECK_INTERVAL
        ):
            return check.requested
        from .ledger import cancel_requested

        check.requested = cancel_requested(self.run_id)
        check.checked_at = now
        return check.requested


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "taskkit_current_run", default=None
)


def current_run() -> RunContext | None:
    return _current.get()


_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("taskkit_request_id", default="")


def current_request_id() -> str:
    """The id of the web request being served (set by middleware), stored on dispatched runs."""
    return _request_id.get()


def set_request_id(request_id: str) -> contextvars.Token[str]:
    return _request_id.set(request_id[:64])


def reset_request_id(token: contextvars.Token[str]) -> None:
    _request_id.reset(token)
