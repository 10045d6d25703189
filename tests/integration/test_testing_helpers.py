"""taskkit.testing: capture dispatches, run them through the real execution path, inject faults."""

import pytest
from django.db import transaction
from tenacity import stop_after_attempt

from taskkit import UnsafeArgument
from taskkit.models import AttemptOutcome, RunState, TaskAttempt, TaskRun
from taskkit.testing import capture
from tests.testapp import tasks
from tests.testapp.models import Effect, Order

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def captured():
    with capture() as captured:
        yield captured


def outcomes(deliveries):
    return [d.outcome for d in deliveries]


@pytest.mark.django_db(transaction=True)
class TestCommittedDispatches:
    def test_captures_committed_dispatches_without_a_broker(self, captured, clean_broker):
        """A dispatch is captured after commit; nothing reaches Redis."""
        result = tasks.parked.delay("k", 1, 2, flag=True)
        (run,) = captured.assert_dispatched(tasks.parked, args=("k", 1, 2), kwargs={"flag": True})
        assert str(run.pk) == result.id and run.state == RunState.QUEUED
        assert clean_broker.llen("inspect") == 0

    def test_a_rolled_back_dispatch_is_not_captured(self, captured):
        """Rollback means nothing: no run, no captured message."""
        with pytest.raises(RuntimeError), transaction.atomic():
            tasks.record.delay("rolled-back")
            raise RuntimeError()
        captured.assert_not_dispatched(tasks.record)
        assert captured.messages == []

    def test_a_bulk_dispatch_is_captured_and_run(self, captured, clean_broker):
        """delay_many goes through the one publish point capture() replaces: every run of the
        batch is captured (none reaches Redis) and run_all() runs them."""
        results = tasks.record.delay_many([("bulk-1",), ("bulk-2",)])
        assert [str(m.run_id) for m in captured.messages] == [r.id for r in results]
        assert clean_broker.llen("celery") == 0
        assert outcomes(captured.run_all()) == ["succeeded", "succeeded"]
        assert Effect.objects.filter(kind__startswith="bulk-").count() == 2

    def test_captured_only_once_the_transaction_commits(self, captured):
        """Inside an open transaction nothing is captured yet; after it commits, it is."""
        with transaction.atomic():
            tasks.record.delay("later")
            assert captured.runs == []
        captured.assert_dispatched(tasks.record, args=("later",), count=1)

    def test_an_unserializable_argument_fails_at_the_call_site(self, captured):
        """The real serialization path runs: a set cannot travel."""
        with pytest.raises(UnsafeArgument, match="kind"):
            tasks.record.delay({"a", "b"})
        assert captured.messages == []

    def test_model_arguments_are_compared_as_they_travel(self, captured):
        """assert_dispatched(args=(order,)) matches the run's model reference."""
        order = Order.objects.create(reference="A-1")
        other = Order.objects.create(reference="A-2")
        tasks.touch_order.delay(order)
        captured.assert_dispatched(tasks.touch_order, args=(order,))
        with pytest.raises(AssertionError, match=r"expected .*touch_order to be dispatched"):
            captured.assert_dispatched(tasks.touch_order, args=(other,))

    def test_run_all_runs_through_the_real_execution_path(self, captured):
        """Two failures, then success: retries follow the task's policy, waits skipped."""
        result = tasks.flaky.delay("helper-flaky", 2)
        deliveries = captured.run_all()
        assert outcomes(deliveries) == ["retrying", "retrying", "succeeded"]
        run = TaskRun.objects.get(pk=result.id)
        assert run.state == RunState.SUCCEEDED and run.result == 3
        delays = TaskAttempt.objects.filter(run=run).values_list("retry_delay", flat=True)
        assert list(delays) == [pytest.approx(0.3), pytest.approx(0.3), None]

    def test_a_run_that_gives_up_returns_its_exception(self, captured):
        """The stop strategy ends the run FAILED; the exception is handed back, not raised."""
        tasks.always_fails.delay("helper-fails")
        deliveries = captured.run_all()
        assert outcomes(deliveries) == ["retrying", "retrying", "failed"]
        assert isinstance(deliveries[-1].exception, ValueError)

    def test_a_duplicate_delivery_is_skipped(self, captured):
        """A second message for a finished run loses the claim: one effect."""
        result = tasks.record.delay("dup")
        captured.deliver_again(result.id)
        assert outcomes(captured.run_all()) == ["succeeded", "skipped"]
        assert Effect.objects.filter(kind="dup").count() == 1

    def test_failure_on_chosen_attempts(self, captured):
        """fail_on makes attempt 1 raise; the retry predicate and wait decide as usual."""
        tasks.record.delay("flaky-once")
        captured.fail_on(tasks.record, attempts={1}, exc=ConnectionError("gateway down"))
        deliveries = captured.run_all()
        assert outcomes(deliveries) == ["retrying", "succeeded"]
        first = TaskAttempt.objects.get(number=1, run_id=deliveries[0].message.run_id)
        assert first.error_type == "builtins.ConnectionError"
        assert Effect.objects.filter(kind="flaky-once").count() == 1

    def test_a_failure_the_policy_does_not_retry(self, captured):
        """A simulated exception outside retry= ends the run at once."""
        tasks.not_retryable.delay("nr")
        captured.fail_on(tasks.not_retryable, attempts={1}, exc=LookupError("nope"))
        assert outcomes(captured.run_all()) == ["failed"]

    @pytest.mark.parametrize(
        ("task", "outcome"),
        [
            (tasks.touch_order, "failed"),
            (tasks.touch_order_discard, "discarded"),
        ],
    )
    def test_a_missing_object_follows_on_missing(self, captured, task, outcome):
        """A row deleted before the run is handled by the task's on_missing."""
        order = Order.objects.create(reference="gone")
        result = task.delay(order)
        order.delete()
        assert outcomes(captured.run_all()) == [outcome]
        attempt = TaskAttempt.objects.get(run_id=result.id)
        assert attempt.outcome == AttemptOutcome.MISSING

    def test_missing_object_retried_then_failed(self, captured):
        """on_missing='retry' retries within the stop strategy, then fails."""
        order = Order.objects.create(reference="lagging")
        tasks.touch_order_retry.delay(order)
        order.delete()
        assert outcomes(captured.run_all()) == ["retrying", "retrying", "failed"]
        assert isinstance(tasks.touch_order_retry.policy.stop, stop_after_attempt)

    def test_an_atomic_task_failure_leaves_no_writes(self, captured):
        """atomic=True: the body's writes roll back with the failed attempt."""
        tasks.atomic_then_fail.delay("atomic-helper")
        assert outcomes(captured.run_all()) == ["failed"]
        assert not Order.objects.filter(reference="atomic-helper").exists()


@pytest.mark.django_db
def test_in_a_testcase_transaction_commit_runs_the_callbacks(captured):
    """In a non-transactional test, the helper commits as captureOnCommitCallbacks would."""
    result = tasks.record.delay("tc")
    captured.assert_dispatched(tasks.record, args=("tc",))
    assert outcomes(captured.run_all()) == ["succeeded"]
    assert TaskRun.objects.get(pk=result.id).state == RunState.SUCCEEDED
    assert Effect.objects.filter(kind="tc").count() == 1


@pytest.mark.django_db
def test_in_a_testcase_an_open_atomic_block_is_not_committed(captured):
    """A dispatch inside a transaction the code has not left yet is not captured."""
    with transaction.atomic():
        tasks.record.delay("still-open")
        assert captured.runs == []
    assert len(captured.runs) == 1
