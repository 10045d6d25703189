"""A re-export of ``taskkit.worker.transport``: this path stays for users
(CELERY_BROKER_TRANSPORT = "taskkit.transport:Transport").
"""

from .worker.transport import (
    DECODE_ERRORS,
    Channel,
    Transport,
)

__all__ = [
    "DECODE_ERRORS",
    "Channel",
    "Transport",
]
