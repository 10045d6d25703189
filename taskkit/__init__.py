"""taskkit: reliable Celery tasks for Django, on a durable run ledger."""

from .core.context import RunContext, current_run
from .core.exceptions import (
    ConfigurationError,
    InvalidIdempotencyKey,
    LeaseLost,
    MissingObject,
    PayloadTooLarge,
    ResultNotSerializable,
    TaskkitError,
    UnsafeArgument,
    UnsupportedOption,
)
from .task import ReliableTask, reliable_task

__all__ = [
    "ConfigurationError",
    "InvalidIdempotencyKey",
    "LeaseLost",
    "MissingObject",
    "PayloadTooLarge",
    "ReliableTask",
    "ResultNotSerializable",
    "RunContext",
    "TaskkitError",
    "UnsafeArgument",
    "UnsupportedOption",
    "current_run",
    "reliable_task",
]
