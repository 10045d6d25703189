"""The hot path's round trips: a claim is one statement; an outcome — the run, its attempt and
the django-celery-results TaskResult row — one more on PostgreSQL."""

import datetime
import json
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_celery_results.models import TaskResult

from taskkit.core import ledger, prepared
from taskkit.models import AttemptOutcome, RunState, TaskAttempt, TaskRun
from tests.celery_app import app
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def _statements(queries):
    """What a worker sends per run: not BEGIN, not savepoints, not a statement's PREPARE (once
    per database session, see taskkit.core.prepared and tests/integration/test_prepared.py)."""
    skipped = ("BEGIN", "SAVEPOINT", "PREPARE ")
    return [
        q
        for q in queries
        if not q["sql"].upper().startswith(skipped)
        or q["sql"].startswith(prepared.RELAXED_PREFIX)  # an asynchronous claim: one round trip
    ]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["claim", "asynchronous claim"])
def test_claim_by_id_is_one_statement_and_returns_the_row_as_the_orm_reads_it(
    clean_broker, settings, asynchronous
):
    """UPDATE … RETURNING claims the run and brings back every field, converted (an
    asynchronous claim too: one round trip, on PostgreSQL inside its relaxed transaction)."""
    settings.TASKKIT_ASYNCHRONOUS_CLAIMS = asynchronous
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=datetime.UTC)
    result = tasks.parked.apply_async(
        ("claim", Decimal("1.5"), uuid.UUID(int=7)), {"at": when}, idempotency_key="k-claim"
    )
    with CaptureQueriesContext(connection) as queries:
        claim = ledger.claim_by_id(uuid.UUID(result.id), tasks.parked.name, "host:1", 60)
    assert len(_statements(queries)) == 1
    relaxed = queries[-1]["sql"].startswith(prepared.RELAXED_PREFIX)
    assert relaxed == (asynchronous and connection.vendor == "postgresql"), queries[-1]["sql"]
    assert claim is not None and claim.attempt == 1 and claim.worker == "host:1"
    fetched = TaskRun.objects.get(pk=result.id)
    for field in TaskRun._meta.concrete_fields:
        assert getattr(claim.run, field.attname) == getattr(fetched, field.attname), field.name
    assert fetched.state == RunState.RUNNING and fetched.claimed_by == "host:1"
    # a second claim, another task's name, or a run not due: nothing
    assert ledger.claim_by_id(uuid.UUID(result.id), tasks.parked.name, "host:2", 60) is None
    other = tasks.parked.delay("other").id
    assert ledger.claim_by_id(uuid.UUID(other), tasks.record.name, "host:2", 60) is None
    later = tasks.parked.apply_async(("later",), countdown=3600).id
    assert ledger.claim_by_id(uuid.UUID(later), tasks.parked.name, "host:2", 60) is None


def test_success_is_recorded_in_as_few_statements_as_the_database_allows(clean_broker):
    """One statement on PostgreSQL (UPDATE + INSERT in a CTE); the claim must still be held."""
    run_id = uuid.UUID(tasks.parked.delay("ok").id)
    claim = ledger.claim_by_id(run_id, tasks.parked.name, "host:1", 60)
    assert claim is not None
    with CaptureQueriesContext(connection) as queries:
        assert ledger.succeed(claim, {"done": [1, "two"]}) is True
    statements = _statements(queries)
    # PostgreSQL: one statement, autocommitted. SQLite (in-process): UPDATE, INSERT, COMMIT.
    assert len(statements) == (1 if connection.vendor == "postgresql" else 3)
    run = TaskRun.objects.get(pk=run_id)
    assert run.state == RunState.SUCCEEDED and run.result == {"done": [1, "two"]}
    attempt = TaskAttempt.objects.get(run=run)
    assert attempt.outcome == AttemptOutcome.SUCCEEDED and attempt.worker == "host:1"
    assert attempt.number == 1 and attempt.duration is not None
    assert ledger.succeed(claim, None) is False  # already recorded: the claim is gone
    assert TaskAttempt.objects.filter(run=run).count() == 1


