"""Tasks the durable-control tests (cancel, pause / resume) dispatch; they write ``Effect`` rows."""

import time

from tenacity import stop_after_attempt, wait_fixed

from taskkit import current_run, reliable_task

from .tasks import _effect


@reliable_task(stop=stop_after_attempt(5), wait=wait_fixed(0.2))
def controlled(kind):
    _effect(kind)
    return kind


@reliable_task(stop=stop_after_attempt(5), wait=wait_fixed(0.2), time_limit=60)
def until_cancelled(kind, then="raise"):
    """Works in small steps until cancelling is requested, then raises or returns early."""
    _effect(kind, phase="started")
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        run = current_run()
        if run is not None and run.cancel_requested:
            _effect(kind, phase="saw the cancel request")
            if then == "raise":
                raise RuntimeError("stopped: cancelling was requested")
            return "stopped early"
        time.sleep(0.05)
    return "ran to the end"
