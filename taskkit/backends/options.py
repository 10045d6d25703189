"""What taskkit adds to a Django task: its retry policy and run options, from the backend's
``OPTIONS`` (the default of every task) and ``@task_options`` (one task's own).

Both take ``@reliable_task``'s names and shorthands: ``stop`` (``tenacity`` stop strategy, or a
number of attempts), ``wait`` (a wait strategy, or seconds), ``retry`` (a retry predicate,
``True`` / ``False``), ``atomic`` (the body and the SUCCEEDED transition in one transaction),
``time_limit`` / ``soft_time_limit`` (seconds). ``@task_options`` goes *under* Django's ``@task``::

    @task(priority=10)
    @task_options(stop=3, wait=2, atomic=True)
    def send_receipt(order_id): ...
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..core.exceptions import ConfigurationError
from ..core.policy import make_policy

F = TypeVar("F", bound=Callable[..., Any])

#: The option names, in both places.
NAMES = ("stop", "wait", "retry", "atomic", "time_limit", "soft_time_limit")

#: The attribute ``@task_options`` sets on the function.
ATTRIBUTE = "__taskkit_options__"


def check(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``options`` as given, checked (names, types, the strategies); ``ConfigurationError`` says
    what is wrong and how to fix it."""
    if not isinstance(options, Mapping):
        raise ConfigurationError(
            f"{where} must be a dict of taskkit options ({', '.join(NAMES)}), "
            f"not {type(options).__name__}."
        )
    for name in options:
        if name not in NAMES:
            close = difflib.get_close_matches(str(name), NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigurationError(
                f"{where}: unknown option {name!r}{hint}; the options are {', '.join(NAMES)}."
            )
    if not isinstance(options.get("atomic", False), bool):
        raise ConfigurationError(f"{where}: atomic={options['atomic']!r}: pass True or False.")
    for name in ("time_limit", "soft_time_limit"):
        value = options.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
        ):
            raise ConfigurationError(f"{where}: {name}={value!r}: pass a number of seconds > 0.")
    make_policy(options.get("stop"), options.get("wait"), options.get("retry"))  # raises if bad
    return dict(options)


def merged(defaults: Mapping[str, Any], func: Callable[..., Any]) -> dict[str, Any]:
    """The options of the task whose function is ``func``: ``defaults`` (the backend's
    ``OPTIONS``), each overridden by the function's ``@task_options``; unset ones left out."""
    options = {**defaults, **getattr(func, ATTRIBUTE, {})}
    return {name: value for name, value in options.items() if value is not None}


def task_options(**options: Any) -> Callable[[F], F]:
    """One Django task's retry policy and run options (see the module docstring)."""
    checked = check(options, "@task_options")

    def decorate(func: F) -> F:
        if not callable(func) or not hasattr(func, "__dict__"):
            raise ConfigurationError(
                f"@task_options decorates the task's function, under @task: got {func!r}. "
                "Write @task(...) first, then @task_options(...) on the line below it."
            )
        setattr(func, ATTRIBUTE, checked)
        return func

    return decorate


__all__ = ["NAMES", "check", "merged", "task_options"]
