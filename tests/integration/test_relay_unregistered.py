"""Runs of tasks that are not registered (a deploy renamed or removed them) never stop the relay.

Real sweeps against the real database and broker: such a run is published by name and stamped
QUEUED with the usual backoff, a sweep never takes it twice, task names are resolved once per sweep,
and past ``TASKKIT_UNKNOWN_TASK_GRACE_SECONDS`` it ends FAILED with ``TaskNotRegistered`` (signal,
metric, admin filter). Expired leases of such runs are recorded LOST and never block the others.
A real worker that does not know the task leaves the run QUEUED for the relay.
"""

import datetime
import json

import celery
import pytest
from django.utils import timezone
from django_celery_results.models import TaskResult
from prometheus_client.parser import text_string_to_metric_families

from taskkit.core import ledger, redaction, signals
from taskkit.core.exceptions import TaskNotRegistered
from taskkit.models import AttemptOutcome, RunState, TaskAttempt, TaskRun
from taskkit.observe import metrics
from taskkit.relay import sweep as relay
from tests.conftest import wait_for
from tests.integration.test_execution import finished
from tests.testapp import tasks

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

AGO = datetime.timedelta(hours=1)
GONE = "tests.gone.parked"
NOT_REGISTERED = "taskkit.exceptions.TaskNotRegistered"


@pytest.fixture
def fast_relay(settings):
    settings.TASKKIT_RELAY_GRACE_SECONDS = 1
    settings.TASKKIT_REQUEUE_AFTER = 5
    settings.TASKKIT_UNKNOWN_TASK_GRACE_SECONDS = 600
    return settings


def renamed_run(name: str = GONE, kind: str = "renamed", **changes) -> TaskRun:
    """A PENDING run whose publish was lost an hour ago, of a task now called ``name``."""
    result = tasks.parked.apply_async((kind,), countdown=3600)  # no message: waits in the ledger
    fields = {
        "task_name": name,
        "state": RunState.PENDING,
        "queued_at": None,
        "not_before": None,
        "created_at": timezone.now() - AGO,
        **changes,
    }
    TaskRun.objects.filter(pk=result.id).update(**fields)
    return TaskRun.objects.get(pk=result.id)


def messages(redis_client, queue="inspect") -> list[dict]:
    return [json.loads(m) for m in redis_client.lrange(queue, 0, -1)]


def test_a_run_of_an_unregistered_task_is_published_by_name_once_per_sweep(
    clean_broker, fast_relay
):
    """The sweep returns; the run goes out by name, as publish_many sends it, and is QUEUED with
    the requeue backoff and the time its task was first found unregistered; not taken again."""
    run = renamed_run()
    ok = renamed_run(tasks.parked.name, kind="still-known")
    before = timezone.now()
    counts = relay.sweep().counts
    assert counts["published_pending"] == 2 and counts["unregistered_task"] == 1, counts
    sent = {m["headers"]["id"]: m for m in messages(clean_broker)}
    assert set(sent) == {str(run.pk), str(ok.pk)}
    gone = sent[str(run.pk)]
    assert gone["headers"]["task"] == GONE
    assert gone["headers"]["taskkit_run"] == "1"
    assert gone["headers"]["task"] != sent[str(ok.pk)]["headers"]["task"]
    run.refresh_from_db()
    assert run.state == RunState.QUEUED and run.publish_count == 1
    assert before <= run.unregistered_since <= timezone.now()
    assert 4 < (run.requeue_at - run.queued_at).total_seconds() < 6  # TASKKIT_REQUEUE_AFTER
    assert TaskRun.objects.get(pk=ok.pk).unregistered_since is None
    assert relay.sweep().counts["unregistered_task"] == 0  # not due again yet


def test_unknown_names_are_looked_up_once_per_sweep(clean_broker, fast_relay, monkeypatch):
    """Five runs of two unknown names: the project's task modules are imported once a sweep."""
    for i in range(3):
        renamed_run(GONE, kind=f"a{i}")
    for i in range(2):
        renamed_run("tests.gone.other", kind=f"b{i}")
    app = celery.current_app
    calls = []
    original = app.loader.import_default_modules
    monkeypatch.setattr(app.loader, "import_default_modules", lambda: calls.append(1) or original())
    counts = relay.sweep(batch_size=2).counts  # three batches
    assert counts["unregistered_task"] == 5, counts
    assert len(calls) == 1


