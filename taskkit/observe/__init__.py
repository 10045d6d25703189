"""Observability: request ids (middleware) carried into runs and log lines, the default logging
wired to taskkit's signals, statistics and the Prometheus metrics view.

Import the module you need: ``log_context`` is loaded by ``LOGGING`` before the app registry is
ready, so this package re-exports nothing that would load the models.
"""

__all__: list[str] = []
