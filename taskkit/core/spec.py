"""What the producer and the worker need of a task, as a frozen value, and the message they share.

``taskkit.task.ReliableTask`` (the face users decorate with) builds one ``TaskSpec`` per task and
hands it to ``taskkit.producer`` and ``taskkit.worker``, so neither imports ``taskkit.task`` nor
the other: the arrows point down to here.

Publishing is the one thing the worker needs of the producer (a retry's delayed message, an early
message sent again). It gets it through the spec: ``spec.publish`` is the single publish point,
``taskkit.producer.publisher.publish_many``, wired in by the face and looked up when called, so
``taskkit.testing.capture()`` replaces it for every caller (dispatch, bulk dispatch, retries, the
relay) by patching that one function.
"""

from __future__ import annotations

import datetime
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .headers import MessageHeaders
from .policy import RetryPolicy

#: Header that marks a message as published by taskkit for an existing ledger row.
RUN_HEADER = "taskkit_run"

#: Options a run keeps for every (re)publish.
PUBLISH_OPTIONS = ("queue", "priority", "routing_key", "exchange")


class PublishMany(Protocol):
    """Publish one message per run of ``spec``; returns the ids the broker took."""

    def __call__(
        self,
        spec: TaskSpec,
        run_ids: list[Any],
        options: dict[str, Any],
        not_before: datetime.datetime | None = None,
        headers: Mapping[Any, MessageHeaders] | None = None,
    ) -> list[Any]: ...


@dataclass(frozen=True, eq=False)
class TaskSpec:
    """A reliable task as the producer and the worker see it (built once per task)."""

    name: str
    #: The Celery app the task is bound to (its configuration, its broker connections).
    app: Any
    policy: RetryPolicy
    #: The function's signature, ``None`` when it cannot be read.
    signature: inspect.Signature | None
    idempotency_key_fn: Callable[..., str] | None
    on_missing: str
    atomic: bool
    #: The decorator's ``queue=`` (the default queue of its runs).
    queue: str | None
    #: Parameters kept out of the admin, logs and the ended run.
    sensitive: tuple[str, ...]
    #: Whether messages sent without taskkit are adopted as runs.
    adopt: bool
    #: The task's hard time limit (``None``: the app's ``task_time_limit``).
    time_limit: float | None
    #: The task's body: ``body(*args, **kwargs)`` (looked up on the task at each call).
    body: Callable[..., Any]
    #: Sends one Celery message for this task: ``celery.Task.apply_async`` on the task.
    send: Callable[..., Any]
    #: The publish point (see the module docstring).
    publish: PublishMany

    def publish_one(
        self,
        run_id: Any,
        options: dict[str, Any],
        not_before: datetime.datetime | None = None,
        headers: MessageHeaders | None = None,
    ) -> bool:
        """Publish one message for ``run_id`` (with its monitor ``headers``); ``True`` if the
        broker took it."""
        shown = {run_id: headers} if headers is not None else None
        return bool(self.publish(self, [run_id], options, not_before, shown))


__all__ = ["PUBLISH_OPTIONS", "RUN_HEADER", "PublishMany", "TaskSpec"]