def test_past_the_grace_the_run_ends_failed_with_the_reason(clean_broker, fast_relay, admin_client):
    """Unregistered for longer than the grace: FAILED, TaskNotRegistered, run_failed sent, no
    message published; visible as a metric label and in the admin filter."""
    run = renamed_run(unregistered_since=timezone.now() - AGO)
    waiting = renamed_run(kind="waiting")
    received = []

    def receiver(sender, **kwargs):
        received.append((sender, kwargs))

    signals.run_failed.connect(receiver)
    try:
        counts = relay.sweep().counts
    finally:
        signals.run_failed.disconnect(receiver)
    assert counts["failed_unregistered"] == 1 and counts["published_pending"] == 1, counts
    run.refresh_from_db()
    assert run.state == RunState.FAILED and run.finished_at is not None
    assert run.error_type == NOT_REGISTERED
    assert run.error_message.startswith(f"task `{GONE}` is not registered")
    assert run.unregistered_since is None and run.requeue_at is None
    assert [m["headers"]["id"] for m in messages(clean_broker)] == [str(waiting.pk)]
    ((sender, kwargs),) = received
    assert sender == GONE and kwargs["run_id"] == run.pk
    assert isinstance(kwargs["exception"], TaskNotRegistered)
    assert kwargs["outcome"] == ledger.NOT_REGISTERED

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    assert samples[("taskkit_failed_runs", (("error_type", NOT_REGISTERED), ("task", GONE)))] == 1
    assert samples[("taskkit_unregistered_task_runs", (("task", GONE),))] == 1  # ``waiting``

    page = admin_client.get("/admin/taskkit/taskrun/?unregistered=failed")
    assert page.status_code == 200
    assert str(run.pk)[:8] in page.content.decode()
    assert str(waiting.pk)[:8] not in page.content.decode()
    page = admin_client.get("/admin/taskkit/taskrun/?unregistered=waiting")
    assert str(waiting.pk)[:8] in page.content.decode()
    assert str(run.pk)[:8] not in page.content.decode()


def test_a_run_failed_for_an_unregistered_task_keeps_no_secret(clean_broker, fast_relay):
    """Ending a run for its unregistered task scrubs its sensitive arguments, as any end does."""
    secret = "4111-1111-1111-1111"
    result = tasks.parked_card.apply_async(("order-9",), {"card": secret}, countdown=3600)
    TaskRun.objects.filter(pk=result.id).update(
        task_name=GONE,
        state=RunState.PENDING,
        not_before=None,
        created_at=timezone.now() - AGO,
        unregistered_since=timezone.now() - AGO,
    )
    assert relay.sweep().counts["failed_unregistered"] == 1
    run = TaskRun.objects.get(pk=result.id)
    assert run.state == RunState.FAILED
    assert run.args == ["order-9"] and run.kwargs == {"card": redaction.REDACTED}
    assert secret not in json.dumps([run.args, run.kwargs, run.options, run.error_message])


def test_the_grace_ends_the_run_when_due(clean_broker, fast_relay):
    """The requeue time of a run of an unregistered task is capped at the end of its grace."""
    fast_relay.TASKKIT_UNKNOWN_TASK_GRACE_SECONDS = 2
    run = renamed_run()
    relay.sweep()
    run.refresh_from_db()
    assert run.requeue_at == run.unregistered_since + datetime.timedelta(seconds=2)
    TaskRun.objects.filter(pk=run.pk).update(
        unregistered_since=run.unregistered_since - AGO, requeue_at=run.requeue_at - AGO
    )
    assert relay.sweep().counts["failed_unregistered"] == 1
    assert TaskRun.objects.get(pk=run.pk).state == RunState.FAILED


