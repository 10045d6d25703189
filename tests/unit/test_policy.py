"""taskkit.core.policy: make_policy's normalisation and RetryPolicy.decide as tables."""

from __future__ import annotations

import re
from typing import Any

import pytest
import tenacity
from tenacity import (
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
)

from taskkit.core.exceptions import ConfigurationError
from taskkit.core.policy import DEFAULT_ATTEMPTS, MAX_DELAY, RetryDecision, RetryPolicy, make_policy


class Transient(Exception):
    """A failure worth retrying."""


class Permanent(Exception):
    """A failure not worth retrying."""


def decide(
    policy: RetryPolicy,
    attempt: int,
    exception: BaseException | None = None,
    seconds: float = 0.0,
    force_retry: bool = False,
) -> RetryDecision | None:
    return policy.decide(
        attempt=attempt,
        exception=exception or Transient("boom"),
        seconds_since_start=seconds,
        force_retry=force_retry,
    )


@pytest.mark.parametrize("attempt", range(1, DEFAULT_ATTEMPTS))
def test_default_policy_retries_with_bounded_exponential_delay(attempt: int) -> None:
    """By default attempts 1-4 are retried after 2**(n-1) s plus up to 1 s of jitter."""
    decision = decide(make_policy(), attempt)
    assert decision is not None
    base = 2 ** (attempt - 1)
    assert base <= decision.delay <= base + 1
    assert 0 < decision.delay <= 300


def test_default_policy_gives_up_at_attempt_five() -> None:
    """The default policy allows 5 attempts in all: attempt 5 failing is final."""
    assert DEFAULT_ATTEMPTS == 5
    assert decide(make_policy(), 5) is None
    assert decide(make_policy(), 6) is None


def test_default_policy_caps_the_delay_at_300_seconds() -> None:
    """With enough attempts allowed, the default wait never exceeds 300 s (even on overflow)."""
    policy = make_policy(stop=100_000)
    for attempt in (10, 20, 2_000):
        decision = decide(policy, attempt)
        assert decision is not None
        assert decision.delay == 300


@pytest.mark.parametrize(
    ("exception", "retried"),
    [
        pytest.param(Transient(), True, id="exception"),
        pytest.param(ValueError(), True, id="value-error"),
        pytest.param(OSError(), True, id="os-error"),
        pytest.param(KeyboardInterrupt(), False, id="keyboard-interrupt"),
        pytest.param(SystemExit(), False, id="system-exit"),
    ],
)
def test_default_policy_retries_any_exception_but_not_base_exceptions(
    exception: BaseException,
    retried: bool,
) -> None:
    """retry defaults to retry_if_exception_type(Exception): BaseException-only types give up."""
    assert (decide(make_policy(), 1, exception) is not None) is retried


@pytest.mark.parametrize(
    ("attempts", "attempt", "retried"),
    [
        (1, 1, False),
        (2, 1, True),
        (2, 2, False),
        (3, 2, True),
        (3, 3, False),
        (3, 4, False),
        (10, 9, True),
        (10, 10, False),
    ],
)
def test_stop_after_attempt_gives_up_at_attempt_n(
    attempts: int, attempt: int, retried: bool
) -> None:
    """stop_after_attempt(N), or the shorthand stop=N, returns None from attempt N on."""
    for stop in (stop_after_attempt(attempts), attempts):
        policy = make_policy(stop=stop, wait=wait_fixed(1))
        expected = RetryDecision(delay=1.0) if retried else None
        assert decide(policy, attempt) == expected


@pytest.mark.parametrize(
    ("exception", "retried"),
    [
        pytest.param(Transient(), True, id="listed"),
        pytest.param(type("SubTransient", (Transient,), {})(), True, id="subclass"),
        pytest.param(TimeoutError(), True, id="second-listed"),
        pytest.param(Permanent(), False, id="not-listed"),
        pytest.param(ValueError(), False, id="builtin-not-listed"),
    ],
)
def test_retry_if_exception_type_filters(exception: Exception, retried: bool) -> None:
    """Only exceptions of the listed types (or subclasses) are retried."""
    policy = make_policy(retry=retry_if_exception_type((Transient, TimeoutError)))
    assert (decide(policy, 1, exception) is not None) is retried


