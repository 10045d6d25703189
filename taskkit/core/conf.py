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
    # Delays up to this long travel as ETA messages; longer ones wait in the ledger for the relay,
    # so no delay ever outlives the broker's visibility timeout (seconds).
    "ETA_MAX_SECONDS": 60,
    # The relay publishes PENDING runs this old, and due runs whose message is this late (seconds).
    "RELAY_GRACE_SECONDS": 10,
    # A QUEUED run not claimed this long after it was due is published again (seconds).
    "REQUEUE_AFTER": 900,
    # Pause between relay sweeps (seconds), and rows handled per batch.
    "RELAY_INTERVAL": 5.0,
    "RELAY_BATCH_SIZE": 500,
    # Attempts lost with their worker (killed, frozen past the lease) before the run is FAILED,
    # whatever the stop strategy says: a task that kills its worker every time cannot loop.
    "MAX_WORKER_LOSSES": 5,
    # Base URL of Flower (e.g. "http://127.0.0.1:5555"); the admin links each run to it when set.
    "FLOWER_URL": None,
    # Header carrying the web request's id, read and set by RequestIdMiddleware.
    "REQUEST_ID_HEADER": "X-Request-ID",
    # How many of the most recently started runs the commit-to-start figures are computed from.
    "METRICS_RECENT_RUNS": 1000,
    # If set, the metrics view requires "Authorization: Bearer <token>".
    "METRICS_TOKEN": "",
    # The metrics view answers anyone when True (behind a private network only).
    "METRICS_PUBLIC": False,
    # A run whose task is not registered in the relay's process for this long ends FAILED; until
    # then the relay still publishes it by name, so a rolling deploy's old workers can run it.
    "UNKNOWN_TASK_GRACE_SECONDS": 3600,
    # Whether a worker adopts messages sent without taskkit (celery beat, send_task) as runs.
    "ADOPT": True,
    # Largest JSON form of a result stored in the ledger, in bytes; larger results are not stored.
    "MAX_RESULT_BYTES": 1024 * 1024,
    # PostgreSQL: workers prepare their claim and the statement that ends an attempt once per
    # database session (half the server CPU per run). A session that loses them (a
    # transaction-pooling proxy such as PgBouncer in transaction mode) is detected and the
    # process stops preparing; False never prepares.
    "PREPARED_STATEMENTS": True,
    # PostgreSQL: True lets a claim commit without waiting for its WAL flush (one fsync per run
    # fewer; durable with the next flushed commit, the attempt's end at the latest). A database
    # crash or crash-restart, an immediate shutdown or a failover in that window forgets the
    # claim: the run can then start a second attempt while the first still runs. False (the
    # default) waits for the flush, as Django's commits do. See docs/deploys.md.
    "ASYNCHRONOUS_CLAIMS": False,
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
    def ETA_MAX_SECONDS(self) -> float:
        return float(self._get("ETA_MAX_SECONDS"))

    @property
    def RELAY_GRACE_SECONDS(self) -> float:
        return float(self._get("RELAY_GRACE_SECONDS"))

    @property
    def REQUEUE_AFTER(self) -> float:
        return float(self._get("REQUEUE_AFTER"))

    @property
    def RELAY_INTERVAL(self) -> float:
        return float(self._get("RELAY_INTERVAL"))

    @property
    def RELAY_BATCH_SIZE(self) -> int:
        return int(self._get("RELAY_BATCH_SIZE"))

    @property
    def MAX_WORKER_LOSSES(self) -> int:
        return int(self._get("MAX_WORKER_LOSSES"))

    @property
    def FLOWER_URL(self) -> str | None:
        url = self._get("FLOWER_URL")
        return str(url).rstrip("/") if url else None

    @property
    def REQUEST_ID_HEADER(self) -> str:
        return str(self._get("REQUEST_ID_HEADER"))

    @property
    def METRICS_RECENT_RUNS(self) -> int:
        return int(self._get("METRICS_RECENT_RUNS"))

    @property
    def METRICS_TOKEN(self) -> str:
        return str(self._get("METRICS_TOKEN") or "")

    @property
    def METRICS_PUBLIC(self) -> bool:
        return bool(self._get("METRICS_PUBLIC"))

    @property
    def UNKNOWN_TASK_GRACE_SECONDS(self) -> float:
        return float(self._get("UNKNOWN_TASK_GRACE_SECONDS"))

    @property
    def ADOPT(self) -> bool:
        return bool(self._get("ADOPT"))

    @property
    def PREPARED_STATEMENTS(self) -> bool:
        return bool(self._get("PREPARED_STATEMENTS"))

    @property
    def ASYNCHRONOUS_CLAIMS(self) -> bool:
        return bool(self._get("ASYNCHRONOUS_CLAIMS"))

    @property
    def MAX_RESULT_BYTES(self) -> int:
        return int(self._get("MAX_RESULT_BYTES"))


settings = TaskkitSettings()
