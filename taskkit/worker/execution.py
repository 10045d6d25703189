"""The consumer side: a message for run X becomes at most one attempt at a time.

A worker that receives a message loads the run, *claims* it with a conditional update (see
``taskkit.core.ledger``), re-fetches model arguments, runs the function and records the outcome. A
message whose claim fails (a duplicate, or a stale redelivery) is acknowledged and skipped with a
log line. A failed attempt asks the task's ``RetryPolicy``: a retry is recorded as RETRYING with
``not_before`` and a delayed message is published, so the worker slot is free at once; giving up
records FAILED. Atomic tasks run their body and the SUCCEEDED transition in one transaction.

A run whose stored call can never run — a model removed by a deploy, an unknown tag, a bad value,
arguments the function's current signature no longer accepts — records its attempt and ends
FAILED at once (``UndecodableCall``), never retried. A message sent without taskkit (celery beat,
``send_task``) is adopted as a run only after the checks ``.delay()`` makes; a refused one is
recorded as a FAILED run with the reason (``AdoptionRefused``), never run and never dropped.

The task arrives as a ``taskkit.core.spec.TaskSpec``: this module imports neither
``taskkit.task`` nor the producer side. Where it must publish (a retry's delayed message, an
early message sent again) it calls the spec's publish point, ``spec.publish_one``, which the face
(``ReliableTask``) wires to the producer's publisher; every write of a run goes through
``taskkit.core.ledger``.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import uuid
from typing import Any

from celery.exceptions import Ignore, Retry
from django.db import InterfaceError, OperationalError, connections, transaction
from django.utils import timezone

from ..core import headers, ledger, policy, redaction, signals, sql
from ..core.conf import settings
from ..core.context import RunContext, _current, reset_request_id, set_request_id
from ..core.db import db_alias
from ..core.exceptions import (
    AdoptionRefused,
    LeaseLost,
    MissingObject,
    ResultNotSerializable,
    UndecodableCall,
)
from ..core.serialization import cap_result, decode_call, encode_call, encode_result
from ..core.spec import RUN_HEADER, TaskSpec
from ..models import CLAIMABLE_STATES, AttemptOutcome, RunState, TaskAttempt, TaskRun
from . import results, revoked

logger = logging.getLogger("taskkit.execution")
#: The states in which a run ends the Celery task with ``Ignore``, shown ``REVOKED`` to monitors
#: (a ``task-revoked`` event, a django-celery-results row): Celery's name for a task not run.
REVOKED_STATES = (RunState.DISCARDED, RunState.CANCELLED)


def lease_seconds(spec: TaskSpec) -> float:
    """An attempt's lease: the hard time limit plus a margin, so a live attempt never loses it."""
    limit = spec.time_limit or spec.app.conf.task_time_limit
    if limit:
        return float(limit) + settings.LEASE_MARGIN_SECONDS
    return settings.LEASE_SECONDS


def worker_id(request: Any, pid: int | None = None) -> str:
    return f"{getattr(request, 'hostname', None) or socket.gethostname()}:{pid or os.getpid()}"


def execute(spec: TaskSpec, request: Any) -> Any:
    """Run one attempt of the run named by ``request.id``, or skip the message."""
    try:
        run_id = uuid.UUID(str(request.id))
    except ValueError:
        logger.error(
            "taskkit: message for %s has the id %r, which is not a run id; acknowledged "
            "and skipped.",
            spec.name,
            request.id,
        )
        raise Ignore() from None
    _drop_broken_connections()
    try:
        claim = _claim(spec, request, run_id)
    except (OperationalError, InterfaceError):
        # A reused connection can die while the worker is idle (the database restarted, the
        # backend was terminated) without Django noticing: reconnect once before giving up.
        connections[db_alias()].close()
        claim = _claim(spec, request, run_id)
    return run_attempt(spec, claim, request)


def _claim(spec: TaskSpec, request: Any, run_id: uuid.UUID) -> ledger.Claim:
    worker, lease = worker_id(request), lease_seconds(spec)
    claim = None
    if sql.can_return_from_update(db_alias()):
        claim = ledger.claim_by_id(run_id, spec.name, worker, lease)  # the common case
    if claim is None:
        claim = _claim_the_slow_way(spec, request, run_id, worker, lease)
    return claim


