"""State transitions of a run, each a conditional UPDATE on the ledger: the only writer of runs.

Every transition names the state (and, once claimed, the attempt number and the claim holder) it
expects; if another process got there first the UPDATE matches no row and the caller learns it
lost. That compare-and-set is what keeps one attempt at a time and makes duplicate messages
harmless. The attempt row and the run's new state are written in one transaction.

Every write of ``TaskRun`` / ``TaskAttempt`` rows is a function here (``tests/unit/test_layout.py``
holds the rest of the package to it). The ledger never publishes: a transition after which a
message must go out (an operator retry) returns the ids, and its caller publishes them on commit.
"""

from __future__ import annotations

import datetime
import functools
import random
import traceback as tb
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, connections, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..models import (
    CLAIMABLE_STATES,
    TERMINAL_STATES,
    AttemptOutcome,
    PauseKind,
    RunState,
    TaskAttempt,
    TaskPause,
    TaskRun,
)
from . import prepared, redaction, sql
from .conf import settings
from .db import db_alias
from .policy import RetryDecision

#: Caps of the recorded error, in characters: the type fits its column (max_length=255); a
#: message keeps its start, a traceback its end (the innermost frames and the exception line).
MAX_ERROR_TYPE = 255
MAX_ERROR_MESSAGE = 10_000
MAX_ERROR_TRACEBACK = 50_000


def clean_text(text: str, limit: int, keep_end: bool = False) -> str:
    """``text`` as every database and log can store it: lone surrogates escaped (``\\udc80``),
    NUL characters escaped (``\\x00``; PostgreSQL refuses them), at most ``limit`` characters
    (a cut says how many were left out)."""
    room = limit * 2  # escaping can only lengthen; look at no more than this of a huge text
    text = text[-room:] if keep_end else text[:room]
    text = text.replace("\x00", "\\x00")
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= limit:
        return text
    if keep_end:
        return "… (cut) " + text[-(limit - 8) :]
    return text[: limit - 8] + " (cut) …"


@dataclass(frozen=True)
class ErrorInfo:
    type: str
    message: str
    traceback: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        """What to record of ``exc``; never raises, whatever the exception holds.

        Used by attempts, the worker's main process (lost children, hard time limits) and the
        relay: surrogates and NUL escaped, lengths capped, a failing ``__str__`` replaced.
        """
        try:
            kind = type(exc)
            name = clean_text(f"{kind.__module__}.{kind.__qualname__}", MAX_ERROR_TYPE)
        except Exception:
            name = "<unknown exception type>"
        return cls(
            type=name,
            message=clean_text(_text_of(exc), MAX_ERROR_MESSAGE),
            traceback=clean_text(_traceback_of(exc), MAX_ERROR_TRACEBACK, keep_end=True),
        )


def _text_of(exc: BaseException) -> str:
    try:
        text = str(exc)
        if isinstance(text, str):
            return text
    except Exception as inner:
        return f"<str() of the exception raised {_safe_name(inner)}>"
    return "<str() of the exception returned no str>"


def _traceback_of(exc: BaseException) -> str:
    """The traceback, each part (a frame, the exception's line) cut to a message's length, so
    that a huge message does not push the frames out of the recorded tail."""
    try:
        return "".join(
            part if len(part) <= MAX_ERROR_MESSAGE else f"{part[:MAX_ERROR_MESSAGE]} (cut) …\n"
            for part in tb.format_exception(exc)
        )
    except Exception as inner:
        return f"<the traceback could not be formatted: {_safe_name(inner)}>"


def _safe_name(exc: BaseException) -> str:
    try:
        return type(exc).__qualname__
    except Exception:
        return "an exception"


@dataclass(frozen=True)
class Claim:
    """A won claim: this process may run attempt ``attempt`` of ``run``."""

    run: TaskRun
    attempt: int
    worker: str
    started_at: datetime.datetime


def paused() -> Exists:
    """True for a run whose task or queue is paused (a ``TaskPause`` row names it): claims refuse
    it and the relay does not publish it. Use as ``.filter(~paused())``."""
    return Exists(
        TaskPause.objects.filter(
            Q(kind=PauseKind.TASK, name=OuterRef("task_name"))
            | Q(kind=PauseKind.QUEUE, name=OuterRef("queue"))
        )
    )


