"""A re-export of ``taskkit.observe.views``: this path stays for users
(urls: path("metrics", taskkit.views.metrics)).
"""

from .observe.views import (
    HOW,
    VIEW_PERMISSION,
    metrics,
    metrics_refusal,
)

__all__ = [
    "HOW",
    "VIEW_PERMISSION",
    "metrics",
    "metrics_refusal",
]
