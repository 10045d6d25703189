"""What a reliable task does when an attempt fails: tenacity strategies frozen into one policy.

``RetryPolicy.decide`` is a pure function of the attempt number, the exception and the time since
the first attempt. It asks tenacity's ``retry`` predicate whether the exception is retryable, its
``wait`` strategy how long to wait, and its ``stop`` strategy whether to give up — in tenacity's
own order — and returns a ``RetryDecision`` or ``None`` (give up). No I/O happens here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import tenacity
from tenacity import (
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .exceptions import ConfigurationError

OnMissing = Literal["fail", "discard", "retry"]
ON_MISSING_CHOICES: tuple[str, ...] = ("fail", "discard", "retry")

DEFAULT_ATTEMPTS = 5

#: Longest delay a retry may be scheduled for (a year); longer waits are capped to it.
MAX_DELAY = 366 * 24 * 3600.0


@dataclass(frozen=True)
class RetryDecision:
    """Retry after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True)
class RetryPolicy:
    stop: Any
    wait: Any
    retry: Any

    def decide(
        self,
        *,
        attempt: int,
        exception: BaseException,
        seconds_since_start: float,
        force_retry: bool = False,
    ) -> RetryDecision | None:
        """Decide whether attempt number ``attempt``, which raised ``exception``, gets another."""
        state = RetryCallState(retry_object=_RETRYING, fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        outcome = tenacity.Future(attempt)
        outcome.set_exception(exception)
        state.outcome = outcome
        now = time.monotonic()
        state.start_time = now - max(0.0, seconds_since_start)
        state.outcome_timestamp = now
        if not force_retry and not self.retry(state):
            return None
        delay = float(self.wait(state))
        # A strategy may return anything; the ledger needs a finite, representable delay.
        delay = MAX_DELAY if math.isnan(delay) else min(max(0.0, delay), MAX_DELAY)
        state.upcoming_sleep = delay
        if self.stop(state):
            return None
        return RetryDecision(delay=delay)


_RETRYING = tenacity.Retrying()


def make_policy(stop: Any = None, wait: Any = None, retry: Any = None) -> RetryPolicy:
    """Normalise the decorator's ``stop`` / ``wait`` / ``retry`` into a ``RetryPolicy``.

    Shorthands: ``stop=N`` means ``stop_after_attempt(N)``; ``retry=False`` means never retry;
    ``wait=N`` (seconds) means ``wait_fixed(N)``.
    """
    if stop is None:
        stop = stop_after_attempt(DEFAULT_ATTEMPTS)
    elif isinstance(stop, int) and not isinstance(stop, bool):
        if stop < 1:
            raise ConfigurationError(f"stop={stop}: a run needs at least 1 attempt.")
        stop = stop_after_attempt(stop)
    _require_callable("stop", stop, "tenacity.stop_after_attempt(5)")

    if wait is None:
        wait = wait_exponential_jitter(initial=1, max=300)
    elif isinstance(wait, int | float) and not isinstance(wait, bool):
        if not 0 <= wait <= MAX_DELAY:
            raise ConfigurationError(
                f"wait={wait}: a wait is a number of seconds from 0 to {MAX_DELAY:.0f} (a year)."
            )
        wait = tenacity.wait_fixed(wait)
    _require_callable("wait", wait, "tenacity.wait_exponential_jitter(initial=1, max=300)")

    if retry is None or retry is True:
        retry = retry_if_exception_type(Exception)
    elif retry is False:
        retry = tenacity.retry_never
    _require_callable("retry", retry, "tenacity.retry_if_exception_type(MyError)")
    return RetryPolicy(stop=stop, wait=wait, retry=retry)


def _require_callable(name: str, value: Any, example: str) -> None:
    if not callable(value):
        raise ConfigurationError(
            f"{name}={value!r} is not a tenacity {name} strategy; pass one, e.g. {name}={example}."
        )
