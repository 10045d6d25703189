"""Unit tests of @reliable_task's decoration-time validation (taskkit/task.py).

Every task declared here has a unique ``name=`` so that Celery's registry has no clashes.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import tenacity
from django.core.exceptions import ImproperlyConfigured

from taskkit.core.exceptions import ConfigurationError
from taskkit.core.policy import RetryDecision
from taskkit.task import REPLACED_OPTIONS, ReliableTask, reliable_task


def _add(a: int, b: int = 1) -> int:
    return a + b


@pytest.mark.parametrize(
    ("option", "suggestion"),
    [
        ("time_limt", "time_limit"),
        ("soft_time_limt", "soft_time_limit"),
        ("idempotency", "idempotency_key"),
        ("on_mising", "on_missing"),
        ("atomc", "atomic"),
        ("queu", "queue"),
        ("adpot", "adopt"),
        ("rate_limt", "rate_limit"),
    ],
)
def test_unknown_option_suggests_the_closest_name(option: str, suggestion: str) -> None:
    """A misspelt option fails at decoration time with "did you mean" the right one."""
    with pytest.raises(ConfigurationError) as excinfo:
        reliable_task(name=f"unit.options.unknown.{option}", **{option: 1})
    message = str(excinfo.value)
    assert f"unknown option {option!r}" in message
    assert f"(did you mean {suggestion!r}?)" in message
    assert "taskkit options: stop, wait, retry" in message


def test_unknown_option_without_a_close_match_lists_the_options() -> None:
    """An option resembling nothing gets no suggestion but the list of valid options."""
    with pytest.raises(ConfigurationError) as excinfo:
        reliable_task(name="unit.options.unknown.zzz", zzzzzz=1)
    message = str(excinfo.value)
    assert "unknown option 'zzzzzz'" in message
    assert "did you mean" not in message
    assert "Celery options passed through:" in message
    assert "time_limit" in message


def test_configuration_error_is_improperly_configured() -> None:
    """ConfigurationError subclasses Django's ImproperlyConfigured."""
    with pytest.raises(ImproperlyConfigured):
        reliable_task(name="unit.options.improperly", time_limt=5)


@pytest.mark.parametrize(
    ("option", "value", "replacement"),
    [
        ("bind", True, "taskkit.current_run()"),
        ("max_retries", 3, "stop=tenacity.stop_after_attempt(N)"),
        ("default_retry_delay", 5, "wait=tenacity.wait_fixed(seconds)"),
        ("autoretry_for", (ValueError,), "retry=tenacity.retry_if_exception_type(...)"),
        ("retry_backoff", True, "wait=tenacity.wait_exponential_jitter(...)"),
        ("retry_kwargs", {"max_retries": 2}, "stop= and wait= with tenacity strategies"),
        ("acks_late", True, "reliable tasks always acknowledge late"),
        ("reject_on_worker_lost", False, "always requeue on a lost worker"),
        ("serializer", "pickle", "always travel as JSON"),
        ("base", object, "taskkit.task.ReliableTask"),
        ("expires", 60, "always reaches a terminal state"),
    ],
)
def test_replaced_celery_option_names_the_replacement(
    option: str, value: Any, replacement: str
) -> None:
    """A Celery option that taskkit replaces fails and says what to use instead."""
    with pytest.raises(ConfigurationError) as excinfo:
        reliable_task(name=f"unit.options.replaced.{option}", **{option: value})
    message = str(excinfo.value)
    assert message.startswith(f"@reliable_task({option}=…) is not supported: ")
    assert replacement in message
    assert REPLACED_OPTIONS[option] in message


@pytest.mark.parametrize(
    ("on_missing", "expected"),
    [
        ("discrad", "(did you mean 'discard'?)"),
        ("fial", "(did you mean 'fail'?)"),
        ("retyr", "(did you mean 'retry'?)"),
        ("ignore", "choose one of 'fail', 'discard', 'retry'."),
        (None, "on_missing=None: choose one of 'fail', 'discard', 'retry'"),
    ],
)
def test_bad_on_missing_lists_choices_and_suggests(on_missing: Any, expected: str) -> None:
    """An invalid on_missing fails with the choices and, when close, a suggestion."""
    with pytest.raises(ConfigurationError) as excinfo:
        reliable_task(name=f"unit.options.on_missing.{on_missing}", on_missing=on_missing)
    assert expected in str(excinfo.value)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("charge:1", id="str"),
        pytest.param(42, id="int"),
        pytest.param(["k"], id="list"),
    ],
)
def test_non_callable_idempotency_key_is_refused(key: Any) -> None:
    """idempotency_key must be a function; the error shows one and the per-call alternative."""
    with pytest.raises(ConfigurationError) as excinfo:
        reliable_task(name="unit.options.idem", idempotency_key=key)
    message = str(excinfo.value)
    assert message.startswith(f"idempotency_key={key!r} must be a function")
    assert "apply_async(..., idempotency_key=" in message


