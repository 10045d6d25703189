"""Moved to ``taskkit.core.signals``; this path stays for users (taskkit's Django signals)."""

from .core.signals import (
    run_cancelled,
    run_discarded,
    run_dispatched,
    run_failed,
    run_retrying,
    run_started,
    run_succeeded,
    send,
)

__all__ = [
    "run_cancelled",
    "run_discarded",
    "run_dispatched",
    "run_failed",
    "run_retrying",
    "run_started",
    "run_succeeded",
    "send",
]