def test_the_outcome_row_is_upserted_on_the_task_id(clean_broker):
    """An existing row (STARTED, or an earlier attempt's RETRY) is updated in place, as
    django-celery-results' manager does: date_created and date_started kept, the rest replaced."""
    from taskkit.worker import results

    class Request:
        id = None
        task = tasks.parked.name
        hostname = "host@one"
        argsrepr, kwargsrepr = "()", "{}"
        meta: dict = {}
        children: list = []
        is_eager = False
        ignore_result = None

    run_id = uuid.UUID(tasks.parked.delay("upsert").id)
    Request.id = str(run_id)
    app.backend.store_result(str(run_id), None, "STARTED", request=Request)
    before = TaskResult.objects.get(task_id=run_id)
    assert before.date_started is not None
    claim = ledger.claim_by_id(run_id, tasks.parked.name, "host:1", 60)
    assert claim is not None
    row_ = results.row_for(tasks.parked.spec, Request, "SUCCESS", {"n": 1})
    assert row_ is not None
    with CaptureQueriesContext(connection) as queries:
        assert ledger.succeed(claim, {"n": 1}, row_) is True
    statements = _statements(queries)
    # PostgreSQL: one statement (run, attempt and TaskResult in a CTE), autocommitted.
    # SQLite: UPDATE, INSERT attempt, upsert TaskResult, COMMIT.
    assert len(statements) == (1 if connection.vendor == "postgresql" else 4)
    after = TaskResult.objects.get(task_id=run_id)
    assert after.pk == before.pk and after.status == "SUCCESS"
    assert after.date_created == before.date_created and after.date_started == before.date_started
    assert after.date_done >= before.date_done and json.loads(after.result) == {"n": 1}
    assert after.worker == "host@one" and after.task_args == '"()"'
    assert TaskAttempt.objects.filter(run_id=run_id).count() == 1
    # a lost claim writes nothing at all: not the run, not an attempt, not the row
    row_ = results.row_for(tasks.parked.spec, Request, "FAILURE", ValueError("late"))
    assert (
        ledger.fail(claim, ledger.ErrorInfo.from_exception(ValueError("late")), None, row=row_)
        is None
    )
    assert TaskResult.objects.get(task_id=run_id).status == "SUCCESS"
    assert TaskAttempt.objects.filter(run_id=run_id).count() == 1


@pytest.mark.parametrize("retry", [True, False], ids=["retry", "failure"])
def test_a_failure_or_a_retry_is_one_statement_too(clean_broker, retry):
    """The run's update, the attempt's insert and the TaskResult upsert, as for a success."""
    from taskkit.core.policy import RetryDecision
    from taskkit.worker import results

    run_id = uuid.UUID(tasks.parked.delay("fails").id)
    claim = ledger.claim_by_id(run_id, tasks.parked.name, "host:1", 60)
    assert claim is not None

    class Request:
        id = str(run_id)
        task = tasks.parked.name
        hostname = "host@one"
        argsrepr, kwargsrepr = "()", "{}"
        is_eager = False
        ignore_result = None

    status = "RETRY" if retry else "FAILURE"
    exc = ValueError("no", 1)
    row_ = results.row_for(tasks.parked.spec, Request, status, exc, "Traceback …")
    error = ledger.ErrorInfo.from_exception(exc)
    with CaptureQueriesContext(connection) as queries:
        state = ledger.fail(claim, error, RetryDecision(5.0) if retry else None, row=row_)
    statements = _statements(queries)
    assert len(statements) == (1 if connection.vendor == "postgresql" else 4)
    assert state == (RunState.RETRYING if retry else RunState.FAILED)
    run = TaskRun.objects.get(pk=run_id)
    assert run.state == state and run.error_message == str(exc)
    assert (run.not_before is not None) == retry
    attempt = TaskAttempt.objects.get(run_id=run_id)
    assert attempt.outcome == AttemptOutcome.FAILED and attempt.retry_delay == (
        5.0 if retry else None
    )
    stored = TaskResult.objects.get(task_id=run_id)
    assert stored.status == status and stored.traceback == "Traceback …"
    assert json.loads(stored.result)["exc_message"] == ["no", 1]
    assert app.AsyncResult(str(run_id)).state == status
