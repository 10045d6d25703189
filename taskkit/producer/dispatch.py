"""The producer side: a call to ``.delay()`` / ``.apply_async()`` becomes a ledger row.

The row is written in the caller's transaction (on the ledger's database) and the message is
published by ``transaction.on_commit``: a rollback leaves nothing and publishes nothing; outside
a transaction the publish happens at once. The row is written QUEUED, *published unless proven
otherwise* (``taskkit.core.ledger.expect_publish``): the happy path is that one INSERT and the
publish, no second write; a failed publish puts it back to PENDING, and a run whose publish never
happened (the process died) is published by the relay at its deadline.

With an idempotency key the insert is ``INSERT … ON CONFLICT DO NOTHING`` against a unique
constraint, so concurrent dispatches of one key from any number of processes make one run, never
raise, and leave the caller's transaction usable; every caller gets the same run id.
"""

from __future__ import annotations

import datetime
import functools
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import connections, transaction
from django.utils import timezone

from ..core import headers, ledger, redaction, signals, sql
from ..core.conf import settings
from ..core.context import current_request_id, current_run
from ..core.db import db_alias
from ..core.exceptions import InvalidIdempotencyKey, UnsupportedOption
from ..core.serialization import encode_call
from ..core.spec import PUBLISH_OPTIONS, TaskSpec
from ..models import RunState, TaskRun
from . import publisher
from .result import RunResult

#: apply_async options a reliable task accepts.
SUPPORTED_OPTIONS = frozenset(
    {
        "queue",
        "priority",
        "routing_key",
        "exchange",
        "countdown",
        "eta",
        "idempotency_key",
        "task_id",
    }
)

_WHY_NOT = {
    "link": "callbacks would bypass the ledger; dispatch the next task from inside this one.",
    "link_error": "failures are recorded in the ledger; connect to the run's outcome instead.",
    "expires": "a run, once committed, always reaches a terminal state; discard it instead.",
    "serializer": "reliable tasks always travel as JSON.",
    "headers": "the message only carries the run id; put the data in the arguments.",
    "retry": "publishing is bounded by taskkit; see TASKKIT_PUBLISH_* settings.",
    "retry_policy": "publishing is bounded by taskkit; see TASKKIT_PUBLISH_* settings.",
}


def dispatch(
    spec: TaskSpec,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
    *,
    annotate: Mapping[str, Any] | None = None,
) -> RunResult:
    """Write one run in the caller's transaction and publish it on commit. ``annotate`` is kept
    in the run's options and never published (the django.tasks backend's alias, priority and
    ``run_after``); it is not an ``apply_async`` option."""
    _check_options(spec, options, "apply_async")

    encoded_args, encoded_kwargs = encode_call(
        spec.signature, spec.name, tuple(args), dict(kwargs), settings.MAX_PAYLOAD_BYTES
    )
    key = options.get("idempotency_key")
    if key is None and spec.idempotency_key_fn is not None:
        key = spec.idempotency_key_fn(*args, **kwargs)
    if key is not None:
        _check_key(spec.name, key)
    not_before = _not_before(options.get("countdown"), options.get("eta"))
    publish_options = _publish_options(spec, options)
    run_id = _run_id(options.get("task_id"))
    run_options = run_options_for(spec, publish_options, encoded_args, encoded_kwargs, key)
    if annotate:
        run_options = {**annotate, **run_options}

    now = timezone.now()
    run = _new_run(
        spec,
        run_id,
        publish_options.get("queue") or spec.app.conf.task_default_queue,
        (encoded_args, encoded_kwargs, run_options, key),
        not_before,
        now,
        current_request_id(),
    )
    db = db_alias()
    if key is None:
        ledger.create_run(run)
        created = True
    else:
        ledger.create_runs([run], ignore_conflicts=True)
        existing_id = (
            TaskRun.objects.using(db)
            .filter(task_name=spec.name, idempotency_key=key)
            .values_list("id", flat=True)
            .get()
        )
        created = existing_id == run_id
        run_id = existing_id
    signals.send(signals.run_dispatched, spec.name, run_id=run_id, created=created)
    if created:
        shown = headers.for_run(encoded_args, encoded_kwargs, run_options)
        transaction.on_commit(
            functools.partial(
                publisher.publish_new,
                spec,
                run_id,
                publish_options,
                not_before,
                run.queued_at,
                shown,
            ),
            using=db,
        )
    return RunResult(str(run_id), created=created, app=spec.app, task_name=spec.name)


