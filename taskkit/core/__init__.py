"""The ground floor: the run ledger (every state transition of a run, its SQL beside it), the
retry policy, the call's JSON encoding and redaction, settings, the run context, exceptions and
signals. It imports nothing above it; the producer, the worker, the relay and the admin all stand
on it.

Import the module you need (``from taskkit.core import ledger``): the ledger loads Django's
models, so this package re-exports nothing that would load them before the app registry.
"""

__all__: list[str] = []