def claim(run: TaskRun, worker: str, lease_seconds: float) -> Claim | None:
    """Move a claimable, due run whose task and queue are not paused to RUNNING for this worker;
    ``None`` if someone else has it (or it is paused: ``hold_paused`` then)."""
    now = timezone.now()
    won = (
        TaskRun.objects.using(db_alias())
        .filter(pk=run.pk, state__in=CLAIMABLE_STATES, attempts=run.attempts)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .filter(~paused())
        .update(
            state=RunState.RUNNING,
            attempts=F("attempts") + 1,
            first_started_at=Coalesce(F("first_started_at"), now),
            started_at=now,
            lease_until=now + datetime.timedelta(seconds=lease_seconds),
            claimed_by=worker,
        )
    )
    if not won:
        return None
    run.state = RunState.RUNNING
    run.attempts += 1
    run.started_at = now
    if run.first_started_at is None:
        run.first_started_at = now
    run.claimed_by = worker
    return Claim(run=run, attempt=run.attempts, worker=worker, started_at=now)


def claim_by_id(run_id: Any, task_name: str, worker: str, lease_seconds: float) -> Claim | None:
    """Claim a run knowing only its id, in one statement (``UPDATE … RETURNING``).

    ``None`` when the run is unknown, belongs to another task, is not claimable or not due; the
    caller then reads the row to find out which. Needs ``sql.can_return_from_update``.
    """
    db = db_alias()
    now = timezone.now()

    at, lease, key = sql.prep_all(
        TaskRun,
        db,
        [
            ("started_at", now),
            ("lease_until", now + datetime.timedelta(seconds=lease_seconds)),
            ("id", run_id),
        ],
    )
    statement = _claim_text(db)
    params = [
        RunState.RUNNING,
        at,  # first_started_at, if not set yet
        at,  # started_at
        lease,
        worker,
        key,
        task_name,
        *sorted(CLAIMABLE_STATES),
        at,  # not_before
        PauseKind.TASK,
        PauseKind.QUEUE,
    ]
    row = prepared.fetchone(db, statement, params, flush=not settings.ASYNCHRONOUS_CLAIMS)
    if row is None:
        return None
    run = sql.instance_from_row(TaskRun, db, row)
    return Claim(run=run, attempt=run.attempts, worker=worker, started_at=run.started_at)


@functools.lru_cache(maxsize=16)
def _claim_text(db: str) -> str:
    def c(name: str) -> str:
        return sql.column(TaskRun, db, name)

    run = sql.table(TaskRun, db)

    def pause(name: str) -> str:
        return sql.column(TaskPause, db, name)

    return (
        f"UPDATE {sql.table(TaskRun, db)} SET {c('state')} = %s, "
        f"{c('attempts')} = {c('attempts')} + 1, "
        f"{c('first_started_at')} = COALESCE({c('first_started_at')}, %s), "
        f"{c('started_at')} = %s, {c('lease_until')} = %s, {c('claimed_by')} = %s "
        # `|| ''` keeps the planner on the primary key: with stale statistics (a backlog that
        # grew since the last ANALYZE) PostgreSQL otherwise walks the (task_name, state) index,
        # every run of the task, for each claim (measured: 0.7 ms per claim at 2,000 runs).
        f"WHERE {c('id')} = %s AND {c('task_name')} || '' = %s "
        f"AND {c('state')} || '' IN (%s, %s, %s) "
        f"AND ({c('not_before')} IS NULL OR {c('not_before')} <= %s) "
        # A paused task or queue (a row of the tiny pauses table) refuses the claim: the run waits.
        f"AND NOT EXISTS (SELECT 1 FROM {sql.table(TaskPause, db)} WHERE "
        f"({pause('kind')} = %s AND {pause('name')} = {run}.{c('task_name')}) OR "
        f"({pause('kind')} = %s AND {pause('name')} = {run}.{c('queue')})) "
        f"RETURNING {sql.returning_columns(TaskRun, db)}"
    )


def _holder(c: Claim) -> dict[str, Any]:
    """The row of a held claim: the run, still RUNNING the claim's attempt for its worker."""
    return {
        "id": c.run.pk,
        "state": RunState.RUNNING,
        "attempts": c.attempt,
        "claimed_by": c.worker,
    }


