"""One idempotency key dispatched by many processes at once makes one run (inv. 4)."""

import glob
import json
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.db import connection

from taskkit.models import RunState, TaskRun
from tests.conftest import ROOT, wait_for
from tests.integration.test_execution import finished
from tests.testapp import tasks
from tests.testapp.models import Effect, Order

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

PROCESSES = 8


def test_concurrent_dispatch_of_one_key(worker, tmp_path):
    """8 processes released together: one run, one execution, the same id for every caller,
    no IntegrityError, and every caller's transaction committed its own rows."""
    go = tmp_path / "go"
    env = dict(
        os.environ,
        REDIS_URL=settings.REDIS_URL,
        TASKKIT_TEST_DATABASE_NAME=str(connection.settings_dict["NAME"]),
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration.dispatcher", "key", "order-1", str(go)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    try:
        wait_for(
            lambda: len(glob.glob(f"{go}.ready.*")) == PROCESSES,
            60,
            what="all dispatchers to be ready",
        )
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
    assert [o["error"] for o in outs] == [None] * PROCESSES
    assert len({o["run_id"] for o in outs}) == 1
    assert sum(o["created"] for o in outs) == 1
    assert Order.objects.count() == 2 * PROCESSES
    assert TaskRun.objects.count() == 1
    run = finished(outs[0]["run_id"])
    assert run.state == RunState.SUCCEEDED and run.attempts == 1
    assert Effect.objects.filter(kind="charge").count() == 1
    assert Effect.objects.get().payload["key"] == "order-1"


def test_sequential_dispatch_runs_once(worker):
    """The same key dispatched again after the run finished runs nothing new."""
    first = tasks.charge.delay(7, "1.00")
    finished(first.id)
    again = tasks.charge.delay(7, "2.00")
    assert again.id == first.id and not again.created
    assert Effect.objects.filter(kind="charge").count() == 1
    assert Effect.objects.get().payload["key"] == "charge:7"