def test_a_task_registered_again_waits_out_no_grace(clean_broker, fast_relay):
    """A relay that finds the task registered clears the time it was first found missing."""
    run = renamed_run(tasks.parked.name, unregistered_since=timezone.now() - AGO)
    assert relay.sweep().counts["published_pending"] == 1
    run.refresh_from_db()
    assert run.state == RunState.QUEUED and run.unregistered_since is None


def test_expired_leases_of_unregistered_tasks_never_block_the_others(clean_broker, fast_relay):
    """Oldest first: two expired leases of an unknown task, then two of a known one. One sweep
    records all four LOST; the unknown ones are published by name again, or FAILED past the
    grace; the known ones are retried by their policy."""

    def running(name: str, minutes: int, **changes) -> TaskRun:
        return renamed_run(
            name,
            kind=f"{name}-{minutes}",
            state=RunState.RUNNING,
            attempts=1,
            started_at=timezone.now() - AGO,
            first_started_at=timezone.now() - AGO,
            lease_until=timezone.now() - datetime.timedelta(minutes=minutes),
            claimed_by="old-worker:1",
            **changes,
        )

    fresh = running(GONE, 50)
    old = running(GONE, 40, unregistered_since=timezone.now() - AGO)
    known = [running(tasks.parked.name, m) for m in (30, 20)]
    counts = relay.sweep(batch_size=4).counts
    assert counts["recovered_to_retrying"] == 3 and counts["recovered_to_failed"] == 1, counts
    for run in (fresh, old, *known):
        lost = TaskAttempt.objects.get(run_id=run.pk, number=1)
        assert lost.outcome == AttemptOutcome.LOST and "old-worker:1" in lost.error_message
    fresh.refresh_from_db()
    assert fresh.state == RunState.QUEUED and fresh.unregistered_since is not None  # by name
    old.refresh_from_db()
    assert old.state == RunState.FAILED and old.error_type == NOT_REGISTERED
    assert old.error_message.startswith(f"task `{GONE}` is not registered")
    assert {m["headers"]["id"] for m in messages(clean_broker)} >= {str(fresh.pk)}


def test_a_worker_that_does_not_know_the_task_leaves_the_run_to_the_relay(worker, fast_relay):
    """A real worker gets the by-name message of a task it does not know: Celery rejects it and
    stores NotRegistered in the result backend; the ledger keeps the run QUEUED, no attempt.
    The relay publishes it again on its backoff, and fails it past the grace; the worker keeps
    serving throughout."""
    gone = "tests.gone.record"
    result = tasks.record.apply_async(("never",), countdown=3600)
    TaskRun.objects.filter(pk=result.id).update(
        task_name=gone, not_before=None, created_at=timezone.now() - AGO
    )
    assert relay.sweep().counts["unregistered_task"] == 1
    wait_for(
        lambda: f"this worker does not know task {gone}" in worker.log(),
        30,
        what="the worker's taskkit log line",
    )
    wait_for(
        lambda: TaskResult.objects.filter(task_id=result.id, status="FAILURE").exists(),
        30,
        what="Celery's NotRegistered result",
    )
    run = TaskRun.objects.get(pk=result.id)
    assert (run.state, run.attempts, run.publish_count) == (RunState.QUEUED, 0, 1)
    assert not TaskAttempt.objects.filter(run_id=run.pk).exists()
    assert finished(tasks.record.delay("after-unknown").id).state == RunState.SUCCEEDED

    TaskRun.objects.filter(pk=run.pk).update(requeue_at=timezone.now() - AGO)  # backoff over
    assert relay.sweep().counts["unregistered_task"] == 1
    wait_for(
        lambda: worker.log().count(f"this worker does not know task {gone}") >= 2,
        30,
        what="the second rejection",
    )
    run.refresh_from_db()
    assert (run.state, run.publish_count) == (RunState.QUEUED, 2)

    TaskRun.objects.filter(pk=run.pk).update(
        requeue_at=timezone.now() - AGO, unregistered_since=timezone.now() - AGO
    )
    assert relay.sweep().counts["failed_unregistered"] == 1
    run.refresh_from_db()
    assert run.state == RunState.FAILED and run.error_type == NOT_REGISTERED
    assert worker.alive
