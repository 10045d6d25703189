"""``@reliable_task``: a Celery task whose every dispatch goes through the run ledger.

The decorator validates its options at decoration time (with "did you mean" hints), freezes the
tenacity strategies into a ``RetryPolicy`` and registers a ``ReliableTask`` with Celery's
``shared_task``, so it binds to whichever Celery app the project uses. ``.delay()`` and
``.apply_async()`` dispatch through ``taskkit.producer.dispatch``; a worker executes through
``taskkit.worker.execution``; calling the task object directly runs the function in-process.
Both sides receive the task as a ``TaskSpec`` (``ReliableTask.spec``, built once), never this
module: this is the one place that knows both, and wires the worker's publishing to the
producer's publisher. Per-task configuration lives on the task class and is never mutated;
per-run state never lives on the task object (it is a per-process singleton).
"""

from __future__ import annotations

import datetime
import difflib
import functools
import inspect
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypedDict, TypeVar, cast, overload

import celery

from .core.exceptions import ConfigurationError
from .core.headers import MessageHeaders
from .core.policy import ON_MISSING_CHOICES, RetryPolicy, make_policy
from .core.spec import TaskSpec

if TYPE_CHECKING:
    from typing import Unpack

    from .producer.result import RunResult

P = ParamSpec("P")  # the decorated function's parameters
R = TypeVar("R")  # the decorated function's return type


class CeleryTaskOptions(TypedDict, total=False):
    """The Celery options ``@reliable_task(...)`` passes through (``CELERY_OPTIONS``), for type
    checkers: any other keyword (a typo, or an option taskkit replaces such as ``max_retries``)
    is flagged before the decorator's runtime check explains it."""

    name: str
    time_limit: float | None
    soft_time_limit: float | None
    rate_limit: str | float | None
    priority: int | None
    ignore_result: bool
    track_started: bool
    store_errors_even_if_ignored: bool
    routing_key: str | None
    exchange: str | None


class BatchOptions(TypedDict, total=False):
    """The options of ``delay_many`` (common to every run of the batch), for type checkers.

    The runtime check (``taskkit.producer.dispatch``) stays the authority: it refuses Celery
    options reliable tasks do not support (``expires``, ``headers``, …) with the reason, which a
    type checker flags earlier as an unexpected keyword.
    """

    queue: str | None
    priority: int | None
    routing_key: str | None
    exchange: str | None
    countdown: float | None
    eta: datetime.datetime | None


class ApplyOptions(BatchOptions, total=False):
    """The options of ``apply_async`` beyond ``task_id``, for type checkers."""

    idempotency_key: str | None


#: Celery task options passed through unchanged.
CELERY_OPTIONS = frozenset(
    {
        "name",
        "time_limit",
        "soft_time_limit",
        "rate_limit",
        "priority",
        "ignore_result",
        "track_started",
        "store_errors_even_if_ignored",
        "routing_key",
        "exchange",
    }
)

#: Celery options that reliable tasks replace, and what to use instead.
REPLACED_OPTIONS = {
    "bind": "use taskkit.current_run() inside the task for the run id, attempt and key",
    "max_retries": "use stop=tenacity.stop_after_attempt(N)",
    "default_retry_delay": "use wait=tenacity.wait_fixed(seconds)",
    "autoretry_for": "use retry=tenacity.retry_if_exception_type(...)",
    "retry_backoff": "use wait=tenacity.wait_exponential_jitter(...)",
    "retry_backoff_max": "use wait=tenacity.wait_exponential_jitter(max=...)",
    "retry_jitter": "use wait=tenacity.wait_exponential_jitter(...)",
    "retry_kwargs": "use stop= and wait= with tenacity strategies",
    "acks_late": "reliable tasks always acknowledge late",
    "reject_on_worker_lost": "reliable tasks always requeue on a lost worker",
    "serializer": "reliable tasks always travel as JSON",
    "base": "reliable tasks use taskkit.task.ReliableTask",
    "typing": "arguments are always checked against the function's signature",
    "expires": "a committed run always reaches a terminal state",
}

_TASKKIT_OPTIONS = (
    "stop",
    "wait",
    "retry",
    "idempotency_key",
    "on_missing",
    "atomic",
    "queue",
    "sensitive",
    "adopt",
)