def run_options_for(
    spec: TaskSpec,
    publish_options: dict[str, Any],
    encoded_args: list[Any],
    encoded_kwargs: dict[str, Any],
    key: str | None = None,
) -> dict[str, Any]:
    """The run's stored options: the publish options, plus where its sensitive values are, plus
    the run that dispatched it when dispatched from inside one (``headers.PARENT`` / ``ROOT``).

    The scrub spec (``redaction.SPEC``) is decided here, from the call as bound to the signature,
    and stored on the row, so whoever ends the run can scrub it without knowing the task. A key
    holding a sensitive value is refused (keys are stored in clear). Tasks without ``sensitive=``
    get ``publish_options`` itself, at no cost.
    """
    parent = current_run()
    if parent is not None:
        publish_options = {
            **publish_options,
            **headers.origin_options(parent.run_id, parent.root_id),
        }
    if not spec.sensitive:
        return publish_options
    scrub = redaction.spec_for(spec.signature, spec.sensitive, len(encoded_args), encoded_kwargs)
    if scrub is None:
        return publish_options
    if key is not None:
        redaction.check_key(
            spec.name, key, redaction.secret_texts(encoded_args, encoded_kwargs, scrub)
        )
    return {**publish_options, redaction.SPEC: scrub}


def _new_run(
    spec: TaskSpec,
    run_id: Any,
    queue: str,
    call: tuple[list[Any], dict[str, Any], dict[str, Any], str | None],
    not_before: datetime.datetime | None,
    now: datetime.datetime,
    request_id: str,
) -> TaskRun:
    """The row of one dispatch (single or bulk), written published-unless-proven-otherwise."""
    args, kwargs, options, key = call
    run = sql.new_instance(
        TaskRun,
        {
            "id": run_id,
            "task_name": spec.name,
            "queue": queue,
            "args": args,
            "kwargs": kwargs,
            "options": options,
            "idempotency_key": key,
            "state": RunState.PENDING,
            "not_before": not_before,
            "created_at": now,
            "request_id": request_id,
        },
    )
    ledger.expect_publish(run, now)
    return run


def _check_options(spec: TaskSpec, options: Mapping[str, Any], method: str) -> None:
    unsupported = sorted(k for k, v in options.items() if k not in SUPPORTED_OPTIONS and v)
    if unsupported:
        name = unsupported[0]
        why = _WHY_NOT.get(name, f"supported options are {', '.join(sorted(SUPPORTED_OPTIONS))}.")
        raise UnsupportedOption(f"{spec.name}.{method}({name}=…) is not supported: {why}")


