"""Flower agrees with the ledger: per run (arguments, root, parent, retries, state) and in total.

A real worker started with ``-E`` runs the runs; a real event receiver collects what it sends
(what Flower receives), and Flower's own ``EventsState`` is fed those events, exactly as Flower
feeds it. Then Flower's view of every run, and its per-worker totals (the dashboard's Processed,
Succeeded, Failed, Retried), are compared with the ledger's rows and attempts.
"""

import pytest
from celery import Task as CeleryTask
from django.db import transaction
from django_celery_results.models import TaskResult
from flower.events import EventsState

import taskkit
from taskkit.core import headers
from taskkit.core.spec import RUN_HEADER
from taskkit.models import AttemptOutcome, RunState, TaskAttempt, TaskRun
from tests.conftest import wait_for
from tests.integration.test_secrets import EventTap
from tests.testapp import tasks
from tests.testapp.models import Effect, Order

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

FLOWER_STATE = {RunState.SUCCEEDED: "SUCCESS", RunState.FAILED: "FAILURE"}
ENDS = ("task-succeeded", "task-failed")
CARD = "4111111111111111"


def _tree(root_id) -> list[TaskRun]:
    """The runs of ``dispatches_tree`` whose root is ``root_id``, the root first."""
    runs = [TaskRun.objects.get(pk=root_id)]
    while True:
        child = TaskRun.objects.filter(options__parent_id=str(runs[-1].pk)).first()
        if child is None:
            return runs
        runs.append(child)


def _flower_has_seen_all(tap, runs: list[TaskRun]) -> bool:
    """Every run ended in the ledger and the receiver has each of its attempts and its end."""
    for run in runs:
        run.refresh_from_db()
        if run.state not in FLOWER_STATE:
            return False
        events = tap.of(run.pk)
        received = sum(e["type"] == "task-received" for e in events)
        if received != run.attempts or sum(e["type"] in ENDS for e in events) != 1:
            return False
    return True


@pytest.fixture
def tap(worker):
    """The worker's events as Flower receives them (a real receiver, in a thread)."""
    receiver = EventTap().start()
    yield receiver
    receiver.stop()


