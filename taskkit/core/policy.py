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


# -- what happens to a run after a failed attempt ------------------------------------------------

#: Kinds of failed attempts (``taskkit.models.AttemptOutcome`` values; repeated here so that this
#: module stays free of Django).
FAILED, MISSING, LOST, TIMED_OUT = "FAILED", "MISSING", "LOST", "TIMED_OUT"

#: The run's next state after a failed attempt (``taskkit.models.RunState`` values).
RETRYING, GIVE_UP_FAILED, GIVE_UP_DISCARDED = "RETRYING", "FAILED", "DISCARDED"
GIVE_UP_CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class FailedAttempt:
    """Everything the decision after a failed attempt depends on, gathered by the worker."""

    #: FAILED (the task raised), MISSING (a model argument is gone), LOST (the worker died), or
    #: TIMED_OUT (the hard time limit).
    kind: str
    exception: BaseException
    #: The attempt's number within the run's budget (1 for the first since an operator retry).
    attempt: int
    #: Seconds since the budget's first attempt started.
    elapsed: float
    #: The task's ``on_missing=`` ("fail", "discard" or "retry").
    on_missing: str = "fail"
    #: LOST attempts recorded before this one (only read for a LOST attempt).
    lost_before: int = 0
    #: ``TASKKIT_MAX_WORKER_LOSSES``: a run whose worker was lost this often ends FAILED.
    max_worker_losses: int = 5
    #: The exception can never succeed on a retry (a call that cannot be decoded, a result that
    #: cannot be stored): the run fails at once.
    permanent: bool = False
    #: Cancelling the run was asked for (``taskkit.cancel``) while the attempt ran: no retry.
    cancel_requested: bool = False


@dataclass(frozen=True)
class Verdict:
    """The run's next state after a failed attempt: RETRYING after ``delay`` seconds, FAILED or
    DISCARDED or CANCELLED; ``reason`` says why, in words."""

    state: str
    reason: str
    delay: float | None = None

    @property
    def retry(self) -> RetryDecision | None:
        return RetryDecision(self.delay) if self.delay is not None else None


def after_failure(policy: RetryPolicy, failed: FailedAttempt) -> Verdict:
    """Decide what follows a failed attempt. Pure: no I/O, no clock (``elapsed`` is given).

    - a run whose cancelling was asked for is never retried: it ends CANCELLED;
    - a permanent failure (undecodable call, unstorable result) fails the run;
    - a missing object follows ``on_missing``: "fail", "discard", or "retry" (always retryable,
      within the stop strategy);
    - a lost worker is always retryable within the stop strategy, until the run has lost
      ``max_worker_losses`` workers;
    - anything else (an exception, a hard time limit) asks the task's ``RetryPolicy``.
    """
    if failed.cancel_requested:
        return Verdict(GIVE_UP_CANCELLED, "cancelling it was asked for: it is never retried")
    if failed.permanent:
        return Verdict(GIVE_UP_FAILED, "the failure is permanent: a retry cannot succeed")
    force = False
    if failed.kind == MISSING:
        if failed.on_missing == "discard":
            return Verdict(GIVE_UP_DISCARDED, "an object it needs is missing (on_missing=discard)")
        if failed.on_missing != "retry":
            return Verdict(GIVE_UP_FAILED, "an object it needs is missing (on_missing=fail)")
        force = True
    elif failed.kind == LOST:
        if failed.lost_before + 1 >= failed.max_worker_losses:
            return Verdict(
                GIVE_UP_FAILED,
                f"its worker was lost {failed.lost_before + 1} times "
                f"(TASKKIT_MAX_WORKER_LOSSES = {failed.max_worker_losses})",
            )
        force = True
    decision = policy.decide(
        attempt=failed.attempt,
        exception=failed.exception,
        seconds_since_start=failed.elapsed,
        force_retry=force,
    )
    if decision is None:
        why = "the stop strategy" if force else "the task's retry and stop strategies"
        return Verdict(GIVE_UP_FAILED, f"{why} gave up after attempt {failed.attempt}")
    return Verdict(RETRYING, f"attempt {failed.attempt + 1} in {decision.delay:g}s", decision.delay)