@pytest.mark.parametrize(
    ("retry", "attempt", "stop", "expected"),
    [
        pytest.param(
            retry_if_exception_type(Transient), 1, 3, RetryDecision(2.0), id="predicate-says-no"
        ),
        pytest.param(False, 1, 3, RetryDecision(2.0), id="retry-false"),
        pytest.param(False, 3, 3, None, id="stop-still-applies"),
        pytest.param(retry_if_exception_type(Transient), 5, 3, None, id="past-stop"),
    ],
)
def test_force_retry_bypasses_the_predicate_but_not_stop(
    retry: Any,
    attempt: int,
    stop: int,
    expected: RetryDecision | None,
) -> None:
    """force_retry retries an exception the predicate rejects, but never past the stop."""
    policy = make_policy(stop=stop, wait=2, retry=retry)
    assert decide(policy, attempt, Permanent(), force_retry=True) == expected
    assert decide(policy, attempt, Permanent(), force_retry=False) is None


@pytest.mark.parametrize(
    ("seconds_since_start", "retried"),
    [
        (0.0, True),
        (59.9, True),
        (60.0, False),
        (3600.0, False),
        (-5.0, True),  # clock skew: a negative age counts as zero
    ],
)
def test_stop_after_delay_uses_seconds_since_start(
    seconds_since_start: float, retried: bool
) -> None:
    """stop_after_delay(60) gives up once 60 s have passed since the first attempt."""
    policy = make_policy(stop=stop_after_delay(60), wait=wait_fixed(1))
    decision = decide(policy, 1, seconds=seconds_since_start)
    assert (decision is not None) is retried


@pytest.mark.parametrize(
    ("stop", "seconds_since_start", "retried"),
    [
        (stop_after_attempt(3) | stop_after_delay(60), 10.0, True),
        (stop_after_attempt(3) | stop_after_delay(60), 61.0, False),
        (stop_after_attempt(2) | stop_after_delay(60), 10.0, False),
        (stop_after_attempt(2) & stop_after_delay(60), 10.0, True),
    ],
)
def test_composed_stop_strategies(stop: Any, seconds_since_start: float, retried: bool) -> None:
    """Stops composed with | and & are honoured as tenacity defines them (attempt 2 failing)."""
    policy = make_policy(stop=stop, wait=0)
    assert (decide(policy, 2, seconds=seconds_since_start) is not None) is retried


@pytest.mark.parametrize(
    ("wait", "attempt", "delay"),
    [
        pytest.param(wait_fixed(7), 1, 7.0, id="fixed-1"),
        pytest.param(wait_fixed(7), 4, 7.0, id="fixed-4"),
        pytest.param(wait_fixed(0), 1, 0.0, id="fixed-zero"),
        pytest.param(2, 3, 2.0, id="shorthand-int"),
        pytest.param(0.5, 1, 0.5, id="shorthand-float"),
        pytest.param(0, 1, 0.0, id="shorthand-zero"),
        pytest.param(wait_exponential(multiplier=1, min=0, max=100), 1, 1.0, id="exp-1"),
        pytest.param(wait_exponential(multiplier=1, min=0, max=100), 2, 2.0, id="exp-2"),
        pytest.param(wait_exponential(multiplier=1, min=0, max=100), 4, 8.0, id="exp-4"),
        pytest.param(wait_exponential(multiplier=1, min=0, max=100), 9, 100.0, id="exp-capped"),
        pytest.param(wait_exponential(multiplier=3, min=5, max=100), 1, 5.0, id="exp-min"),
        pytest.param(wait_fixed(3) + wait_fixed(4), 1, 7.0, id="sum"),
    ],
)
def test_wait_strategies_give_the_delay(wait: Any, attempt: int, delay: float) -> None:
    """The wait strategy (or wait=N shorthand for wait_fixed(N)) sets the decision's delay."""
    policy = make_policy(stop=100, wait=wait)
    assert decide(policy, attempt) == RetryDecision(delay=delay)


def test_retry_false_never_retries() -> None:
    """retry=False gives up on the first failure, whatever the exception."""
    policy = make_policy(retry=False)
    assert decide(policy, 1, Transient()) is None
    assert decide(policy, 1, ValueError()) is None