def _attempt(
    c: Claim,
    outcome: str,
    now: datetime.datetime,
    error: ErrorInfo | None = None,
    retry_delay: float | None = None,
) -> TaskAttempt:
    return TaskAttempt(
        run_id=c.run.pk,
        number=c.attempt,
        outcome=outcome,
        worker=c.worker,
        started_at=c.started_at,
        finished_at=now,
        duration=(now - c.started_at).total_seconds(),
        error_type=error.type if error else "",
        error_message=error.message if error else "",
        traceback=error.traceback if error else "",
        retry_delay=retry_delay,
    )


@dataclass(frozen=True)
class ResultRow:
    """A row of a result table (django-celery-results' ``TaskResult``) to upsert on ``key`` in the
    statement that ends an attempt, as that package's manager does: ``fields`` by field name, the
    ``created`` field set only by the insert, the ``done`` field set to the time of the write."""

    model: type[Any]
    fields: dict[str, Any]
    key: str = "task_id"
    created: str = "date_created"
    done: str = "date_done"


def succeed(c: Claim, result: Any, row: ResultRow | None = None) -> bool:
    """Record the attempt's success (and ``row``, the task's result row); ``False`` if the claim
    was lost meanwhile.

    Runs in the caller's transaction when there is one (atomic tasks), else in its own. On
    PostgreSQL the run's update, the attempt's insert and the result row's upsert are one
    statement.
    """
    now = timezone.now()
    changes: dict[str, Any] = {
        "state": RunState.SUCCEEDED,
        "result": result,
        "finished_at": now,
        "lease_until": None,
        "not_before": None,
        "error_type": "",
        "error_message": "",
        "error_traceback": "",
        **_scrub(c.run),
    }
    return _finish(c, changes, _attempt(c, AttemptOutcome.SUCCEEDED, now), row, now)


def fail(
    c: Claim,
    error: ErrorInfo,
    decision: RetryDecision | None,
    outcome: str = AttemptOutcome.FAILED,
    final_state: str = RunState.FAILED,
    row: ResultRow | None = None,
) -> str | None:
    """Record a failed attempt (and ``row``, the task's result row) and move the run to RETRYING
    or ``final_state``, in one statement on PostgreSQL.

    Returns the new state, or ``None`` if the claim was lost meanwhile.
    """
    now = timezone.now()
    if decision is not None:
        changes: dict[str, Any] = {
            "state": RunState.RETRYING,
            "not_before": now + datetime.timedelta(seconds=decision.delay),
            "queued_at": None,  # no message for the next attempt yet (see taskkit.relay.sweep)
        }
    else:
        changes = {"state": final_state, "finished_at": now, "not_before": None, **_scrub(c.run)}
    changes.update(
        lease_until=None,
        error_type=error.type,
        error_message=error.message,
        error_traceback=error.traceback,
    )
    attempt = _attempt(c, outcome, now, error, decision.delay if decision else None)
    return changes["state"] if _finish(c, changes, attempt, row, now) else None


def _finish(
    c: Claim,
    changes: dict[str, Any],
    attempt: TaskAttempt,
    row: ResultRow | None,
    now: datetime.datetime,
) -> bool:
    """End attempt ``c``: the run's ``changes`` if the claim is still held, its attempt row, and
    ``row``. One statement on PostgreSQL (a CTE); elsewhere the fewest, in one transaction."""
    db = db_alias()
    if sql.can_update_and_insert_in_one(db):
        statement, params = sql.finish_statement(
            db,
            TaskRun,
            changes,
            _holder(c),
            attempt,
            _upsert_parts(row, now),
        )
        return prepared.fetchone(db, statement, params) is not None
    update = sql.update_statement(db, TaskRun, changes, _holder(c))
    with transaction.atomic(using=db), connections[db].cursor() as cursor:
        cursor.execute(*update)
        if cursor.rowcount != 1:
            return False
        cursor.execute(*sql.insert_statement(db, attempt))
        if row is not None:
            cursor.execute(*sql.upsert_statement(db, *_upsert_parts(row, now)))
    return True


def _upsert_parts(row: ResultRow | None, now: datetime.datetime) -> Any:
    """(model, values to insert, fields the insert alone sets, the conflict key) of ``row``."""
    if row is None:
        return None
    values = {**row.fields, row.created: now, row.done: now}
    return row.model, values, (row.key, row.created), row.key


