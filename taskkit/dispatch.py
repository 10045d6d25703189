"""The producer side: a call to ``.delay()`` / ``.apply_async()`` becomes a ledger row.

The row is written in the caller's transaction (on the ledger's database) and the message is
published by ``transaction.on_commit``: a rollback leaves nothing and publishes nothing; outside
a transaction the publish happens at once. With an idempotency key the insert is
``INSERT … ON CONFLICT DO NOTHING`` against a unique constraint, so concurrent dispatches of one
key from any number of processes make one run, never raise, and leave the caller's transaction
usable; every caller gets the same run id.
"""

from __future__ import annotations

import datetime
import functools
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from . import ledger, publisher, signals
from .conf import settings
from .context import current_request_id
from .exceptions import InvalidIdempotencyKey, UnsupportedOption
from .models import RunState, TaskRun
from .result import RunResult
from .serialization import encode_call

if TYPE_CHECKING:
    from .task import ReliableTask

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
    task: ReliableTask,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    options: Mapping[str, Any],
) -> RunResult:
    unsupported = sorted(k for k, v in options.items() if k not in SUPPORTED_OPTIONS and v)
    if unsupported:
        name = unsupported[0]
        why = _WHY_NOT.get(name, f"supported options are {', '.join(sorted(SUPPORTED_OPTIONS))}.")
        raise UnsupportedOption(f"{task.name}.apply_async({name}=…) is not supported: {why}")

    encoded_args, encoded_kwargs = encode_call(
        task.call_signature, task.name, tuple(args), dict(kwargs), settings.MAX_PAYLOAD_BYTES
    )
    key = options.get("idempotency_key")
    if key is None and task.idempotency_key_fn is not None:
        key = task.idempotency_key_fn(*args, **kwargs)
    if key is not None:
        _check_key(task.name, key)
    not_before = _not_before(options.get("countdown"), options.get("eta"))
    publish_options = {k: options[k] for k in publisher.PUBLISH_OPTIONS if options.get(k)}
    if "queue" not in publish_options and task.reliable_queue:
        publish_options["queue"] = task.reliable_queue
    run_id = _run_id(options.get("task_id"))

    run = TaskRun(
        id=run_id,
        task_name=task.name,
        queue=publish_options.get("queue") or task.app.conf.task_default_queue,
        args=encoded_args,
        kwargs=encoded_kwargs,
        options=publish_options,
        idempotency_key=key,
        state=RunState.PENDING,
        not_before=not_before,
        created_at=timezone.now(),
        request_id=current_request_id(),
    )
    db = ledger.db_alias()
    if key is None:
        run.save(using=db, force_insert=True)
        created = True
    else:
        TaskRun.objects.using(db).bulk_create([run], ignore_conflicts=True)
        existing_id = (
            TaskRun.objects.using(db)
            .filter(task_name=task.name, idempotency_key=key)
            .values_list("id", flat=True)
            .get()
        )
        created = existing_id == run_id
        run_id = existing_id
    signals.send(signals.run_dispatched, task.name, run_id=run_id, created=created)
    if created:
        transaction.on_commit(
            functools.partial(publisher.publish_new, task, run_id, publish_options, not_before),
            using=db,
        )
    return RunResult(str(run_id), created=created, app=task.app, task_name=task.name)


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