class ReliableTask(celery.Task, Generic[P, R]):
    """Base class of every ``@reliable_task``.

    Generic over the decorated function's parameters ``P`` and return type ``R``, so a type
    checker checks ``.delay()``'s and a direct call's arguments against the function's
    signature. At runtime ``Generic`` only adds itself to the MRO (Celery's ``Task`` already
    supports subscripting); Celery builds each task as a subclass, as for any ``base=``.
    """

    acks_late = True
    reject_on_worker_lost = True
    typing = False  # taskkit binds arguments to the signature itself, before writing the run
    Request = "taskkit.worker.request:ReliableRequest"

    is_reliable = True
    policy: RetryPolicy
    idempotency_key_fn: Callable[..., str] | None = None
    on_missing: str = "fail"
    atomic: bool = False
    call_signature: inspect.Signature | None = None
    reliable_queue: str | None = None  # decorator's queue= (Celery 5.7 deprecates Task.queue)
    sensitive: tuple[str, ...] = ()  # parameters kept out of the admin, logs, and the ended run
    adopt: bool = True  # run messages sent without taskkit (see taskkit.worker.execution._adopt)

    if TYPE_CHECKING:
        # Celery sets ``run`` on each task's class to the decorated function; declared for type
        # checkers only, so that at runtime Celery's own Task.run stays the fallback.
        def run(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    @property
    def backend(self) -> Any:
        """The app's result backend; a django-db one skips the writes taskkit made already (the
        ``TaskResult`` row is written with the run's outcome: ``taskkit.worker.results``)."""
        from .worker.results import ledger_backend  # models load after the app registry

        return ledger_backend(celery.Task.backend.fget(self))

    @backend.setter
    def backend(self, value: Any) -> None:
        celery.Task.backend.fset(self, value)

    @functools.cached_property
    def spec(self) -> TaskSpec:
        """The task as the producer and the worker see it (built at first use, when bound)."""
        return TaskSpec(
            name=self.name,
            app=self.app,
            policy=self.policy,
            signature=self.call_signature,
            idempotency_key_fn=self.idempotency_key_fn,
            on_missing=self.on_missing,
            atomic=self.atomic,
            queue=self.reliable_queue,
            sensitive=self.sensitive,
            adopt=self.adopt,
            time_limit=self.time_limit,
            body=self._body,
            send=self._send,
            publish=_publish_many,
        )

    def _body(self, *args: Any, **kwargs: Any) -> Any:
        # self.run at call time: testing's faults patch it. The worker decodes the stored call
        # (checked against the signature at dispatch), hence untyped here.
        return cast(Any, self).run(*args, **kwargs)

    def _send(self, **options: Any) -> Any:
        return celery.Task.apply_async(self, **options)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        request = self.request_stack.top
        if request is not None and not request.called_directly and request.id:
            from .worker.execution import execute  # models load after the app registry

            return execute(self.spec, request)  # a worker (or eager apply) runs the run
        return self.run(*args, **kwargs)

    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | uuid.UUID | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: Any = None,
        **typed_options: Unpack[ApplyOptions],
    ) -> RunResult:
        """Dispatch one run with ``args`` and ``kwargs`` and options (``countdown=``, …).

        ``args``/``kwargs`` are a tuple and a dict, which ``P`` cannot describe: a type checker
        checks ``.delay()``'s arguments, not these (dispatch checks them against the signature,
        before anything is written). ``producer``, ``link``, ``link_error`` and ``shadow`` keep
        their place in Celery's signature; dispatch refuses them when given, with the reason.
        """
        options = cast("dict[str, Any]", typed_options)  # the same dict, not a copy
        for name, value in (
            ("producer", producer),
            ("link", link),
            ("link_error", link_error),
            ("shadow", shadow),
        ):
            if value is not None:
                options[name] = value
        if task_id is not None:
            options["task_id"] = task_id
        from .producer.dispatch import dispatch  # models load after the app registry

        return dispatch(self.spec, tuple(args or ()), dict(kwargs or {}), options)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> RunResult:
        """Dispatch one run of the function with these arguments (type-checked against it)."""
        return self.apply_async(args, kwargs)

    def delay_many(self, calls: Iterable[Any], **options: Unpack[BatchOptions]) -> list[RunResult]:
        """Dispatch one run per item of ``calls`` in one INSERT and one publish batch.

        Each item is a tuple of positional arguments, or an ``(args, kwargs)`` pair;
        ``options`` (``queue``, ``countdown``, …) apply to every run. Returns the runs' results
        in input order. See ``taskkit.producer.dispatch.dispatch_many``.

        Items are not type-checked against ``P``: a ParamSpec has no tuple form to check an
        args tuple (or an ``(args, kwargs)`` pair) against, and a bare tuple and a pair cannot be
        told apart by type. The arguments are checked against the signature at dispatch, before
        anything is written.
        """
        from .producer.dispatch import dispatch_many  # models load after the app registry

        return dispatch_many(self.spec, calls, options)


def _publish_many(
    spec: TaskSpec,
    run_ids: list[Any],
    options: dict[str, Any],
    not_before: datetime.datetime | None = None,
    headers: Mapping[Any, MessageHeaders] | None = None,
) -> list[Any]:
    """The publish point every spec carries: the producer's, looked up when called (so that
    ``taskkit.testing.capture()`` replaces it for the worker and the relay too)."""
    from .producer import publisher  # models load after the app registry

    return publisher.publish_many(spec, run_ids, options, not_before, headers)


@overload
def reliable_task(fn: Callable[P, R], /) -> ReliableTask[P, R]: ...


