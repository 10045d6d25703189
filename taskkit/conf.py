"""taskkit's settings, read from Django settings at access time.

Every setting is ``TASKKIT_<NAME>`` in the project's settings module. Nothing is read at import
time, so ``override_settings`` works in tests and import order never matters.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings

DEFAULTS: dict[str, Any] = {
    # Largest JSON payload (args + kwargs) accepted at the call site, in bytes.
    "MAX_PAYLOAD_BYTES": 256 * 1024,
    # Lease of an attempt whose task has no hard time limit (seconds).
    "LEASE_SECONDS": 3600,
    # Added to a task's hard time limit to make its lease (seconds).
    "LEASE_MARGIN_SECONDS": 30,
    # Socket timeouts used when publishing, so a dead broker cannot hang a web request (seconds).
    "PUBLISH_TIMEOUT": 0.5,
    # Publish attempts after the first one before the run is left PENDING for the relay.
    "PUBLISH_MAX_RETRIES": 1,
    # Header carrying the web request's id, read and set by RequestIdMiddleware.
    "REQUEST_ID_HEADER": "X-Request-ID",
    # How many of the most recently started runs the commit-to-start figures are computed from.
    "METRICS_RECENT_RUNS": 1000,
    # If set, the metrics view requires "Authorization: Bearer <token>".
    "METRICS_TOKEN": "",
}


class TaskkitSettings:
    """Typed, lazy view of the ``TASKKIT_*`` settings."""

    def _get(self, name: str) -> Any:
        return getattr(django_settings, f"TASKKIT_{name}", DEFAULTS[name])

    @property
    def MAX_PAYLOAD_BYTES(self) -> int:
        return int(self._get("MAX_PAYLOAD_BYTES"))

    @property
    def LEASE_SECONDS(self) -> float:
        return float(self._get("LEASE_SECONDS"))

    @property
    def LEASE_MARGIN_SECONDS(self) -> float:
        return float(self._get("LEASE_MARGIN_SECONDS"))

    @property
    def PUBLISH_TIMEOUT(self) -> float:
        return float(self._get("PUBLISH_TIMEOUT"))

    @property
    def PUBLISH_MAX_RETRIES(self) -> int:
        return int(self._get("PUBLISH_MAX_RETRIES"))

    @property
    def REQUEST_ID_HEADER(self) -> str:
        return str(self._get("REQUEST_ID_HEADER"))

    @property
    def METRICS_RECENT_RUNS(self) -> int:
        return int(self._get("METRICS_RECENT_RUNS"))

    @property
    def METRICS_TOKEN(self) -> str:
        return str(self._get("METRICS_TOKEN") or "")


settings = TaskkitSettings()
