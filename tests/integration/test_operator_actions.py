"""Operator retry (a ledger transition, published on commit) and discard go through the ledger;
taskkit's signals report transitions."""

import functools

import pytest
from django.db import transaction

from taskkit.core import ledger, signals
from taskkit.models import RunState, TaskAttempt, TaskRun
from taskkit.producer import dispatch
from tests.integration.test_execution import finished
from tests.testapp import tasks
from tests.testapp.models import Effect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]


def test_retrying_a_failed_run_gives_it_a_fresh_budget(worker):
    """A FAILED run retried by an operator runs again for a full stop budget, keeping history."""
    result = tasks.always_fails.delay("again")
    assert finished(result.id).attempts == 3
    with transaction.atomic():
        retried = dispatch.retry_runs(TaskRun.objects.filter(pk=result.id))
        assert TaskRun.objects.get(pk=result.id).state == RunState.PENDING
    assert [str(pk) for pk in retried] == [result.id]
    run = finished(result.id)
    assert run.state == RunState.FAILED and run.attempts == 6 and run.attempt_base == 3
    assert list(TaskAttempt.objects.filter(run=run).values_list("number", flat=True)) == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]
    assert Effect.objects.filter(kind="again").count() == 6


def test_retry_rolled_back_publishes_nothing(clean_broker):
    """An operator retry inside a transaction that rolls back changes nothing."""
    run = TaskRun.objects.get(pk=tasks.parked.delay("x").id)
    TaskRun.objects.filter(pk=run.pk).update(state=RunState.FAILED)
    clean_broker.delete("inspect")
    with pytest.raises(RuntimeError), transaction.atomic():
        dispatch.retry_runs(TaskRun.objects.all())
        raise RuntimeError
    assert TaskRun.objects.get(pk=run.pk).state == RunState.FAILED
    assert clean_broker.llen("inspect") == 0


def test_discard_sets_the_reason_and_skips_running_and_finished_runs(clean_broker):
    """Discard applies to waiting and failed runs only, with the operator's reason."""
    waiting = tasks.parked.delay("waiting").id
    done = tasks.parked.delay("done").id
    TaskRun.objects.filter(pk=done).update(state=RunState.SUCCEEDED)
    seen = []
    signals.run_discarded.connect(lambda **kw: seen.append(kw), weak=False, dispatch_uid="t")
    try:
        discarded = ledger.discard_runs(TaskRun.objects.all(), reason="customer cancelled")
    finally:
        signals.run_discarded.disconnect(dispatch_uid="t")
    assert [str(pk) for pk in discarded] == [waiting]
    run = TaskRun.objects.get(pk=waiting)
    assert run.state == RunState.DISCARDED and run.discard_reason == "customer cancelled"
    assert TaskRun.objects.get(pk=done).state == RunState.SUCCEEDED
    assert [s["reason"] for s in seen] == ["customer cancelled"]


def test_signals_follow_a_run_through_its_attempts(clean_broker, settings):
    """Run eagerly in this process: dispatched, started and succeeded are sent in order."""
    app = tasks.flaky.app
    seen: list[str] = []
    names = ["run_dispatched", "run_started", "run_retrying", "run_succeeded", "run_failed"]

    def receiver(name, **kwargs):
        seen.append(name)

    for n in names:
        getattr(signals, n).connect(
            functools.partial(receiver, n), weak=False, dispatch_uid=f"t-{n}"
        )
    app.conf.task_always_eager = True
    try:
        run_id = tasks.flaky.delay("eager", 0).id
    finally:
        app.conf.task_always_eager = False
        for n in names:
            getattr(signals, n).disconnect(dispatch_uid=f"t-{n}")
    assert TaskRun.objects.get(pk=run_id).state == RunState.SUCCEEDED
    assert seen == ["run_dispatched", "run_started", "run_succeeded"]
