"""A re-export of ``taskkit.observe.log_context``: this path stays for users
(LOGGING filters: taskkit.log_context.RunContextFilter).
"""

from .observe.log_context import (
    FIELDS,
    RunContextFilter,
    context_fields,
)

__all__ = [
    "FIELDS",
    "RunContextFilter",
    "context_fields",
]