@pytest.mark.parametrize("atomic", ["yes", 1, 0, None, "False"])
def test_non_bool_atomic_is_refused(atomic: Any) -> None:
    """atomic accepts only True or False, not truthy or falsy stand-ins."""
    with pytest.raises(ConfigurationError, match=re.escape(f"atomic={atomic!r}: pass True or")):
        reliable_task(name="unit.options.atomic", atomic=atomic)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stop": 0}, "stop=0"),
        ({"wait": -1}, "wait=-1"),
        ({"retry": "always"}, "retry='always'"),
    ],
)
def test_bad_retry_policy_fails_at_decoration(options: dict[str, Any], message: str) -> None:
    """An invalid stop/wait/retry fails when the decorator is applied, not at the first failure."""
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        reliable_task(name="unit.options.policy", **options)


def test_decorating_a_non_callable_is_refused() -> None:
    """Applying the decorator to something that is not a function fails with a clear message."""
    with pytest.raises(ConfigurationError, match="decorates a function"):
        reliable_task(name="unit.options.not_callable")(42)


def test_valid_options_produce_a_configured_reliable_task() -> None:
    """Valid options are stored on the task, which acks late and requeues on a lost worker."""

    def key(a: int, b: int = 1) -> str:
        return f"add:{a}:{b}"

    task = reliable_task(
        name="unit.options.valid",
        stop=3,
        wait=2,
        retry=tenacity.retry_if_exception_type(ValueError),
        idempotency_key=key,
        on_missing="discard",
        atomic=True,
        queue="payments",
        time_limit=30,
        soft_time_limit=20,
    )(_add)

    assert isinstance(task, ReliableTask)
    assert task.name == "unit.options.valid"
    assert task.acks_late is True
    assert task.reject_on_worker_lost is True
    assert task.is_reliable is True
    assert task.on_missing == "discard"
    assert task.atomic is True
    assert task.reliable_queue == "payments"
    assert task.time_limit == 30
    assert task.soft_time_limit == 20
    assert task.idempotency_key_fn(5, b=2) == "add:5:2"
    assert list(task.call_signature.parameters) == ["a", "b"]
    assert task.policy.decide(attempt=1, exception=ValueError(), seconds_since_start=0) == (
        RetryDecision(delay=2.0)
    )
    assert task.policy.decide(attempt=1, exception=KeyError(), seconds_since_start=0) is None
    assert task.policy.decide(attempt=3, exception=ValueError(), seconds_since_start=0) is None


def test_defaults_of_a_decorated_task() -> None:
    """Without options a task fails on missing objects, is not atomic and has no key function."""
    task = reliable_task(name="unit.options.defaults")(_add)
    assert task.acks_late is True
    assert task.reject_on_worker_lost is True
    assert task.on_missing == "fail"
    assert task.atomic is False
    assert task.idempotency_key_fn is None
    assert task.reliable_queue is None
    assert task.adopt is True


@pytest.mark.parametrize("adopt", ["no", 0, None])
def test_non_bool_adopt_is_refused(adopt: Any) -> None:
    """adopt accepts only True or False, and the refusal says what each means."""
    with pytest.raises(ConfigurationError, match=re.escape(f"adopt={adopt!r}: pass True (run")):
        reliable_task(name="unit.options.adopt", adopt=adopt)


def test_adopt_false_is_kept_on_the_task() -> None:
    task = reliable_task(name="unit.options.no_adopt", adopt=False)(_add)
    assert task.adopt is False


def test_called_directly_runs_the_function_in_process() -> None:
    """Calling the task object runs the function here, without the ledger or a broker."""
    task = reliable_task(name="unit.options.direct")(_add)
    assert task(2, b=5) == 7


@reliable_task
def bare(x: int) -> int:
    """Declared with a bare @reliable_task."""
    return x * 2


def test_bare_decorator_works() -> None:
    """A bare @reliable_task (no parentheses) makes a reliable task with the default policy."""
    assert isinstance(bare, ReliableTask)
    assert bare.name == f"{__name__}.bare"
    assert bare.acks_late is True
    assert bare.reject_on_worker_lost is True
    assert bare.on_missing == "fail"
    assert bare(21) == 42
    assert list(bare.call_signature.parameters) == ["x"]
    # The default policy: 5 attempts.
    assert bare.policy.decide(attempt=4, exception=ValueError(), seconds_since_start=0)
    assert bare.policy.decide(attempt=5, exception=ValueError(), seconds_since_start=0) is None