def _scrub(run: TaskRun) -> dict[str, Any]:
    """Fields that scrub ``run``'s sensitive arguments, written by the UPDATE that ends it."""
    return redaction.scrubbed_fields(run.args, run.kwargs, run.options)


def scrub_sensitive(run_ids: list[Any]) -> int:
    """Scrub the sensitive arguments of those of ``run_ids`` that have ended; returns how many.

    For transitions that end runs without holding their rows (an operator discard, a run failed
    for an unregistered task): call it after, or in the same transaction as, the transition.
    Worker transitions (``succeed``, ``fail``) scrub in their own UPDATE and need not call it.
    Idempotent; runs without sensitive arguments cost nothing but the one SELECT per 1,000 ids.
    """
    db = db_alias()
    scrubbed = 0
    for chunk in _chunks(list(run_ids)):
        runs = (
            TaskRun.objects.using(db)
            .filter(pk__in=chunk, state__in=TERMINAL_STATES, options__has_key=redaction.SPEC)
            .exclude(options__has_key=redaction.SCRUBBED)
            .only("id", "args", "kwargs", "options")
        )
        for run in runs:
            fields = _scrub(run)
            if fields:
                scrubbed += (
                    TaskRun.objects.using(db)
                    .filter(pk=run.pk, state__in=TERMINAL_STATES)
                    .update(**fields)
                )
    return scrubbed


def holder_claim(run_id: Any, worker: str) -> Claim | None:
    """The claim ``worker`` holds on a RUNNING run, read back from the ledger (for lost workers)."""
    run = (
        TaskRun.objects.using(db_alias())
        .filter(pk=run_id, state=RunState.RUNNING, claimed_by=worker)
        .first()
    )
    if run is None or run.started_at is None:
        return None
    return Claim(run=run, attempt=run.attempts, worker=worker, started_at=run.started_at)


def requeue_at(
    now: datetime.datetime, not_before: datetime.datetime | None, publishes_before: int
) -> datetime.datetime:
    """When a QUEUED run may be published again if still unclaimed: ``TASKKIT_REQUEUE_AFTER``
    after it is due, doubled for every earlier publish (at most 64 times), so a long backlog costs a
    few duplicate messages per run rather than one every ``TASKKIT_REQUEUE_AFTER``."""
    from .conf import settings

    due = max(now, not_before) if not_before else now
    factor = 2 ** min(publishes_before, 6)
    return due + datetime.timedelta(seconds=settings.REQUEUE_AFTER * factor)


def expect_publish(run: TaskRun, now: datetime.datetime) -> None:
    """Dispatch, before the insert: the run is written QUEUED, *published unless proven
    otherwise*, so the happy path needs no second write after the on-commit publish.

    Its ``requeue_at`` is the deadline the relay honours: ``TASKKIT_RELAY_GRACE_SECONDS`` after
    it is due. A run still unclaimed then is published again by the relay (its first message may
    never have gone out: a dispatcher killed between commit and publish), once, after which the
    requeue backoff applies (``requeue_at``). A publish that is known to have failed puts the run
    back to PENDING (``mark_unsent``). Runs whose delay is too long for an ETA message
    (``deferred_to_relay``) stay PENDING with no message, as before.
    """
    from .conf import settings

    if deferred_to_relay(run.not_before):
        run.state = RunState.PENDING
        return
    due = max(now, run.not_before) if run.not_before else now
    run.state = RunState.QUEUED
    run.queued_at = now
    run.publish_count = 1
    run.requeue_at = due + datetime.timedelta(seconds=settings.RELAY_GRACE_SECONDS)


def mark_unsent(run_ids: list[Any], queued_at: datetime.datetime) -> int:
    """The failure path of a dispatch: runs written QUEUED at ``queued_at`` whose message the
    broker did not take (or may not have) go back to PENDING, no message counted, so no run
    stays marked published whose message was not accepted. No-op for a run a worker or a relay
    touched meanwhile. The relay publishes them at the same deadline
    (``TASKKIT_RELAY_GRACE_SECONDS`` after they were written). Returns how many."""
    db = db_alias()
    size = (connections[db].features.max_query_params or 65_000) - 10
    count = 0
    for chunk in _chunks(run_ids, size):
        count += (
            TaskRun.objects.using(db)
            .filter(pk__in=chunk, state=RunState.QUEUED, queued_at=queued_at, publish_count=1)
            .update(state=RunState.PENDING, queued_at=None, publish_count=0, requeue_at=None)
        )
    return count


