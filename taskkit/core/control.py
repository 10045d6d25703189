"""Durable operator control: cancel a run; pause and resume a task name or a queue.

Everything is stored in the database, so it holds across restarts and across every worker and
relay on every host, and takes effect at the next claim:

- ``cancel(run_id)``: a waiting run (PENDING / QUEUED / RETRYING) becomes CANCELLED at once (a
  message still on the broker then loses its claim); a RUNNING run gets a cancel request, which
  its task can read (``current_run().cancel_requested``) and which means it is never retried: if
  the attempt raises the run ends CANCELLED, if it returns the run ends SUCCEEDED with its result.
- ``pause_task(name)`` / ``pause_queue(name)``: a ``TaskPause`` row. A claim refuses a run of a
  paused task or queue in its SQL; the run waits (QUEUED, no attempt counted, not failed), and the
  relay does not publish it until ``resume_task`` / ``resume_queue`` deletes the row; the first
  relay sweep after that publishes it.

Run transitions are the ledger's (``taskkit.core.ledger``); this module only writes pauses.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from .db import db_alias
from .exceptions import RunNotFound

# ``taskkit`` re-exports this module's functions, and is imported before Django's apps are ready:
# the models (and the ledger, which imports them) are imported inside the functions.

#: ``TaskPause.kind`` values (``taskkit.models.PauseKind``).
TASK, QUEUE = "task", "queue"

#: Longest ``by`` / ``paused_by`` kept (the column's length).
MAX_BY = 255


@dataclass(frozen=True)
class CancelResult:
    """What ``cancel`` did: ``state`` is the run's state after it; ``cancelled`` says it is now
    CANCELLED, ``requested`` that it was RUNNING and got a cancel request; neither for a run that
    had already ended (``message`` says so)."""

    run_id: uuid.UUID
    state: str
    cancelled: bool
    requested: bool
    message: str

    @property
    def changed(self) -> bool:
        return self.cancelled or self.requested


def cancel_reason(by: str | None) -> str:
    return f"cancelled by {by}"[:MAX_BY] if by else "cancelled"


def cancel(run_id: Any, *, by: str | None = None) -> CancelResult:
    """Cancel run ``run_id`` (see the module's docstring); ``by`` names who asked (kept on the
    run as its reason). Raises ``RunNotFound`` for an id the ledger does not know. A run that has
    already ended is left as it is: the result says so (``changed`` is False)."""
    from ..models import TERMINAL_STATES, RunState, TaskRun
    from . import ledger

    pk = _run_id(run_id)
    reason = cancel_reason(by)
    state = ""
    # A run can move between the guarded UPDATEs (claimed, or its attempt ended): try again.
    for _ in range(5):
        if ledger.cancel_waiting([pk], reason):
            return CancelResult(pk, RunState.CANCELLED, True, False, f"run {pk} cancelled")
        if ledger.request_cancel([pk], reason):
            return CancelResult(
                pk,
                RunState.RUNNING,
                False,
                True,
                f"run {pk} is running: cancelling was requested (its task can read "
                "current_run().cancel_requested; it will not be retried)",
            )
        row = (
            TaskRun.objects.using(db_alias())
            .filter(pk=pk)
            .values_list("state", "cancel_requested_at")
            .first()
        )
        if row is None:
            raise RunNotFound(
                f"no run {pk} in the ledger (pruned, or dispatched to another database); "
                "nothing was cancelled."
            )
        state, requested_at = row
        if state in TERMINAL_STATES:
            return CancelResult(
                pk, state, False, False, f"run {pk} has already ended {state}; nothing to cancel"
            )
        if state == RunState.RUNNING and requested_at is not None:
            return CancelResult(
                pk, state, False, False, f"run {pk} is running; cancelling was already requested"
            )
    return CancelResult(pk, state, False, False, f"run {pk} kept changing state; try again")


def cancel_many(run_ids: list[Any], *, by: str | None = None) -> tuple[list[Any], list[Any]]:
    """Cancel many runs at once (the admin's list action): waiting ones become CANCELLED,
    RUNNING ones get a cancel request, ended ones are left alone. Returns (cancelled ids,
    requested ids)."""
    from . import ledger

    reason = cancel_reason(by)
    cancelled = [row[0] for row in ledger.cancel_waiting(run_ids, reason)]
    requested = ledger.request_cancel([pk for pk in run_ids if pk not in set(cancelled)], reason)
    return cancelled, requested


def _run_id(run_id: Any) -> uuid.UUID:
    try:
        return run_id if isinstance(run_id, uuid.UUID) else uuid.UUID(str(run_id))
    except ValueError:
        raise RunNotFound(
            f"{run_id!r} is not a run id: pass the run's UUID (AsyncResult.id, TaskRun.pk)."
        ) from None


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        example = "orders.tasks.charge" if kind == TASK else "emails"
        raise ValueError(
            f"pause_{kind}() needs the {kind}'s name as a non-empty string, got {name!r} "
            f"(e.g. pause_{kind}({example!r}))."
        )
    return name.strip()


def _pause(kind: str, name: str, by: str | None, reason: str) -> bool:
    """Insert the pause; ``False`` if it was paused already (the first pause is kept)."""
    from ..models import TaskPause

    db = db_alias()
    try:
        with transaction.atomic(using=db):
            TaskPause.objects.using(db).create(
                kind=kind,
                name=_check_name(kind, name),
                paused_at=timezone.now(),
                paused_by=(by or "")[:MAX_BY],
                reason=reason,
            )
    except IntegrityError:
        return False
    return True


def _resume(kind: str, name: str) -> bool:
    from ..models import TaskPause

    deleted, _ = (
        TaskPause.objects.using(db_alias()).filter(kind=kind, name=_check_name(kind, name)).delete()
    )
    return bool(deleted)


def pause_task(name: str, *, by: str | None = None, reason: str = "") -> bool:
    """Pause the task ``name``: its runs wait (not claimed, not published, not failed) until
    ``resume_task``. Returns ``False`` if it was paused already."""
    return _pause(TASK, name, by, reason)


def resume_task(name: str) -> bool:
    """Resume the task ``name``; its waiting runs are published by the next relay sweep.
    Returns ``False`` if it was not paused."""
    return _resume(TASK, name)


def pause_queue(name: str, *, by: str | None = None, reason: str = "") -> bool:
    """Pause the queue ``name`` (every task's runs routed to it wait). ``False`` if paused
    already."""
    return _pause(QUEUE, name, by, reason)


def resume_queue(name: str) -> bool:
    """Resume the queue ``name``. Returns ``False`` if it was not paused."""
    return _resume(QUEUE, name)


def pause_of(task_name: str, queue: str = "") -> Any:
    """The ``TaskPause`` holding runs of ``task_name`` (routed to ``queue``), if any."""
    from django.db.models import Q

    from ..models import TaskPause

    return (
        TaskPause.objects.using(db_alias())
        .filter(Q(kind=TASK, name=task_name) | Q(kind=QUEUE, name=queue))
        .order_by("kind")
        .first()
    )
