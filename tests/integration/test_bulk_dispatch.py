"""``delay_many``: one INSERT, one publish batch after commit, ``.delay()``'s guarantees."""

import glob
import json
import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from taskkit import PayloadTooLarge, UnsafeArgument, UnsupportedOption
from taskkit.models import RunState, TaskRun
from tests.conftest import ROOT, wait_for
from tests.integration.test_broker_down import refused_port
from tests.integration.test_dispatch import queued
from tests.integration.test_execution import finished
from tests.testapp import tasks
from tests.testapp.models import Effect, Order

pytestmark = pytest.mark.django_db(transaction=True)


def test_rollback_leaves_no_runs_and_publishes_nothing(clean_broker):
    """A bulk dispatch in a transaction that rolls back leaves no rows and no messages."""
    with pytest.raises(RuntimeError), transaction.atomic():
        results = tasks.parked.delay_many([("a",), ("b",)])
        assert TaskRun.objects.filter(pk__in=[r.id for r in results]).count() == 2
        raise RuntimeError("roll back")
    assert not TaskRun.objects.exists()
    assert queued(clean_broker) == []


def test_commit_inserts_once_and_publishes_after_commit_in_order(clean_broker):
    """One INSERT for the batch; messages go out on commit, in input order; runs become QUEUED."""
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        results = tasks.parked.delay_many([("a",), ["b", 2], (("c",), {"note": "x"})])
        assert queued(clean_broker) == []
    inserts = [q for q in queries if q["sql"].startswith('INSERT INTO "taskkit_taskrun"')]
    assert len(inserts) == 1
    assert [r.created for r in results] == [True, True, True]
    messages = queued(clean_broker)
    assert [m["headers"]["id"] for m in messages] == [r.id for r in results]
    assert all(m["headers"]["taskkit_run"] == "1" for m in messages)
    runs = {str(r.pk): r for r in TaskRun.objects.all()}
    assert [runs[r.id].args for r in results] == [["a"], ["b", 2], ["c"]]
    assert runs[results[2].id].kwargs == {"note": "x"}
    assert {r.state for r in runs.values()} == {RunState.QUEUED}
    assert {r.queue for r in runs.values()} == {"inspect"}
    assert runs[results[0].id].options == {"queue": "inspect"}


def test_keys_collapse_within_the_batch_and_match_existing_runs(clean_broker):
    """A key already in the ledger hands back its run; repeated keys in a batch share one run."""
    earlier = tasks.parked_charge.delay(1, "1.00")
    clean_broker.delete("inspect")
    with transaction.atomic():
        results = tasks.parked_charge.delay_many([(1, "2.00"), (2, "2.00"), (2, "3.00"), (3, "1")])
        Order.objects.create(reference="after")  # the caller's transaction is still usable
    assert [r.created for r in results] == [False, True, False, True]
    assert results[0].id == earlier.id
    assert results[1].id == results[2].id
    assert TaskRun.objects.count() == 3
    assert TaskRun.objects.get(pk=results[1].id).args == [2, "2.00"]
    assert sorted(m["headers"]["id"] for m in queued(clean_broker)) == sorted(
        [results[1].id, results[3].id]
    )
    assert Order.objects.count() == 1


def test_a_refused_item_names_its_index_and_argument_and_writes_nothing(clean_broker, settings):
    """Every call is checked before anything is written; the error says which item and why."""
    order = Order(reference="unsaved")
    with pytest.raises(UnsafeArgument, match=r"item #2: .*'order'"):
        tasks.touch_order.delay_many([(Order.objects.create(reference="ok"),)] * 2 + [(order,)])
    with pytest.raises(TypeError, match=r"item #1 is int"):
        tasks.parked.delay_many([("a",), 5])
    with pytest.raises(TypeError, match=r"item #0: .*kind"):
        tasks.parked.delay_many([((), {})])
    settings.TASKKIT_MAX_PAYLOAD_BYTES = 100
    with pytest.raises(PayloadTooLarge, match="item #1: "):
        tasks.parked.delay_many([("small",), ("x" * 200,)])
    with pytest.raises(UnsupportedOption, match="idempotency_key"):
        tasks.parked.delay_many([("a",)], idempotency_key="k")
    with pytest.raises(UnsupportedOption, match="link"):
        tasks.parked.delay_many([("a",)], link=object())
    assert not TaskRun.objects.exists()
    assert queued(clean_broker) == []


@pytest.mark.timeout(120)
def test_concurrent_bulk_dispatches_of_overlapping_keys_run_each_once(worker, tmp_path):
    """Two processes bulk-dispatch overlapping keys while a worker drains: one run per key, each
    executed once, every caller handed the same ids."""
    go = tmp_path / "go"
    env = dict(
        os.environ,
        REDIS_URL=django_settings.REDIS_URL,
        TASKKIT_TEST_DATABASE_NAME=str(connection.settings_dict["NAME"]),
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.bulk_dispatcher", first, "30", str(go)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for first in ("0", "10")
    ]
    try:
        wait_for(lambda: len(glob.glob(f"{go}.ready.*")) == 2, 60, what="dispatchers ready")
        go.touch()
        outs = []
        for p in procs:
            stdout, stderr = p.communicate(timeout=60)
            assert p.returncode == 0, stderr
            outs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [o["error"] for o in outs] == [None, None]
    assert outs[0]["ids"][10:] == outs[1]["ids"][:20]  # keys 10..29: the same runs
    assert sum(outs[0]["created"][10:]) + sum(outs[1]["created"][:20]) == 20
    assert TaskRun.objects.count() == 40
    for run_id in set(outs[0]["ids"]) | set(outs[1]["ids"]):
        assert finished(run_id).state == RunState.SUCCEEDED
    keys = list(Effect.objects.filter(kind="charge").values_list("payload__key", flat=True))
    assert sorted(keys) == sorted(f"charge:{i}" for i in range(40))


@pytest.mark.timeout(60)
def test_a_broker_down_at_commit_leaves_the_batch_pending_without_raising():
    """With the broker refusing connections, the caller gets its results quickly and no error;
    every run stays PENDING for the relay."""
    with refused_port() as port:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.integration.bulk_dispatcher", "0", "50", "-"],
            cwd=ROOT,
            env=dict(
                os.environ,
                REDIS_URL=f"redis://127.0.0.1:{port}/0",
                TASKKIT_TEST_DATABASE_NAME=str(connection.settings_dict["NAME"]),
            ),
            capture_output=True,
            text=True,
            timeout=45,
        )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["error"] is None
    assert out["seconds"] < 5, out
    assert "could not publish 50 of 50 runs" in proc.stderr
    assert TaskRun.objects.filter(state=RunState.PENDING).count() == 50
