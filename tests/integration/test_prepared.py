"""The worker's claim and the end of an attempt are prepared once per PostgreSQL session
(``taskkit.core.prepared``): one ``EXECUTE`` each afterwards, recovered when the session forgot
them, given up (plain text, one warning) when a session keeps forgetting them, never inside a
transaction, and never with ``TASKKIT_PREPARED_STATEMENTS = False``. Against the real database."""

import logging
import uuid
from collections.abc import Iterator
from unittest import mock

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext, override_settings

from taskkit.core import ledger, prepared
from taskkit.models import AttemptOutcome, RunState, TaskAttempt, TaskRun
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def postgres_only() -> Iterator[None]:
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are used on PostgreSQL only (DATABASE_URL=postgres://…)")
    prepared.reset()
    yield
    prepared.reset()


def _run_and_claim(label: str) -> ledger.Claim:
    run_id = uuid.UUID(tasks.parked.delay(label).id)
    claim = ledger.claim_by_id(run_id, tasks.parked.name, "host:1", 60)
    assert claim is not None
    return claim


def _bare(sql: str) -> str:
    """A statement without the relaxed commit around it (a claim's)."""
    if sql.startswith(prepared.RELAXED_PREFIX):
        assert sql.endswith(prepared.RELAXED_SUFFIX), sql
        return sql[len(prepared.RELAXED_PREFIX) : -len(prepared.RELAXED_SUFFIX)]
    return sql


def _sent(queries: CaptureQueriesContext) -> list[str]:
    return [_bare(q["sql"]).split("(")[0].split(" AS ")[0] for q in queries]


def _idle() -> bool:
    """The session is outside any transaction block (nothing left open by a relaxed claim)."""
    from psycopg.pq import TransactionStatus

    return bool(connection.connection.info.transaction_status == TransactionStatus.IDLE)


def _session_names() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements")
        return {name for (name,) in cursor.fetchall()}


def test_claim_and_finish_are_prepared_once_then_executed(clean_broker):
    connection.close()  # a new session: nothing prepared yet
    with CaptureQueriesContext(connection) as first:
        claim = _run_and_claim("first")
        assert ledger.succeed(claim, 1) is True
    prepares = [q for q in first if q["sql"].startswith("PREPARE taskkit_")]
    executes = [q for q in first if _bare(q["sql"]).startswith("EXECUTE taskkit_")]
    assert len(prepares) == 2 and len(executes) == 2, _sent(first)
    names = {q["sql"].split()[1] for q in prepares}
    assert names <= _session_names()

    with CaptureQueriesContext(connection) as second:
        claim = _run_and_claim("second")
        assert ledger.succeed(claim, 2) is True
    sent = _sent(second)
    assert sum(s.startswith("EXECUTE taskkit_") for s in sent) == 2, sent
    assert not any(s.startswith(("PREPARE", "UPDATE", "WITH")) for s in sent), sent
    run = TaskRun.objects.get(pk=claim.run.pk)
    assert run.state == RunState.SUCCEEDED and run.result == 2
    assert TaskAttempt.objects.get(run=run).outcome == AttemptOutcome.SUCCEEDED


@pytest.mark.parametrize("asynchronous", [False, True], ids=["claims", "asynchronous claims"])
def test_a_session_that_forgot_them_prepares_them_again(clean_broker, settings, asynchronous):
    settings.TASKKIT_ASYNCHRONOUS_CLAIMS = asynchronous
    claim = _run_and_claim("warm")
    assert ledger.succeed(claim, 0) is True
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # what a proxy's reset, or another server session, does
    with CaptureQueriesContext(connection) as queries:
        claim = _run_and_claim("after the reset")
        assert ledger.succeed(claim, 1) is True
    sent = _sent(queries)
    ours = [s.split()[0] for s in sent if s.startswith(("PREPARE taskkit_", "EXECUTE taskkit_"))]
    # the claim: EXECUTE (unknown: an error, nothing done), PREPARE, EXECUTE; then the end of
    # the attempt, prepared afresh (the session's names were forgotten with the claim's miss)
    assert ours == ["EXECUTE", "PREPARE", "EXECUTE", "PREPARE", "EXECUTE"], sent
    run = TaskRun.objects.get(pk=claim.run.pk)
    assert (run.state, run.attempts) == (RunState.SUCCEEDED, 1)
    assert TaskAttempt.objects.filter(run=run).count() == 1
    assert "default" not in prepared._given_up
    assert _idle()  # the claim's miss, inside its relaxed transaction, was rolled back
    relaxed = [q for q in queries if q["sql"].startswith(prepared.RELAXED_PREFIX)]
    assert len(relaxed) == (2 if asynchronous else 0), sent  # the miss, then the claim


def test_a_new_connection_to_a_session_that_has_them_uses_them(clean_broker):
    """A session can hold a name already (prepared through another connection sharing it, by
    a proxy): PREPARE answers "already exists", which is taken as prepared."""
    claim = _run_and_claim("warm")
    assert ledger.succeed(claim, 0) is True
    del connections["default"].__dict__["_taskkit_prepared"]  # forgotten here, not by the session
    with CaptureQueriesContext(connection) as queries:
        claim = _run_and_claim("same session")
        assert ledger.succeed(claim, 1) is True
    sent = _sent(queries)
    assert sum(s.startswith("PREPARE taskkit_") for s in sent) == 2, sent  # both "already exist"
    assert sum(s.startswith("EXECUTE taskkit_") for s in sent) == 2, sent
    assert TaskRun.objects.get(pk=claim.run.pk).state == RunState.SUCCEEDED
    assert "default" not in prepared._given_up


def test_without_autocommit_the_text_is_sent(clean_broker):
    """Outside atomic() but with autocommit off, an error would abort the open transaction."""
    run_id = uuid.UUID(tasks.parked.delay("no autocommit").id)
    connection.set_autocommit(False)
    try:
        with CaptureQueriesContext(connection) as queries:
            claim = ledger.claim_by_id(run_id, tasks.parked.name, "host:1", 60)
            assert claim is not None
            assert ledger.succeed(claim, 1) is True
        connection.commit()
    finally:
        connection.set_autocommit(True)
    assert not any(s.startswith(("PREPARE", "EXECUTE")) for s in _sent(queries)), _sent(queries)
    assert TaskRun.objects.get(pk=run_id).state == RunState.SUCCEEDED


def test_a_session_that_keeps_forgetting_them_gets_plain_statements(clean_broker, caplog):
    """A transaction-pooling proxy hands each statement to another server session: simulated by
    forgetting every prepared statement before each EXECUTE. Nothing is lost or done twice."""

    def forget(execute, sql, params, many, context):
        if _bare(sql).startswith("EXECUTE taskkit_"):
            with connection.connection.cursor() as raw:
                raw.execute("DEALLOCATE ALL")
        return execute(sql, params, many, context)

    caplog.set_level(logging.WARNING, logger="taskkit.prepared")
    with connection.execute_wrapper(forget):
        claim = _run_and_claim("pooled")
        assert ledger.succeed(claim, "done") is True
        with CaptureQueriesContext(connection) as later:
            claim2 = _run_and_claim("pooled, later")
            assert ledger.fail(claim2, ledger.ErrorInfo.from_exception(ValueError("x")), None) == (
                RunState.FAILED
            )
    assert prepared._given_up == {"default"}  # only the database that lost them
    warnings = [r for r in caplog.records if "transaction-pooling proxy" in r.getMessage()]
    assert len(warnings) == 1
    assert not any(s.startswith(("PREPARE", "EXECUTE")) for s in _sent(later)), _sent(later)
    first, second = TaskRun.objects.get(pk=claim.run.pk), TaskRun.objects.get(pk=claim2.run.pk)
    assert (first.state, first.result, first.attempts) == (RunState.SUCCEEDED, "done", 1)
    assert (second.state, second.attempts) == (RunState.FAILED, 1)
    assert TaskAttempt.objects.filter(run_id__in=[first.pk, second.pk]).count() == 2


def test_inside_a_transaction_and_when_turned_off_the_text_is_sent(clean_broker):
    with CaptureQueriesContext(connection) as queries:
        with transaction.atomic():  # an atomic task ends its attempt inside its transaction
            claim = _run_and_claim("atomic")
            assert ledger.succeed(claim, 1) is True
        with override_settings(TASKKIT_PREPARED_STATEMENTS=False):
            claim = _run_and_claim("off")
            assert ledger.succeed(claim, 2) is True
    assert not any(s.startswith(("PREPARE", "EXECUTE")) for s in _sent(queries)), _sent(queries)
    assert TaskRun.objects.filter(state=RunState.SUCCEEDED).count() == 2


@pytest.mark.parametrize(
    "options", [{"server_side_binding": True}, "cursor_factory"], ids=["option", "cursor_factory"]
)
def test_a_connection_with_server_side_binding_gets_the_text(clean_broker, settings, options):
    """PostgreSQL refuses bound parameters in EXECUTE's argument list and in a string of several
    statements, so a connection whose cursor binds on the server (Django's option, or a
    ``cursor_factory`` of one's own) is sent neither, asynchronous claims asked for or not."""
    psycopg = pytest.importorskip("psycopg")
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as raw:  # what server-side binding sends
        raw.execute("PREPARE taskkit_probe AS SELECT $1::int")
        with pytest.raises(psycopg.errors.UndefinedParameter):
            raw.execute("EXECUTE taskkit_probe(%s)", (1,))
        raw.execute("DEALLOCATE taskkit_probe")
        with pytest.raises(psycopg.errors.SyntaxError):
            raw.execute("BEGIN; SELECT %s::int; COMMIT", (1,))
    if options == "cursor_factory":
        options = {"cursor_factory": psycopg.Cursor}
    connection.close()  # the next connection is made with the options
    try:
        with mock.patch.dict(connection.settings_dict["OPTIONS"], options):
            connection.ensure_connection()
            assert not isinstance(connection.cursor().cursor, psycopg.ClientCursor)
            with CaptureQueriesContext(connection) as queries:
                claim = _run_and_claim("server-side binding")
                assert ledger.succeed(claim, 3) is True
                settings.TASKKIT_ASYNCHRONOUS_CLAIMS = True
                claim2 = _run_and_claim("server-side binding, asynchronous")
                assert ledger.succeed(claim2, 4) is True
    finally:
        connection.close()  # later tests get Django's own cursor again
    sent = _sent(queries)
    assert not any(s.startswith(("PREPARE", "EXECUTE", "BEGIN")) for s in sent), sent
    assert not any(q["sql"].startswith("BEGIN") for q in queries), sent
    assert TaskRun.objects.get(pk=claim.run.pk).result == 3
    assert TaskRun.objects.get(pk=claim2.run.pk).result == 4


def _other_session(sql: str, params: tuple = ()) -> list[tuple]:
    psycopg = pytest.importorskip("psycopg")
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"], port=settings["PORT"] or 5432, user=settings["USER"],
        password=settings["PASSWORD"], dbname=settings["NAME"], autocommit=True,
    ) as other:  # fmt: skip
        return other.execute(sql, params).fetchall()