def mark_queued(run_ids: list[Any], not_before: datetime.datetime | None = None) -> None:
    """After a first publish of runs written PENDING (operator retries): PENDING → QUEUED
    (no-op for runs a worker already claimed). Dispatch does not need it (``expect_publish``).

    One UPDATE for the lot (split only where the database limits query parameters).
    """
    db = db_alias()
    now = timezone.now()
    size = (connections[db].features.max_query_params or 65_000) - 10
    for chunk in _chunks(run_ids, size):
        TaskRun.objects.using(db).filter(pk__in=chunk, state=RunState.PENDING).update(
            state=RunState.QUEUED,
            queued_at=now,
            publish_count=F("publish_count") + 1,
            requeue_at=requeue_at(now, not_before, 0),
        )


def deferred_to_relay(not_before: datetime.datetime | None) -> bool:
    """Whether a delay is too long for an ETA message, so the run waits in the ledger (no message)
    until the relay publishes it when due (``TASKKIT_ETA_MAX_SECONDS``)."""
    from .conf import settings

    if not_before is None:
        return False
    return (not_before - timezone.now()).total_seconds() > settings.ETA_MAX_SECONDS


def mark_requeued(run_id: Any) -> None:
    """After publishing a retry: stamp queued_at; the state stays RETRYING until claimed."""
    TaskRun.objects.using(db_alias()).filter(pk=run_id, state=RunState.RETRYING).update(
        queued_at=timezone.now()
    )


RETRYABLE_BY_OPERATOR = (RunState.FAILED, RunState.DISCARDED, RunState.CANCELLED)
DISCARDABLE_BY_OPERATOR = (RunState.PENDING, RunState.QUEUED, RunState.RETRYING, RunState.FAILED)


def _chunks(ids: list[Any], size: int = 1000) -> Any:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def retry_runs(queryset: Any) -> list[Any]:
    """Operator retry: FAILED / DISCARDED / CANCELLED runs go back to PENDING with a fresh attempt
    budget (``first_started_at`` is kept: the run's history; the budget's clock starts at its
    next attempt).

    Runs in the caller's transaction. Returns the ids of the runs retried: the caller publishes
    them once that transaction commits (``taskkit.producer.publisher.publish_runs``; should it not,
    the relay publishes them, as any PENDING run). Runs whose sensitive arguments were scrubbed
    when they ended cannot run again and are left as they are (``count_scrubbed`` says how many
    of a queryset).
    """
    db = db_alias()
    ids = list(
        queryset.filter(state__in=RETRYABLE_BY_OPERATOR)
        .exclude(options__has_key=redaction.SCRUBBED)
        .values_list("pk", flat=True)
    )
    retried: list[Any] = []
    for chunk in _chunks(ids):
        matching = (
            TaskRun.objects.using(db)
            .filter(pk__in=chunk, state__in=RETRYABLE_BY_OPERATOR)
            .exclude(options__has_key=redaction.SCRUBBED)
        )
        retried += list(matching.values_list("pk", flat=True))
        matching.update(
            state=RunState.PENDING,
            attempt_base=F("attempts"),
            not_before=None,
            finished_at=None,
            lease_until=None,
            claimed_by="",
            discard_reason="",
            cancel_requested_at=None,
        )
    return retried


def count_scrubbed(queryset: Any) -> int:
    """How many runs of ``queryset`` an operator retry refuses: ended, sensitive values scrubbed."""
    return int(
        queryset.filter(
            state__in=RETRYABLE_BY_OPERATOR, options__has_key=redaction.SCRUBBED
        ).count()
    )


