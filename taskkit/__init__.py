"""taskkit: reliable Celery tasks for Django, on a durable run ledger."""

from .core.context import RunContext, current_run
from .core.control import (
    CancelResult,
    cancel,
    pause_queue,
    pause_task,
    resume_queue,
    resume_task,
)
from .core.exceptions import (
    ConfigurationError,
    InvalidIdempotencyKey,
    LeaseLost,
    MissingObject,
    PayloadTooLarge,
    ResultNotSerializable,
    RunNotFound,
    TaskkitError,
    UnsafeArgument,
    UnsupportedOption,
)
from .task import ReliableTask, reliable_task

__all__ = [
    "CancelResult",
    "ConfigurationError",
    "InvalidIdempotencyKey",
    "LeaseLost",
    "MissingObject",
    "PayloadTooLarge",
    "ReliableTask",
    "ResultNotSerializable",
    "RunContext",
    "RunNotFound",
    "TaskkitError",
    "UnsafeArgument",
    "UnsupportedOption",
    "cancel",
    "current_run",
    "pause_queue",
    "pause_task",
    "reliable_task",
    "resume_queue",
    "resume_task",
]
