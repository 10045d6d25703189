"""Deploy scenarios (b) and (c) of issue 9: runs queued by one release, run by the next, whose
stored call the new code cannot run.

The old release is this test process (it dispatches); the new one is a worker started with
``TASKKIT_TEST_DECODE_RELEASE=new`` (see ``tests/testapp/deploy_decode.py``). Every affected run
must end FAILED at once — one attempt, not retried, never RUNNING past its lease — with a reason
naming the argument; witness runs queued alongside are unaffected.
"""

from __future__ import annotations

import time

import pytest

from taskkit.models import AttemptOutcome, RunState, TaskAttempt, TaskRun
from tests.deployapp.models import Invoice
from tests.faults.conftest import Row, assert_nothing_lost, settle
from tests.testapp import deploy_decode
from tests.testapp.models import Effect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

NEW_RELEASE = {"TASKKIT_TEST_DECODE_RELEASE": "new"}


def start_new_release(cluster):
    cluster.env = {**cluster.env, **NEW_RELEASE}
    cluster.start_relay()  # runs the new release too; it must not resurrect the failed runs
    return cluster.start_worker()


def check_failed_at_once(run_ids: list[str], words: list[str]) -> None:
    runs = TaskRun.objects.filter(pk__in=run_ids)
    assert runs.count() == len(run_ids)
    for run in runs:
        assert (run.state, run.attempts, run.lease_until) == (RunState.FAILED, 1, None), run
        assert run.error_type == "taskkit.exceptions.UndecodableCall"
        for word in words:
            assert word in run.error_message, run.error_message
    outcomes = TaskAttempt.objects.filter(run_id__in=run_ids)
    assert outcomes.count() == len(run_ids)  # one attempt each: not retried
    assert set(outcomes.values_list("outcome", flat=True)) == {AttemptOutcome.FAILED}
    assert set(outcomes.values_list("retry_delay", flat=True)) == {None}


def test_deploy_b_signature_changed_with_100_runs_queued(cluster, report):
    """100 runs dispatched as settle_invoice(n, amount); the new release's function is
    settle_invoice(n, amount, currency). Each ends FAILED after one attempt naming 'currency'."""
    assert deploy_decode.RELEASE == "old"
    changed = [deploy_decode.settle_invoice.delay(i, "10.00").id for i in range(100)]
    healthy = cluster.dispatch(50)
    worker = start_new_release(cluster)
    started = time.monotonic()
    row = settle([*changed, *healthy], report, "redis", started)
    # the 100 runs end FAILED by design, without a witness: counted as not succeeded
    assert (row.lost, row.duplicated, row.stuck) == (100, 0, 0), row
    assert_nothing_lost(settle(healthy, Row("healthy", ""), "redis", started))
    check_failed_at_once(
        changed,
        [
            "tests.testapp.deploy_decode.settle_invoice(n, amount, currency)",
            "missing a required argument: 'currency'",
        ],
    )
    assert not Effect.objects.filter(kind="settled").exists()
    assert worker.alive
    row.notes = "new signature: 100 FAILED after 1 attempt each (UndecodableCall), 50 others ok"


def test_deploy_c_model_removed_with_50_runs_queued(cluster, report):
    """50 runs reference deployapp.Invoice rows; the new release no longer installs the model.
    Each ends FAILED after one attempt: "argument 'invoice' …: model 'deployapp.Invoice' is not
    installed (removed by a deploy?)"."""
    invoices = [Invoice.objects.create(number=f"INV-{i}") for i in range(50)]
    referencing = [deploy_decode.archive_invoice.delay(i, inv).id for i, inv in enumerate(invoices)]
    healthy = cluster.dispatch(50)
    worker = start_new_release(cluster)
    started = time.monotonic()
    row = settle([*referencing, *healthy], report, "redis", started)
    assert (row.lost, row.duplicated, row.stuck) == (50, 0, 0), row
    assert_nothing_lost(settle(healthy, Row("healthy", ""), "redis", started))
    check_failed_at_once(
        referencing,
        [
            "argument 'invoice' of tests.testapp.deploy_decode.archive_invoice()",
            "model 'deployapp.Invoice' is not installed (removed by a deploy?)",
        ],
    )
    assert not Effect.objects.filter(kind="archived").exists()
    assert worker.alive
    row.notes = "model gone: 50 FAILED after 1 attempt each (UndecodableCall), 50 others ok"