def _drop_broken_connections() -> None:
    """Close connections an earlier task left broken (the database restarted, a backend was
    terminated). With CELERY_DB_REUSE_MAX, Celery keeps a worker's connection between tasks
    without checking it; only a connection that saw an error is tested (one ``SELECT 1``)."""
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None and connection.errors_occurred:
            connection.close_if_unusable_or_obsolete()


def _claim_the_slow_way(
    spec: TaskSpec, request: Any, run_id: uuid.UUID, worker: str, lease: float
) -> ledger.Claim:
    """Read the run first: adopt a message sent without taskkit, claim where one statement
    cannot, or find out why the claim was lost and skip the message (raises ``Ignore``)."""
    run = TaskRun.objects.using(db_alias()).filter(pk=run_id).first()
    if run is None:
        if _from_taskkit(request):
            logger.error(
                "taskkit: message for run %s of %s, which the ledger does not know; "
                "acknowledged and skipped.",
                run_id,
                spec.name,
            )
            raise Ignore()
        run = _adopt(spec, request, run_id)
    if run.task_name != spec.name:
        logger.error(
            "taskkit: message for run %s names task %s but the run belongs to %s; "
            "acknowledged and skipped.",
            run_id,
            spec.name,
            run.task_name,
        )
        raise Ignore()
    claim = ledger.claim(run, worker, lease)
    if claim is None:
        run.refresh_from_db()
        if _early(run) and not getattr(request, "is_eager", False):
            # Clocks differ between hosts: a delayed message may arrive before the ledger says
            # the run is due. Send it again for the due time rather than dropping it (a long
            # wait is left to the relay).
            if not ledger.deferred_to_relay(run.not_before):
                spec.publish_one(run.pk, run.options, run.not_before, _headers(run))
            logger.info(
                "taskkit: message for run %s arrived before it was due (%s); re-sent.",
                run_id,
                run.not_before,
            )
            raise Ignore()
        if run.state in CLAIMABLE_STATES:
            if ledger.hold_paused(run.pk):
                logger.info(
                    "taskkit: run %s of %s waits: its task or queue is paused (the relay "
                    "publishes it again once resumed); message acknowledged.",
                    run_id,
                    spec.name,
                )
                raise Ignore()
            claim = ledger.claim(run, worker, lease)  # a pause that refused it ended meanwhile
            if claim is not None:
                return claim
        logger.warning(
            "taskkit: skipped a message for run %s of %s: the run is %s after %d attempt(s) (a "
            "duplicate, stale or early message); acknowledged.",
            run_id,
            spec.name,
            run.state,
            run.attempts,
        )
        if run.state in REVOKED_STATES:  # e.g. cancelled or discarded while its message waited
            reason = _revoked_reason(run.state, run.discard_reason)
            revoked.announce(spec.app.tasks.get(spec.name), request, reason)
        raise Ignore()
    return claim


def _revoked_reason(state: str, reason: str) -> str:
    """Why a Discarded / Cancelled run will not run, as its Celery result says (REVOKED)."""
    return reason or f"taskkit: the run is {state.lower()}"


def _early(run: TaskRun) -> bool:
    return (
        run.state in CLAIMABLE_STATES
        and run.not_before is not None
        and run.not_before > timezone.now()
    )


def _from_taskkit(request: Any) -> bool:
    headers = getattr(request, "headers", None) or {}
    return bool(getattr(request, RUN_HEADER, None) or headers.get(RUN_HEADER))


def _adopt(spec: TaskSpec, request: Any, run_id: uuid.UUID) -> TaskRun:
    """Record a run for a message sent without taskkit (celery beat, ``send_task``).

    The message's arguments get the checks ``.delay()`` makes (signature, JSON safety, payload
    cap); they are plain JSON, so taskkit's reserved tag is refused in them. A refused message,
    or any message when adoption is off (``TASKKIT_ADOPT``, ``@reliable_task(adopt=False)``), is
    recorded as a FAILED run with the reason and acknowledged (raises ``Ignore``).
    """
    delivery = getattr(request, "delivery_info", None) or {}
    now = timezone.now()
    run = TaskRun(
        id=run_id,
        task_name=spec.name,
        queue=delivery.get("routing_key") or spec.app.conf.task_default_queue,
        state=RunState.QUEUED,
        created_at=now,
        queued_at=now,
    )
    try:
        run.args, run.kwargs = _adoptable_call(spec, request)
        run.options = _adopted_options(spec, request)
    except AdoptionRefused as exc:
        _record_refused_adoption(spec, run, exc)
        raise Ignore() from None
    ledger.create_runs([run], ignore_conflicts=True)
    logger.info("taskkit: adopted run %s of %s, sent without taskkit.", run_id, spec.name)
    return TaskRun.objects.using(db_alias()).get(pk=run_id)