def _publish_options(spec: TaskSpec, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options every (re)publish of the run uses; the decorator's queue= by default."""
    publish_options = {k: options[k] for k in PUBLISH_OPTIONS if options.get(k)}
    if "queue" not in publish_options and spec.queue:
        publish_options["queue"] = spec.queue
    return publish_options


def _check_key(task_name: str, key: Any) -> None:
    if not isinstance(key, str) or not key or len(key) > 255:
        raise InvalidIdempotencyKey(
            f"{task_name}: the idempotency key {key!r} must be a non-empty str of at most 255 "
            "characters; build it from stable identifiers, e.g. f'charge:{order.pk}'."
        )


def _not_before(countdown: Any, eta: Any) -> datetime.datetime | None:
    if eta is not None:
        if not isinstance(eta, datetime.datetime):
            raise TypeError(f"eta must be a datetime, not {type(eta).__name__}.")
        if timezone.is_naive(eta):
            eta = timezone.make_aware(eta, datetime.UTC)
        return eta
    if countdown:
        return timezone.now() + datetime.timedelta(seconds=float(countdown))
    return None


def _run_id(task_id: Any) -> uuid.UUID:
    if task_id is None:
        return uuid.uuid4()
    try:
        return uuid.UUID(str(task_id))
    except ValueError:
        raise UnsupportedOption(
            f"task_id={task_id!r}: a run id must be a UUID (it is the ledger's primary key)."
        ) from None


#: Options of ``delay_many`` that name one run, so cannot be common to a batch.
_PER_RUN_OPTIONS = {
    "idempotency_key": "give the task an idempotency_key= function of its arguments instead.",
    "task_id": "every run of a batch gets its own id.",
}


def dispatch_many(
    spec: TaskSpec, calls: Iterable[Any], options: Mapping[str, Any]
) -> list[RunResult]:
    """Dispatch many runs of ``task``: one INSERT, and after commit one pipelined publish.

    Each item of ``calls`` is a tuple (or list) of positional arguments, or an ``(args, kwargs)``
    pair: a 2-tuple whose first item is a tuple or list and whose second is a dict is always read
    as a pair (to pass a list and a dict positionally, write ``((a_list, a_dict), {})``).
    ``options`` apply to every run (``queue``, ``priority``, ``countdown``, ``eta``, …).

    Every call is checked and encoded before anything is written; a refused call raises the same
    exception ``.delay()`` would, its message starting with the item's index. Keys come from the
    task's ``idempotency_key`` function: a key already in the ledger hands back the existing run,
    and items of the batch that share a key share one run (the first one creates it). Returns one
    ``RunResult`` per item, in order.
    """
    per_run = sorted(k for k in options if k in _PER_RUN_OPTIONS and options[k] is not None)
    if per_run:
        raise UnsupportedOption(
            f"{spec.name}.delay_many({per_run[0]}=…) is not supported: "
            f"{_PER_RUN_OPTIONS[per_run[0]]}"
        )
    _check_options(spec, options, "delay_many")
    not_before = _not_before(options.get("countdown"), options.get("eta"))
    publish_options = _publish_options(spec, options)
    queue = publish_options.get("queue") or spec.app.conf.task_default_queue
    max_bytes = settings.MAX_PAYLOAD_BYTES
    request_id = current_request_id()
    now = timezone.now()

    runs: list[TaskRun] = []
    for index, item in enumerate(calls):
        args, kwargs = _split_call(spec.name, index, item)
        try:
            encoded_args, encoded_kwargs = encode_call(
                spec.signature, spec.name, args, kwargs, max_bytes
            )
            key = spec.idempotency_key_fn(*args, **kwargs) if spec.idempotency_key_fn else None
            if key is not None:
                _check_key(spec.name, key)
            run_options = run_options_for(spec, publish_options, encoded_args, encoded_kwargs, key)
        except Exception as exc:
            raise _at_index(exc, spec.name, index) from exc
        runs.append(
            _new_run(
                spec,
                uuid.uuid4(),
                queue,
                (encoded_args, encoded_kwargs, run_options, key),
                not_before,
                now,
                request_id,
            )
        )

    first_of_key: dict[str, TaskRun] = {}
    for run in runs:
        if run.idempotency_key is not None:
            first_of_key.setdefault(run.idempotency_key, run)
    unkeyed = [run for run in runs if run.idempotency_key is None]
    db = db_alias()
    manager = TaskRun.objects.using(db)
    if unkeyed:
        ledger.create_runs(unkeyed)
    existing: dict[str | None, Any] = {}
    if first_of_key:
        ledger.create_runs(list(first_of_key.values()), ignore_conflicts=True)
        keys = list(first_of_key)
        size = (connections[db].features.max_query_params or 65_000) - 10
        for start in range(0, len(keys), size):
            existing.update(
                manager.filter(task_name=spec.name, idempotency_key__in=keys[start : start + size])
                .values_list("idempotency_key", "id")
                .iterator()
            )

    results: list[RunResult] = []
    new_ids: list[Any] = []
    shown: dict[Any, headers.MessageHeaders] = {}
    for run in runs:
        if run.idempotency_key is None:
            run_id, created = run.pk, True
        else:
            run_id = existing[run.idempotency_key]
            created = run_id == run.pk  # only the first item of a key was inserted
        if created:
            new_ids.append(run_id)
            shown[run_id] = headers.for_run(run.args, run.kwargs, run.options)
        signals.send(signals.run_dispatched, spec.name, run_id=run_id, created=created)
        results.append(RunResult(str(run_id), created=created, app=spec.app, task_name=spec.name))
    if new_ids:
        transaction.on_commit(
            functools.partial(
                publisher.publish_new_many, spec, new_ids, publish_options, not_before, now, shown
            ),
            using=db,
        )
    return results


def _split_call(task_name: str, index: int, item: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], tuple | list)
        and isinstance(item[1], dict)
    ):
        return tuple(item[0]), dict(item[1])
    if isinstance(item, tuple | list):
        return tuple(item), {}
    raise TypeError(
        f"{task_name}.delay_many: item #{index} is {type(item).__name__}; pass a tuple of "
        "positional arguments, e.g. (order,), or an (args, kwargs) pair, e.g. ((order,), {})."
    )


def _at_index(exc: Exception, task_name: str, index: int) -> Exception:
    """The same kind of exception, its message saying which item of the batch was refused."""
    message = f"{task_name}.delay_many: item #{index}: {exc}"
    try:
        return type(exc)(message)
    except Exception:
        return TypeError(message)


def retry_runs(queryset: Any) -> list[Any]:
    """Operator retry: FAILED / DISCARDED runs of ``queryset`` go back to PENDING
    (``ledger.retry_runs``, in the caller's transaction) and are published when it commits (or,
    should that publish fail, by the relay). Returns the ids of the runs retried."""
    retried = ledger.retry_runs(queryset)
    if retried:
        transaction.on_commit(functools.partial(publisher.publish_runs, retried), using=db_alias())
    return retried


def requeue_runs(queryset: Any) -> list[Any]:
    """Operator "requeue now": waiting runs of ``queryset`` are due now (``ledger.requeue_runs``,
    in the caller's transaction) and published when it commits (or by the relay). Returns their
    ids. A run of a paused task or queue still waits for the resume."""
    requeued = ledger.requeue_runs(queryset)
    if requeued:
        transaction.on_commit(functools.partial(publisher.publish_runs, requeued), using=db_alias())
    return requeued
