"""The hot path's round trips: a claim is one statement, a success one on PostgreSQL."""

import datetime
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from taskkit.core import ledger
from taskkit.models import AttemptOutcome, RunState, TaskAttempt, TaskRun
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def test_claim_by_id_is_one_statement_and_returns_the_row_as_the_orm_reads_it(clean_broker):
    """UPDATE … RETURNING claims the run and brings back every field, converted."""
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=datetime.UTC)
    result = tasks.parked.apply_async(
        ("claim", Decimal("1.5"), uuid.UUID(int=7)), {"at": when}, idempotency_key="k-claim"
    )
    with CaptureQueriesContext(connection) as queries:
        claim = ledger.claim_by_id(uuid.UUID(result.id), tasks.parked.name, "host:1", 60)
    assert len(queries) == 1
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
    statements = [q for q in queries if not q["sql"].upper().startswith(("BEGIN", "SAVEPOINT"))]
    # PostgreSQL: one statement, autocommitted. SQLite (in-process): UPDATE, INSERT, COMMIT.
    assert len(statements) == (1 if connection.vendor == "postgresql" else 3)
    run = TaskRun.objects.get(pk=run_id)
    assert run.state == RunState.SUCCEEDED and run.result == {"done": [1, "two"]}
    attempt = TaskAttempt.objects.get(run=run)
    assert attempt.outcome == AttemptOutcome.SUCCEEDED and attempt.worker == "host:1"
    assert attempt.number == 1 and attempt.duration is not None
    assert ledger.succeed(claim, None) is False  # already recorded: the claim is gone
    assert TaskAttempt.objects.filter(run=run).count() == 1