def _adopted_options(spec: TaskSpec, request: Any) -> dict[str, Any]:
    """An adopted run's sensitive values are scrubbed when it ends, as a dispatched run's are."""
    scrub = redaction.spec_for(
        spec.signature, spec.sensitive, len(request.args or ()), request.kwargs or {}
    )
    return {redaction.SPEC: scrub} if scrub else {}


def _adoptable_call(spec: TaskSpec, request: Any) -> tuple[list[Any], dict[str, Any]]:
    """The message's call, encoded as ``.delay()`` would; ``AdoptionRefused`` says why not."""
    if not settings.ADOPT or not spec.adopt:
        where = "TASKKIT_ADOPT = False" if not settings.ADOPT else "@reliable_task(adopt=False)"
        raise AdoptionRefused(
            f"a message for {spec.name} was sent without taskkit (celery beat, send_task) and "
            f"adoption is off ({where}); it was not run. Dispatch with {spec.name}.delay() (or, "
            "for celery beat, schedule a task that calls .delay()), or enable adoption "
            "(TASKKIT_ADOPT = True and no adopt=False on the task)."
        )
    args, kwargs = getattr(request, "args", None), getattr(request, "kwargs", None)
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict | type(None)):
        raise AdoptionRefused(
            f"a message for {spec.name} sent without taskkit has args of type "
            f"{type(args).__name__} and kwargs of type {type(kwargs).__name__}; expected a list "
            "and a dict. It was not run."
        )
    try:
        return encode_call(
            spec.signature,
            spec.name,
            tuple(args),
            dict(kwargs or {}),
            settings.MAX_PAYLOAD_BYTES,
        )
    except (TypeError, ValueError) as exc:  # UnsafeArgument, PayloadTooLarge, a bad call
        raise AdoptionRefused(
            f"a message for {spec.name} sent without taskkit (celery beat, send_task) was "
            f"refused by the checks .delay() makes, and not run: {exc} (Messages sent without "
            "taskkit carry plain JSON; model references and other tagged values only travel "
            "through .delay().)"
        ) from None


def _record_refused_adoption(spec: TaskSpec, run: TaskRun, exc: AdoptionRefused) -> None:
    """Record a FAILED run (no attempt, no arguments stored) saying why it was not adopted."""
    error = ledger.ErrorInfo.from_exception(exc)
    if not ledger.record_refused(run, error):
        return  # a redelivery of the same message: already recorded
    logger.error("taskkit: refused to adopt run %s of %s: %s", run.pk, spec.name, error.message)
    signals.send(
        signals.run_failed,
        spec.name,
        run_id=run.pk,
        attempt=0,
        exception=exc,
        outcome=AttemptOutcome.FAILED,
    )


def run_attempt(spec: TaskSpec, claim: ledger.Claim, request: Any = None) -> Any:
    run = claim.run
    context = RunContext(
        run_id=run.pk,
        task_name=run.task_name,
        attempt=claim.attempt,
        idempotency_key=run.idempotency_key,
        queue=run.queue,
        request_id=run.request_id,
        root_id=_root_of(run),
    )
    token = _current.set(context)
    request_token = set_request_id(run.request_id)  # runs dispatched from here inherit it
    try:
        signals.send(
            signals.run_started,
            spec.name,
            run_id=run.pk,
            attempt=claim.attempt,
            worker=claim.worker,
        )
        try:
            args, kwargs = decode_call(spec.signature, spec.name, run.args, run.kwargs)
        except MissingObject as exc:
            return _after_failure(spec, claim, exc, request, missing=True)
        except Exception as exc:  # UndecodableCall (gives up), or the database failed (may pass)
            return _after_failure(spec, claim, exc, request)
        try:
            if spec.atomic:
                with transaction.atomic(using=db_alias()):
                    return _body(spec, claim, request, args, kwargs)
            return _body(spec, claim, request, args, kwargs)
        except LeaseLost:
            logger.error(
                "taskkit: attempt %d of run %s lost its claim before finishing; its outcome was "
                "not recorded%s.",
                claim.attempt,
                run.pk,
                " and its database writes were rolled back" if spec.atomic else "",
            )
            raise Ignore() from None
        except Exception as exc:
            return _after_failure(spec, claim, exc, request)
    finally:
        reset_request_id(request_token)
        _current.reset(token)


