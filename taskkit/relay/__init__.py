"""The relay: publishes again what the broker never got or lost, and recovers the runs whose
worker died (expired leases). It uses the producer's publisher and the worker's failure recording.

The sweep lives in ``taskkit.relay.sweep`` (``run_forever``, ``sweep``, ``publish_due``,
``recover_expired_leases``); ``manage.py taskkit_relay`` runs it.
"""

from .sweep import SweepResult, WorkerLost, run_forever

__all__ = ["SweepResult", "WorkerLost", "run_forever"]