@override_settings(TASKKIT_ASYNCHRONOUS_CLAIMS=True)
def test_an_asynchronous_claim_commits_without_waiting_for_the_flush(clean_broker):
    """The claim is one round trip that commits with ``synchronous_commit`` off; the end of the
    attempt waits for its flush (and with it the claim's). Both are seen by other sessions at
    once."""
    with CaptureQueriesContext(connection) as queries:
        claim = _run_and_claim("relaxed")
        (seen,) = _other_session("SELECT state FROM taskkit_taskrun WHERE id = %s", (claim.run.pk,))
        assert seen == (RunState.RUNNING,)
        assert _idle()
        assert ledger.succeed(claim, 1) is True
    claims = [q["sql"] for q in queries if "first_started_at" in q["sql"] or "EXECUTE" in q["sql"]]
    relaxed = [sql for sql in claims if sql.startswith(prepared.RELAXED_PREFIX)]
    assert len(relaxed) == 1 and "EXECUTE taskkit_" in relaxed[0], claims
    assert sum(sql.startswith("EXECUTE taskkit_") for sql in claims) == 1, claims  # the end
    assert TaskRun.objects.get(pk=claim.run.pk).state == RunState.SUCCEEDED


def test_claims_wait_for_the_flush_by_default(clean_broker):
    with CaptureQueriesContext(connection) as q:
        claim = _run_and_claim("synchronous")
        assert ledger.succeed(claim, 1) is True
    assert not any("synchronous_commit" in x["sql"] for x in q), _sent(q)
    assert TaskRun.objects.get(pk=claim.run.pk).state == RunState.SUCCEEDED