def test_flower_shows_what_the_ledger_says(tap):
    """Arguments (sensitive ones masked), root and parent, 9 retries for 10 attempts, the final
    state, and the worker's totals: all as in the ledger."""
    plain = tasks.record.delay("flower", n=1)
    ten = tasks.fails_ten_times.delay("ten")
    four = tasks.fails_three_times.delay("four", note="retried")
    card = tasks.charges_card.delay("ord-1", CARD, fail="once")
    tree_root = tasks.dispatches_tree.delay("tree", 2)
    bulk = tasks.record.delay_many([(f"bulk-{i}",) for i in range(4)])

    wait_for(lambda: len(_tree(tree_root.id)) == 3, 60, what="the tree's three runs")
    runs = [TaskRun.objects.get(pk=r.id) for r in (plain, ten, four, card, *bulk)] + _tree(
        tree_root.id
    )
    wait_for(lambda: _flower_has_seen_all(tap, runs), 150, what="every run's events")

    state = EventsState()  # Flower's own state, fed as Flower feeds it
    ids = {str(run.pk) for run in runs}
    worker_events = [e for e in list(tap.events) if e["type"].startswith("worker-")]
    for event in worker_events[-1:] + [e for e in list(tap.events) if e.get("uuid") in ids]:
        state.event(dict(event))

    for run in runs:
        task = state.tasks[str(run.pk)]
        assert task.state == FLOWER_STATE[run.state], run.task_name
        assert task.retries == run.attempts - 1, run.task_name
        if str(run.pk) != card.id:  # an ended sensitive run's row is scrubbed (<redacted>)
            expected = headers.for_run(run.args, run.kwargs, run.options)
            assert (task.args, task.kwargs) == (expected.argsrepr, expected.kwargsrepr)

    by_id = {str(run.pk): state.tasks[str(run.pk)] for run in runs}
    assert (by_id[plain.id].args, by_id[plain.id].kwargs) == ("('flower',)", "{'n': 1}")
    assert (by_id[ten.id].retries, by_id[ten.id].state) == (9, "FAILURE")
    assert TaskRun.objects.get(pk=ten.id).attempts == 10
    assert (by_id[four.id].retries, by_id[four.id].kwargs) == (3, "{'note': 'retried'}")
    assert (by_id[card.id].args, by_id[card.id].retries) == ("('ord-1', <sensitive>)", 1)
    assert not any(CARD in repr(e) for e in tap.of(card.id))
    root, child, grandchild = _tree(tree_root.id)
    assert (by_id[str(root.pk)].root_id, by_id[str(root.pk)].parent_id) == (str(root.pk), None)
    assert (by_id[str(child.pk)].root_id, by_id[str(child.pk)].parent_id) == (
        str(root.pk),
        str(root.pk),
    )
    assert (by_id[str(grandchild.pk)].root_id, by_id[str(grandchild.pk)].parent_id) == (
        str(root.pk),
        str(child.pk),
    )
    # a run that retried itself is not its own parent (Celery's guess, hidden while publishing)
    assert by_id[ten.id].parent_id is None and by_id[ten.id].root_id == ten.id

    # the dashboard's totals: one worker, counted from these runs' events only
    (counter,) = [c for c in state.counter.values() if c.get("task-received")]
    attempts = TaskAttempt.objects.filter(run_id__in=[run.pk for run in runs])
    ended = {s: sum(run.state == s for run in runs) for s in FLOWER_STATE}
    assert counter["task-received"] == attempts.count() == sum(run.attempts for run in runs)
    assert counter["task-succeeded"] == ended[RunState.SUCCEEDED]
    assert counter["task-failed"] == ended[RunState.FAILED]
    assert (
        counter["task-retried"]
        == attempts.filter(outcome=AttemptOutcome.FAILED).count() - (ended[RunState.FAILED])
    )
    flower_states = [t.state for t in state.tasks.values()]
    assert flower_states.count("SUCCESS") == ended[RunState.SUCCEEDED]
    assert flower_states.count("FAILURE") == ended[RunState.FAILED]


def test_flower_shows_discarded_and_cancelled_runs_revoked(tap):
    """A run the worker discards (its object was deleted) and a run cancelled before its message
    reached a worker end ``REVOKED`` in Flower and in django-celery-results, not ``STARTED``: the
    ledger says *Discarded* / *Cancelled*, Celery's name for them is REVOKED."""
    order = Order.objects.create(reference="gone")
    with transaction.atomic():  # published on commit, when the order is already gone
        discarded = tasks.touch_order_discard.delay(order)
        order.delete()
    # Due in an hour: the relay's to publish (no message yet). Cancelled now, then a message for
    # it is delivered, as a late or duplicate one would be.
    waiting = tasks.record.apply_async(("never",), countdown=3600)
    assert taskkit.cancel(waiting.id).cancelled
    CeleryTask.apply_async(
        tasks.record, args=(), kwargs={}, task_id=waiting.id, headers={RUN_HEADER: "1"}
    )
    ids = (discarded.id, waiting.id)
    wait_for(
        lambda: all(any(e["type"] == "task-revoked" for e in tap.of(i)) for i in ids),
        60,
        what="a task-revoked event for both runs",
    )

    state = EventsState()
    for event in [e for e in list(tap.events) if e.get("uuid") in ids]:
        state.event(dict(event))
    assert TaskRun.objects.get(pk=discarded.id).state == RunState.DISCARDED
    assert TaskRun.objects.get(pk=waiting.id).state == RunState.CANCELLED
    assert [e["type"] for e in tap.of(waiting.id)][-2:] == ["task-started", "task-revoked"]
    for run_id in ids:
        assert state.tasks[run_id].state == "REVOKED", run_id
    rows = dict(TaskResult.objects.filter(task_id__in=ids).values_list("task_id", "status"))
    assert rows == {discarded.id: "REVOKED", waiting.id: "REVOKED"}
    assert not Effect.objects.filter(kind="never").exists()
