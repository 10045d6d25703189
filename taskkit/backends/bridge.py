"""Django's task signals from taskkit's: ``task_started`` and ``task_finished`` for runs of
Django tasks, sent with the backend's class as sender and the run's ``TaskResult``.

taskkit sends its own signals (``taskkit.core.signals``) in the process that made each
transition: a worker for an attempt's start and end, a relay or the admin for a run it ends.
The bridge listens to them and, for a run of a Django task registered in that process, reads the
run back and sends Django's signal: ``task_started`` at each attempt's start (RUNNING),
``task_finished`` once the run has ended (SUCCESSFUL or FAILED; an attempt that will be retried
does not finish the run). ``task_enqueued`` is sent by the backend when the caller's transaction
commits. Receivers must not raise: what they raise is logged and swallowed, as for taskkit's.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal
from django.tasks.signals import task_finished, task_started

from ..core import signals
from ..core.db import db_alias
from ..models import TaskRun
from . import registry, results

logger = logging.getLogger("taskkit.backends")


def send(signal: Signal, sender: type, result: Any) -> None:
    """Send Django's ``signal``; a receiver that raises is logged, never raised into taskkit."""
    for receiver, response in signal.send_robust(sender=sender, task_result=result):
        if isinstance(response, Exception):
            logger.error("taskkit: receiver %r of a Django signal raised %r", receiver, response)


def _relay(signal: Signal, task_name: str, run_id: Any) -> None:
    entry = registry.lookup(task_name)
    if entry is None:
        return  # not a Django task (or its module is not imported in this process)
    db = db_alias()
    from .backend import META, task_of

    run = TaskRun.objects.using(db).filter(pk=run_id).first()
    if run is None or META not in (run.options or {}):
        return  # e.g. a message sent without taskkit, refused: not enqueued through Django

    result = results.task_result(run, results.attempts_of(run, db), task_of(run), entry.backend)
    send(signal, entry.backend_class, result)


def on_started(sender: str, run_id: Any, **kwargs: Any) -> None:
    _relay(task_started, sender, run_id)


def on_ended(sender: str, run_id: Any, **kwargs: Any) -> None:
    _relay(task_finished, sender, run_id)


def connect() -> None:
    """Connect the bridge (idempotent; called when a backend is created)."""
    signals.run_started.connect(on_started, dispatch_uid="taskkit.backends.started")
    for name, signal in (
        ("succeeded", signals.run_succeeded),
        ("failed", signals.run_failed),
        ("discarded", signals.run_discarded),
    ):
        signal.connect(on_ended, dispatch_uid=f"taskkit.backends.{name}")


__all__ = ["connect", "send"]