@overload
def reliable_task(
    *,
    stop: Any = None,
    wait: Any = None,
    retry: Any = None,
    idempotency_key: Callable[..., str] | None = None,
    on_missing: str = "fail",
    atomic: bool = False,
    queue: str | None = None,
    sensitive: Iterable[str] | str = (),
    adopt: bool = True,
    **celery_options: Unpack[CeleryTaskOptions],
) -> Callable[[Callable[P, R]], ReliableTask[P, R]]: ...


def reliable_task(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    stop: Any = None,
    wait: Any = None,
    retry: Any = None,
    idempotency_key: Callable[..., str] | None = None,
    on_missing: str = "fail",
    atomic: bool = False,
    queue: str | None = None,
    sensitive: Iterable[str] | str = (),
    adopt: bool = True,
    **celery_options: Any,
) -> Any:
    """Declare a reliable task.

    Its options: docs/reference/tasks.md; the guarantees: docs/reliability.md.
    """
    _check_celery_options(celery_options)
    if on_missing not in ON_MISSING_CHOICES:
        raise ConfigurationError(
            f"on_missing={on_missing!r}: choose one of {', '.join(map(repr, ON_MISSING_CHOICES))}"
            f"{_did_you_mean(str(on_missing), ON_MISSING_CHOICES)}."
        )
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise ConfigurationError(f"queue={queue!r}: pass the name of a queue as a non-empty str.")
    if not isinstance(atomic, bool):
        raise ConfigurationError(f"atomic={atomic!r}: pass True or False.")
    if not isinstance(adopt, bool):
        raise ConfigurationError(
            f"adopt={adopt!r}: pass True (run messages sent without taskkit, e.g. by celery "
            "beat, after .delay()'s checks) or False (record them as FAILED runs, never run)."
        )
    if idempotency_key is not None and not callable(idempotency_key):
        raise ConfigurationError(
            f"idempotency_key={idempotency_key!r} must be a function of the task's arguments "
            "returning a str, e.g. idempotency_key=lambda order: f'charge:{order.pk}'. To give "
            "one key to one call, pass apply_async(..., idempotency_key='…')."
        )
    policy = make_policy(stop=stop, wait=wait, retry=retry)

    def decorate(func: Callable[..., Any]) -> ReliableTask[Any, Any]:
        if not callable(func):
            raise ConfigurationError(f"@reliable_task decorates a function, not {func!r}.")
        try:
            signature: inspect.Signature | None = inspect.signature(func)
        except (TypeError, ValueError):
            signature = None
        sensitive_names = _check_sensitive(func, signature, sensitive)
        task = celery.shared_task(
            base=ReliableTask,
            policy=policy,
            idempotency_key_fn=staticmethod(idempotency_key) if idempotency_key else None,
            on_missing=on_missing,
            atomic=atomic,
            call_signature=signature,
            reliable_queue=queue,
            sensitive=sensitive_names,
            adopt=adopt,
            **celery_options,
        )(func)
        return task

    if fn is not None:
        return decorate(fn)
    return decorate


def _check_celery_options(options: Mapping[str, Any]) -> None:
    for name in options:
        if name in CELERY_OPTIONS:
            continue
        if name in REPLACED_OPTIONS:
            raise ConfigurationError(
                f"@reliable_task({name}=…) is not supported: {REPLACED_OPTIONS[name]}."
            )
        known = (*_TASKKIT_OPTIONS, *CELERY_OPTIONS)
        raise ConfigurationError(
            f"@reliable_task got an unknown option {name!r}{_did_you_mean(name, known)}. "
            f"taskkit options: {', '.join(_TASKKIT_OPTIONS)}; Celery options passed through: "
            f"{', '.join(sorted(CELERY_OPTIONS))}."
        )


def _check_sensitive(
    func: Callable[..., Any], signature: inspect.Signature | None, sensitive: Any
) -> tuple[str, ...]:
    """``sensitive=``: a name or names of the function's parameters (a str is one name)."""
    names = (sensitive,) if isinstance(sensitive, str) else sensitive
    try:
        names = tuple(names)
    except TypeError:
        names = (names,)
    name_of = getattr(func, "__qualname__", repr(func))
    for name in names:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(
                f"sensitive={sensitive!r}: pass parameter names as str, e.g. sensitive=('card',)."
            )
    if names and signature is None:
        raise ConfigurationError(
            f"sensitive={sensitive!r}: the signature of {name_of} cannot be read, so taskkit "
            "cannot tell where its sensitive arguments are; decorate a plain Python function."
        )
    if signature is not None:
        params = signature.parameters
        for name in names:
            if name not in params:
                raise ConfigurationError(
                    f"sensitive: {name!r} is not a parameter of {name_of}"
                    f"{_did_you_mean(name, params)}; its parameters are "
                    f"{', '.join(params) or 'none'}."
                )
    return tuple(dict.fromkeys(names))


def _did_you_mean(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


__all__ = ["ReliableTask", "reliable_task"]