def discard_runs(queryset: Any, reason: str) -> list[Any]:
    """Operator discard: runs that are not running or finished become DISCARDED with a reason."""
    from . import signals

    db = db_alias()
    now = timezone.now()
    discarded: list[Any] = []
    for chunk in _chunks(
        list(queryset.filter(state__in=DISCARDABLE_BY_OPERATOR).values_list("pk", flat=True))
    ):
        matching = TaskRun.objects.using(db).filter(pk__in=chunk, state__in=DISCARDABLE_BY_OPERATOR)
        rows = list(matching.values_list("pk", "task_name", "attempts"))
        matching.update(
            state=RunState.DISCARDED,
            discard_reason=reason,
            finished_at=now,
            not_before=None,
            lease_until=None,
        )
        scrub_sensitive(chunk)
        for pk, task_name, attempts in rows:
            discarded.append(pk)
            signals.send(
                signals.run_discarded, task_name, run_id=pk, attempt=attempts, reason=reason
            )
    return discarded


# -- operator control: cancel, requeue now, paused runs -----------------------------------------

CANCELLABLE_AT_ONCE = (RunState.PENDING, RunState.QUEUED, RunState.RETRYING)
REQUEUEABLE_BY_OPERATOR = (RunState.PENDING, RunState.QUEUED, RunState.RETRYING)


def _stamp() -> datetime.datetime:
    """Now, with random microseconds of jitter: tells the rows this process just changed apart
    from anyone else's (read back by the stamp, no lock held)."""
    return timezone.now() + datetime.timedelta(microseconds=random.randrange(1, 999_999))


def cancel_waiting(run_ids: list[Any], reason: str) -> list[tuple[Any, str, int]]:
    """PENDING / QUEUED / RETRYING → CANCELLED at once, one guarded UPDATE per 1,000 ids; a message
    still on the broker then loses its claim. Returns (id, task name, attempts) of the runs this
    call cancelled (read back by their ``finished_at`` stamp); sends ``run_cancelled`` for each."""
    from . import signals

    db = db_alias()
    cancelled: list[tuple[Any, str, int]] = []
    for chunk in _chunks(list(run_ids)):
        stamp = _stamp()
        changed = (
            TaskRun.objects.using(db)
            .filter(pk__in=chunk, state__in=CANCELLABLE_AT_ONCE)
            .update(
                **_ended(RunState.CANCELLED, stamp),
                cancel_requested_at=Coalesce(F("cancel_requested_at"), stamp),
                discard_reason=reason,
            )
        )
        if not changed:
            continue
        rows = list(
            TaskRun.objects.using(db)
            .filter(pk__in=chunk, state=RunState.CANCELLED, finished_at=stamp)
            .values_list("pk", "task_name", "attempts")
        )
        scrub_sensitive([row[0] for row in rows])
        cancelled += rows
    for pk, task_name, attempts in cancelled:
        signals.send(signals.run_cancelled, task_name, run_id=pk, attempt=attempts, reason=reason)
    return cancelled


def request_cancel(run_ids: list[Any], reason: str) -> list[Any]:
    """RUNNING runs get a cancel request (``cancel_requested_at``; one already asked for is kept):
    the task can read it, and the run is never retried. Returns the ids of the runs that got one
    from this call."""
    db = db_alias()
    requested: list[Any] = []
    for chunk in _chunks(list(run_ids)):
        stamp = _stamp()
        if (
            TaskRun.objects.using(db)
            .filter(pk__in=chunk, state=RunState.RUNNING, cancel_requested_at__isnull=True)
            .update(cancel_requested_at=stamp, discard_reason=reason)
        ):
            requested += list(
                TaskRun.objects.using(db)
                .filter(pk__in=chunk, cancel_requested_at=stamp)
                .values_list("pk", flat=True)
            )
    return requested


def cancel_requested(run_id: Any) -> bool:
    """Whether cancelling the run was asked for (one indexed read by primary key)."""
    return (
        TaskRun.objects.using(db_alias())
        .filter(pk=run_id, cancel_requested_at__isnull=False)
        .exists()
    )


def settle_cancel(run_id: Any) -> bool:
    """A run moved to RETRYING while a cancel request was being written (the request came after
    the attempt's failure was read): RETRYING → CANCELLED. ``False`` if there is nothing to do."""
    settled = bool(
        TaskRun.objects.using(db_alias())
        .filter(pk=run_id, state=RunState.RETRYING, cancel_requested_at__isnull=False)
        .update(**_ended(RunState.CANCELLED, timezone.now()))
    )
    if settled:
        scrub_sensitive([run_id])
    return settled