def _body(
    spec: TaskSpec, claim: ledger.Claim, request: Any, args: list[Any], kwargs: dict[str, Any]
) -> Any:
    value = spec.body(*args, **kwargs)
    result, omitted_bytes = cap_result(encode_result(value, spec.name), settings.MAX_RESULT_BYTES)
    if omitted_bytes is not None:
        # The work is done: the run succeeds (a retry would repeat its effects); only the stored
        # (and returned) result is replaced by a marker.
        logger.warning(
            "taskkit: the result of run %s of %s is %d bytes as JSON, over "
            "TASKKIT_MAX_RESULT_BYTES (%d); it was not stored (the run succeeded). Store large "
            "results yourself and return a reference.",
            claim.run.pk,
            spec.name,
            omitted_bytes,
            settings.MAX_RESULT_BYTES,
        )
    row = results.row_for(spec, request, "SUCCESS", result)
    if not ledger.succeed(claim, result, row):
        raise LeaseLost()
    if row is not None:  # atomic tasks: Celery writes the row itself if the commit fails
        transaction.on_commit(lambda: results.wrote(row), using=db_alias())
    duration = (timezone.now() - claim.started_at).total_seconds()
    transaction.on_commit(  # atomic tasks: only once the body's transaction has committed
        lambda: signals.send(
            signals.run_succeeded,
            spec.name,
            run_id=claim.run.pk,
            attempt=claim.attempt,
            result=result,
            duration=duration,
        ),
        using=db_alias(),
    )
    return result


def record_failure(
    spec: TaskSpec,
    claim: ledger.Claim,
    exc: BaseException,
    outcome: str,
    *,
    request: Any = None,
    raised: BaseException | None = None,
) -> tuple[str | None, policy.Verdict]:
    """Record a failed attempt, ask the policy what next, schedule a retry, send the signal.

    Shared by the attempt itself, the worker's main process (lost child, hard time limit) and the
    relay (expired leases). It gathers the decision's inputs, asks ``policy.after_failure``, and
    has the ledger record the transition (with the task's ``TaskResult`` row when ``request`` is
    given: ``raised`` is the exception Celery will be given, ``exc`` masked by default). Returns
    the run's new state (``None`` if the claim was lost) and the verdict.
    """
    run = claim.run
    started = _budget_started_at(run) or claim.started_at
    cancel_requested = ledger.cancel_requested(run.pk)
    verdict = policy.after_failure(
        spec.policy,
        policy.FailedAttempt(
            kind=outcome,
            exception=exc,
            attempt=claim.attempt - run.attempt_base,
            elapsed=(timezone.now() - started).total_seconds(),
            on_missing=spec.on_missing,
            lost_before=_lost_before(run) if outcome == AttemptOutcome.LOST else 0,
            max_worker_losses=settings.MAX_WORKER_LOSSES,
            permanent=isinstance(exc, ResultNotSerializable | UndecodableCall),
            cancel_requested=cancel_requested,
        ),
    )
    secrets = _secrets(run)
    error = redaction.mask_error(ledger.ErrorInfo.from_exception(exc), secrets)
    exc = redaction.mask_exception(exc, secrets)  # signals and logs never see a sensitive value
    row = None
    if request is not None and verdict.state not in REVOKED_STATES:  # Celery stores no Ignore
        celery_state = "RETRY" if verdict.state == RunState.RETRYING else "FAILURE"
        shown = raised if raised is not None and celery_state == "FAILURE" else exc
        row = results.row_for(spec, request, celery_state, shown, error.traceback)
    if verdict.state == RunState.RETRYING:
        state = ledger.fail(claim, error, verdict.retry, outcome, row=row)
    else:
        state = ledger.fail(claim, error, None, outcome, final_state=verdict.state, row=row)
    if state is not None and outcome != AttemptOutcome.LOST:
        results.wrote(row)  # Celery writes no result for a lost worker: its message is requeued
    if state == RunState.RETRYING and ledger.settle_cancel(run.pk):
        state = RunState.CANCELLED  # cancelling was asked for after it was read above
    common = {"run_id": run.pk, "attempt": claim.attempt}
    if state == RunState.RETRYING and verdict.delay is not None:
        schedule_retry(spec, run, verdict.delay)
        signals.send(
            signals.run_retrying,
            spec.name,
            exception=exc,
            delay=verdict.delay,
            outcome=outcome,
            **common,
        )
    elif state == RunState.FAILED:
        signals.send(signals.run_failed, spec.name, exception=exc, outcome=outcome, **common)
    elif state == RunState.DISCARDED:
        signals.send(signals.run_discarded, spec.name, reason=str(exc), **common)
    elif state == RunState.CANCELLED:
        signals.send(signals.run_cancelled, spec.name, reason=verdict.reason, **common)
    return state, verdict


