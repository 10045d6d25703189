"""A re-export of ``taskkit.observe.middleware``: this path stays for users
(MIDDLEWARE: taskkit.middleware.RequestIdMiddleware).
"""

from .observe.middleware import (
    SANE_ID,
    RequestIdMiddleware,
    request_id_from,
)

__all__ = [
    "SANE_ID",
    "RequestIdMiddleware",
    "request_id_from",
]
