"""The exceptions taskkit raises.

    TaskkitError
    ├── ConfigurationError (ImproperlyConfigured)   a @reliable_task option is wrong
    ├── UnsafeArgument (TypeError)                  an argument cannot travel as JSON
    ├── PayloadTooLarge (ValueError)                the arguments exceed TASKKIT_MAX_PAYLOAD_BYTES
    ├── InvalidIdempotencyKey (ValueError)          a key that is not a short non-empty string
    ├── UnsupportedOption (TypeError)               an apply_async option taskkit cannot honour
    ├── MissingObject (LookupError)                 a referenced model row is gone at run time
    ├── UndecodableCall (ValueError)                a run's stored call no longer decodes or binds
    ├── AdoptionRefused (ValueError)                a message sent without taskkit was not adopted
    ├── ResultNotSerializable (TypeError)           a task returned something that is not JSON
    ├── LeaseLost                                   the attempt lost its claim before finishing
    ├── RedactedError                               stands in for an error that held a secret
    ├── TaskNotRegistered (LookupError)             a run's task has not been registered for
    │                                               TASKKIT_UNKNOWN_TASK_GRACE_SECONDS (a rename)
    └── RunNotFound (LookupError)                   ``taskkit.cancel`` was given an unknown run id

Each docstring doubles as the default message.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class TaskkitError(Exception):
    """A taskkit error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(TaskkitError, ImproperlyConfigured):
    """A @reliable_task option is invalid."""


class UnsafeArgument(TaskkitError, TypeError):
    """An argument cannot travel safely as JSON."""


class PayloadTooLarge(TaskkitError, ValueError):
    """The task's arguments exceed TASKKIT_MAX_PAYLOAD_BYTES."""


class InvalidIdempotencyKey(TaskkitError, ValueError):
    """An idempotency key must be a non-empty string of at most 255 characters."""


class UnsupportedOption(TaskkitError, TypeError):
    """This apply_async option is not supported on reliable tasks."""


class MissingObject(TaskkitError, LookupError):
    """A model instance referenced by the run's arguments no longer exists."""


class UndecodableCall(TaskkitError, ValueError):
    """The run's stored arguments cannot be decoded, or no longer fit the task's signature."""


class AdoptionRefused(TaskkitError, ValueError):
    """A message sent without taskkit was refused: it was recorded as a FAILED run, not run."""


class ResultNotSerializable(TaskkitError, TypeError):
    """The task returned a value that cannot be stored as JSON."""


class LeaseLost(TaskkitError):
    """The attempt lost its claim on the run before it could record its outcome."""


class RedactedError(TaskkitError):
    """Stands in for an exception whose text held a sensitive argument's value.

    Its message is the original's with the value masked; ``original_type`` is the original's class
    path. Sent to signals, logs and Celery (result backend, events) instead of the original.
    """

    original_type: str = ""


class TaskNotRegistered(TaskkitError, LookupError):
    """The run's task is not registered (renamed or removed by a deploy)."""

    @classmethod
    def for_task(cls, name: str, seconds: float) -> TaskNotRegistered:
        return cls(
            f"task `{name}` is not registered: no relay has found it registered for "
            f"{seconds:.0f}s (TASKKIT_UNKNOWN_TASK_GRACE_SECONDS). Renamed or removed by a "
            f"deploy? Register the old name as an alias and retry the run from the admin."
        )


class RunNotFound(TaskkitError, LookupError):
    """No run with this id is in the ledger (pruned, or never dispatched here)."""


__all__ = [
    "AdoptionRefused",
    "ConfigurationError",
    "InvalidIdempotencyKey",
    "LeaseLost",
    "MissingObject",
    "PayloadTooLarge",
    "RedactedError",
    "ResultNotSerializable",
    "RunNotFound",
    "TaskNotRegistered",
    "TaskkitError",
    "UndecodableCall",
    "UnsafeArgument",
    "UnsupportedOption",
]

# A recorded failure names its exception by class path (``TaskRun.error_type``, e.g.
# "taskkit.exceptions.TaskNotRegistered"; the docs list these), as do Celery's result
# backend and pickles: the classes keep their public path, ``taskkit.exceptions`` (a re-export).
for _name in __all__:
    globals()[_name].__module__ = "taskkit.exceptions"
del _name