def _budget_started_at(run: TaskRun) -> datetime.datetime | None:
    """When the run's current attempt budget began: its first attempt, or, after an operator
    retry (which keeps ``first_started_at``), the first attempt since (one read, only then)."""
    if not run.attempt_base:
        return run.first_started_at
    return (
        TaskAttempt.objects.using(db_alias())
        .filter(run_id=run.pk, number=run.attempt_base + 1)
        .values_list("started_at", flat=True)
        .first()
    )


def _lost_before(run: TaskRun) -> int:
    """LOST attempts recorded for ``run`` (read only when another worker was lost)."""
    return (
        TaskAttempt.objects.using(db_alias())
        .filter(run_id=run.pk, outcome=AttemptOutcome.LOST)
        .count()
    )


def _after_failure(
    spec: TaskSpec, claim: ledger.Claim, exc: Exception, request: Any, missing: bool = False
) -> Any:
    """Record the failed attempt; raise ``Retry`` (retry scheduled) or the exception (gave up)."""
    run = claim.run
    outward = redaction.mask_exception(exc, _secrets(run))  # what Celery and logs may see
    raised: BaseException = outward
    if not _writable(outward):
        # Celery stores and logs what the task raised; text with a lone surrogate or a NUL (or a
        # failing __str__) would make that fail after the ledger has recorded the failure.
        error = ledger.ErrorInfo.from_exception(outward)
        raised = RuntimeError(f"{error.type}: {error.message}")
    state, verdict = record_failure(
        spec,
        claim,
        exc,
        AttemptOutcome.MISSING if missing else AttemptOutcome.FAILED,
        request=request,
        raised=raised,
    )
    if state is None:
        logger.error(
            "taskkit: attempt %d of run %s failed after losing its claim: %r",
            claim.attempt,
            run.pk,
            outward,
        )
        raise Ignore()
    if state == RunState.RETRYING and verdict.delay is not None:
        if outward is not exc:  # the original must not appear as the Retry's context either
            raise Retry(exc=outward, when=verdict.delay) from None
        raise Retry(exc=exc, when=verdict.delay)
    if state in REVOKED_STATES:
        reason = _revoked_reason(state, verdict.reason)
        revoked.announce(spec.app.tasks.get(spec.name), request, reason)
        raise Ignore()  # logged by taskkit.observe.signal_handlers
    if raised is not exc:
        raise raised from None
    raise exc


def _secrets(run: TaskRun) -> list[str]:
    """The text forms of the run's sensitive values (none for most runs: one dict lookup)."""
    spec = redaction.spec_of(run.options)
    if spec is None:
        return []
    return redaction.secret_texts(run.args, run.kwargs, spec)


def _writable(exc: BaseException) -> bool:
    try:
        text = str(exc)
        text.encode("utf-8")
    except Exception:
        return False
    return "\x00" not in text


def schedule_retry(spec: TaskSpec, run: TaskRun, delay: float) -> None:
    """Publish the delayed message of a retry. If it is lost, the relay publishes when due."""
    not_before = timezone.now() + datetime.timedelta(seconds=delay)
    if ledger.deferred_to_relay(not_before):
        return  # stays RETRYING with no message; the relay publishes it when due
    if spec.publish_one(run.pk, run.options, not_before, _headers(run)):
        ledger.mark_requeued(run.pk)


def _headers(run: TaskRun) -> headers.MessageHeaders:
    """The monitor headers of the run's next message (its attempts so far are its retries)."""
    return headers.for_run(run.args, run.kwargs, run.options, run.attempts)


def _root_of(run: TaskRun) -> Any:
    """The root of the run's tree, as its options record it (the run itself if none)."""
    root = run.options.get(headers.ROOT) if isinstance(run.options, dict) else None
    return root or run.pk