def _ended(state: str, now: datetime.datetime) -> dict[str, Any]:
    """The fields of a run that ends ``state`` at ``now`` without an attempt ending with it."""
    return {
        "state": state,
        "finished_at": now,
        "not_before": None,
        "lease_until": None,
        "requeue_at": None,
    }


def requeue_runs(queryset: Any) -> list[Any]:
    """Operator "requeue now": waiting runs (PENDING / QUEUED / RETRYING, whatever their due time
    or requeue deadline) go back to PENDING, due now, attempts and budget kept. Runs in the
    caller's transaction; the caller publishes the returned ids once it commits (as for
    ``retry_runs``; should it not, the relay publishes them, as any due PENDING run)."""
    db = db_alias()
    ids = list(queryset.filter(state__in=REQUEUEABLE_BY_OPERATOR).values_list("pk", flat=True))
    requeued: list[Any] = []
    for chunk in _chunks(ids):
        matching = TaskRun.objects.using(db).filter(pk__in=chunk, state__in=REQUEUEABLE_BY_OPERATOR)
        requeued += list(matching.values_list("pk", flat=True))
        matching.update(state=RunState.PENDING, not_before=None, queued_at=None, requeue_at=None)
    return requeued


def hold_paused(run_id: Any) -> bool:
    """A due run refused by the claim because its task or queue is paused waits, its message
    acknowledged: QUEUED with its requeue deadline now, so the relay publishes it again as soon as
    the pause ends (never while it lasts). No attempt is counted. ``False`` if the run is not
    claimable, not due or not paused (any more)."""
    now = timezone.now()
    return bool(
        TaskRun.objects.using(db_alias())
        .filter(pk=run_id, state__in=CLAIMABLE_STATES)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .filter(paused())
        .update(
            state=RunState.QUEUED,
            queued_at=Coalesce(F("queued_at"), now),
            requeue_at=now,
        )
    )


# -- runs of tasks that are not registered (renamed or removed by a deploy) ---------------------

#: The ``outcome`` of ``run_failed`` for a run failed because its task is not registered (no
#: attempt was made, so it is not one of ``AttemptOutcome``).
NOT_REGISTERED = "NOT_REGISTERED"


def note_unregistered(
    run_ids: list[Any],
    queued_at: datetime.datetime | None,
    since: datetime.datetime,
    requeue_by: datetime.datetime,
) -> int:
    """A relay published these runs (stamped QUEUED at ``queued_at``) by name, their task not
    being registered: record since when, and make them due again no later than ``requeue_by``
    (the end of their grace), unless a worker claimed them meanwhile."""
    from django.db.models.functions import Least

    return (
        TaskRun.objects.using(db_alias())
        .filter(pk__in=run_ids, state=RunState.QUEUED, queued_at=queued_at)
        .update(
            unregistered_since=since,
            requeue_at=Least(Coalesce(F("requeue_at"), requeue_by), requeue_by),
        )
    )


def note_registered(run_ids: list[Any]) -> int:
    """The task of these runs is registered (again): they wait out no grace."""
    return (
        TaskRun.objects.using(db_alias())
        .filter(pk__in=run_ids, unregistered_since__isnull=False)
        .update(unregistered_since=None)
    )


def fail_unregistered(run_id: Any, queued_at: datetime.datetime | None, error: ErrorInfo) -> bool:
    """QUEUED (stamped by a relay at ``queued_at``) → FAILED: its task has not been registered for
    the grace. No attempt is recorded (none was made). ``False`` if a worker claimed it first."""
    now = timezone.now()
    return bool(
        TaskRun.objects.using(db_alias())
        .filter(pk=run_id, state=RunState.QUEUED, queued_at=queued_at)
        .update(
            **_ended(RunState.FAILED, now),
            unregistered_since=None,
            error_type=error.type,
            error_message=error.message,
            error_traceback=error.traceback,
        )
    )


def lose_unregistered(c: Claim, error: ErrorInfo, give_up: bool) -> str | None:
    """The lease of attempt ``c`` expired and its task is not registered here: record the attempt
    LOST and make the run due again at once (RETRYING; the relay publishes it by name), or FAILED
    when ``give_up``. Returns the new state, ``None`` if the claim changed meanwhile."""
    now = timezone.now()
    state = fail(c, error, None if give_up else RetryDecision(delay=0.0), AttemptOutcome.LOST)
    query = TaskRun.objects.using(db_alias()).filter(pk=c.run.pk, state=state)
    if state == RunState.FAILED:
        query.update(unregistered_since=None)
    elif state == RunState.RETRYING:
        query.filter(unregistered_since__isnull=True).update(unregistered_since=now)
    return state