@override_settings(TASKKIT_ASYNCHRONOUS_CLAIMS=True)
def test_an_error_inside_an_asynchronous_claim_leaves_the_session_usable(clean_broker):
    """An error other than a forgotten statement (here: a lock wait that times out) ends the
    relaxed transaction; the claim raises, nothing changed, and the next claim works."""
    psycopg = pytest.importorskip("psycopg")
    run_id = uuid.UUID(tasks.parked.delay("locked").id)
    _run_and_claim("warm")  # prepared already: the error comes from the EXECUTE
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"], port=settings["PORT"] or 5432, user=settings["USER"],
        password=settings["PASSWORD"], dbname=settings["NAME"],
    ) as holder:  # fmt: skip
        holder.execute("SELECT 1 FROM taskkit_taskrun WHERE id = %s FOR UPDATE", (run_id,))
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '100ms'")
        try:
            with pytest.raises(OperationalError):
                ledger.claim_by_id(run_id, tasks.parked.name, "host:1", 60)
            assert _idle()
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
        holder.rollback()
    assert TaskRun.objects.get(pk=run_id).state == RunState.QUEUED
    claim = ledger.claim_by_id(run_id, tasks.parked.name, "host:1", 60)
    assert claim is not None and ledger.succeed(claim, 1) is True
    assert TaskRun.objects.get(pk=run_id).attempts == 1