@pytest.mark.parametrize("retry", [None, True])
def test_retry_none_or_true_retries_any_exception(retry: Any) -> None:
    """retry=None and retry=True both mean retry on any Exception."""
    assert decide(make_policy(retry=retry, wait=1), 1, Permanent()) == RetryDecision(1.0)


def test_custom_retry_predicate_sees_the_exception_and_attempt() -> None:
    """A tenacity retry callable receives a state carrying the exception and attempt number."""
    seen: list[tuple[int, BaseException | None]] = []

    def predicate(state: tenacity.RetryCallState) -> bool:
        assert state.outcome is not None
        seen.append((state.attempt_number, state.outcome.exception()))
        return True

    error = Transient("boom")
    assert decide(make_policy(retry=predicate, wait=1), 2, error) == RetryDecision(1.0)
    assert seen == [(2, error)]


def test_stop_sees_the_upcoming_sleep() -> None:
    """The wait is computed before the stop, so tenacity's stop_before_delay works."""
    policy = make_policy(stop=tenacity.stop_before_delay(60), wait=wait_fixed(30))
    assert decide(policy, 1, seconds=20) == RetryDecision(30.0)
    assert decide(policy, 1, seconds=31) is None


def test_policy_is_frozen() -> None:
    """A RetryPolicy cannot be mutated after it is made (tasks are per-process singletons)."""
    policy = make_policy()
    with pytest.raises(AttributeError):
        policy.stop = stop_after_attempt(1)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"stop": 0}, "stop=0: a run needs at least 1 attempt", id="stop-zero"),
        pytest.param({"stop": -3}, "stop=-3: a run needs at least 1 attempt", id="stop-negative"),
        pytest.param({"stop": "x"}, "stop='x' is not a tenacity stop strategy", id="stop-str"),
        pytest.param({"stop": 2.5}, "stop=2.5 is not a tenacity stop strategy", id="stop-float"),
        pytest.param({"stop": True}, "stop=True is not a tenacity stop strategy", id="stop-bool"),
        pytest.param({"wait": -1}, "wait=-1: a wait is a number of seconds", id="wait-negative"),
        pytest.param({"wait": -0.5}, "wait=-0.5: a wait is a number", id="wait-neg-float"),
        pytest.param({"wait": float("inf")}, "wait=inf: a wait is a number", id="wait-inf"),
        pytest.param({"wait": "2"}, "wait='2' is not a tenacity wait strategy", id="wait-str"),
        pytest.param({"wait": True}, "wait=True is not a tenacity wait strategy", id="wait-bool"),
        pytest.param({"retry": 3}, "retry=3 is not a tenacity retry strategy", id="retry-int"),
        pytest.param(
            {"retry": ValueError()}, "is not a tenacity retry strategy", id="retry-instance"
        ),
    ],
)
def test_invalid_values_raise_configuration_error(options: dict[str, Any], message: str) -> None:
    """An invalid stop/wait/retry raises ConfigurationError saying what is wrong."""
    with pytest.raises(ConfigurationError) as excinfo:
        make_policy(**options)
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    ("name", "value", "example"),
    [
        ("stop", "x", "stop=tenacity.stop_after_attempt(5)"),
        ("wait", "x", "wait=tenacity.wait_exponential_jitter(initial=1, max=300)"),
        ("retry", "x", "retry=tenacity.retry_if_exception_type(MyError)"),
    ],
)
def test_non_callable_strategy_error_shows_an_example(name: str, value: Any, example: str) -> None:
    """The error for a non-strategy says how to fix it with a tenacity example."""
    with pytest.raises(ConfigurationError, match=re.escape(f"e.g. {example}.")):
        make_policy(**{name: value})


@pytest.mark.parametrize(
    ("returned", "expected"),
    [(float("inf"), MAX_DELAY), (float("nan"), MAX_DELAY), (1e15, MAX_DELAY), (-5.0, 0.0)],
    ids=["inf", "nan", "huge", "negative"],
)
def test_a_strategy_returning_an_unusable_delay_is_clamped(returned, expected):
    """A wait strategy's infinite, NaN, huge or negative delay becomes a schedulable one."""
    policy = make_policy(wait=lambda state: returned)
    decision = policy.decide(attempt=1, exception=ValueError(), seconds_since_start=0)
    assert decision is not None and decision.delay == expected