# -- rows written whole: dispatch, adoption, the relay's take, pruning --------------------------


def create_run(run: TaskRun) -> None:
    """Dispatch: insert a new PENDING run (no key), in the caller's transaction: one cached
    ``INSERT`` (as ``save(force_insert=True)`` would send, without its per-call compilation and
    its model signals: nothing listens to a run's ``post_save``; ``run_dispatched`` is the
    signal)."""
    db = db_alias()
    statement, params = sql.insert_statement(db, run)
    # as save() does: a failed insert marks the caller's atomic block for rollback
    with transaction.mark_for_rollback_on_error(db), connections[db].cursor() as cursor:
        cursor.execute(statement, params)
    run._state.adding, run._state.db = False, db


def create_runs(runs: list[TaskRun], *, ignore_conflicts: bool = False) -> None:
    """Dispatch (bulk, or with an idempotency key) and adoption: insert runs in one statement;
    with ``ignore_conflicts`` a run whose id or key exists already is skipped
    (``INSERT … ON CONFLICT DO NOTHING``), leaving the caller's transaction usable."""
    TaskRun.objects.using(db_alias()).bulk_create(runs, ignore_conflicts=ignore_conflicts)


def record_refused(run: TaskRun, error: ErrorInfo) -> bool:
    """A message sent without taskkit was refused: insert ``run`` (not yet saved) FAILED with
    ``error``, no attempt and no arguments (they may be unsafe to store: that is the point).
    ``False`` if a redelivery of the same message recorded it first."""
    run.state = RunState.FAILED
    run.finished_at = timezone.now()
    run.args, run.kwargs = [], {}
    run.error_type, run.error_message = error.type, error.message
    run.error_traceback = ""
    db = db_alias()
    try:
        with transaction.atomic(using=db):
            run.save(using=db, force_insert=True)
    except IntegrityError:
        return False
    return True


def take(due: Q, run_ids: list[Any], stamp: datetime.datetime, publishes_before: int) -> int:
    """Relay: runs of ``run_ids`` still ``due`` become QUEUED, stamped ``stamp`` (this relay's),
    about to be published for the ``publishes_before + 1``-th time. Returns how many."""
    return (
        TaskRun.objects.using(db_alias())
        .filter(due, pk__in=run_ids)
        .update(
            state=RunState.QUEUED,
            queued_at=stamp,
            publish_count=publishes_before + 1,
            requeue_at=requeue_at(stamp, None, publishes_before),
        )
    )


def put_back(
    run_id: Any,
    stamp: datetime.datetime | None,
    state: str,
    queued_at: datetime.datetime | None,
    requeue_by: datetime.datetime | None,
    publish_count: int,
) -> bool:
    """Relay: a taken run (QUEUED at ``stamp``) whose publish failed goes back as it was, unless
    a worker claimed it meanwhile."""
    return bool(
        TaskRun.objects.using(db_alias())
        .filter(pk=run_id, state=RunState.QUEUED, queued_at=stamp)
        .update(
            state=state, queued_at=queued_at, requeue_at=requeue_by, publish_count=publish_count
        )
    )


def make_due(run_id: Any) -> int:
    """``taskkit.testing``: a run waiting for a retry or a countdown is due now (time travel)."""
    now = timezone.now()
    return (
        TaskRun.objects.using(db_alias())
        .filter(pk=run_id, not_before__gt=now)
        .update(not_before=timezone.now())
    )


def delete_finished(run_ids: list[Any], states: Any, finished_before: datetime.datetime) -> int:
    """Pruning: delete those of ``run_ids`` that ended in ``states`` before ``finished_before``,
    with their attempts. Returns how many runs were deleted."""
    _, per_model = (
        TaskRun.objects.using(db_alias())
        .filter(pk__in=run_ids, state__in=states, finished_at__lt=finished_before)
        .delete()
    )
    return per_model.get(TaskRun._meta.label, 0)
