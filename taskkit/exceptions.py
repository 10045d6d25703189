"""A re-export of ``taskkit.core.exceptions``: this path stays for users
(the exception tree; recorded error types name this path).
"""

from .core.exceptions import (
    AdoptionRefused,
    ConfigurationError,
    InvalidIdempotencyKey,
    LeaseLost,
    MissingObject,
    PayloadTooLarge,
    RedactedError,
    ResultNotSerializable,
    RunNotFound,
    TaskkitError,
    TaskNotRegistered,
    UndecodableCall,
    UnsafeArgument,
    UnsupportedOption,
)

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
