"""Scenarios where a process other than the broker fails: a time limit, the database, the
dispatching process, concurrent and duplicate dispatch, a deleted argument, and a long soak.

Numbered as in issue #3. Each scenario has its own Redis (the ``cluster`` fixture), heals its fault
in ``finally``, waits on conditions (bounded) and records its counts with ``settle``.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.db import connection

from taskkit.models import TERMINAL_STATES, RunState, TaskRun
from tests.conftest import ROOT, wait_for
from tests.faults.conftest import Cluster, Row, assert_nothing_lost, settle
from tests.testapp import tasks
from tests.testapp.models import Effect, Order

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="needs PostgreSQL: the fault is a PostgreSQL backend terminated or refused",
)

#: Runs in the soak (scenario 20) and its bound in seconds. ``make test-faults`` runs the issue's
#: 5000; the default suite runs fewer, as 5000 do not drain within 3 minutes on a 2-core machine.
SOAK_RUNS = int(os.environ.get("TASKKIT_SOAK_RUNS", "300"))
SOAK_SECONDS = float(os.environ.get("TASKKIT_SOAK_SECONDS", "170"))
#: Whole-worker SIGKILLs in the soak, spread evenly over its runs (one per 100 runs, 5 to 20).
SOAK_KILLS = int(os.environ.get("TASKKIT_SOAK_KILLS", str(min(20, max(5, SOAK_RUNS // 100)))))


def outcomes(run_id: str) -> list[str]:
    return list(
        TaskRun.objects.get(pk=run_id)
        .attempt_log.order_by("number")
        .values_list("outcome", flat=True)
    )


def subprocess_env(cluster: Cluster) -> dict[str, str]:
    return dict(
        os.environ,
        **cluster.env,
        TASKKIT_TEST_DATABASE_NAME=str(connection.settings_dict["NAME"]),
    )


def broker_client(cluster: Cluster) -> redis.Redis:
    """A client of the scenario's Redis itself (not through the proxy)."""
    return redis.Redis(port=cluster.broker.port)


@contextlib.contextmanager
def admin_connection() -> Iterator[Any]:
    """An autocommit connection to the server's ``postgres`` database, for fault injection."""
    import psycopg

    s = connection.settings_dict
    conn = psycopg.connect(
        host=s["HOST"] or None,
        port=s["PORT"] or None,
        user=s["USER"] or None,
        password=s["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )
    try:
        yield conn
    finally:
        conn.close()


def own_backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def test_06_hard_time_limit_exceeded(cluster, report):
    """An attempt that hangs past its hard time limit (after writing its effect) is killed,
    recorded TIMED_OUT by the worker's main process, and retried; its effect lands once."""
    worker = cluster.start_worker()
    started = time.monotonic()
    hung = tasks.witness_hangs_first.delay(0).id
    others = cluster.dispatch(10)
    row = settle([hung, *others], report, "redis", started)
    assert_nothing_lost(row)
    assert outcomes(hung) == ["TIMED_OUT", "SUCCEEDED"]
    assert worker.alive
    row.notes = "first attempt TIMED_OUT after time_limit=2s, retried"


@postgres_only
def test_12_worker_database_connection_terminated_mid_task(cluster, report):
    """The PostgreSQL backend of a worker child is terminated while the child sleeps inside an
    atomic body: the attempt's writes roll back with the backend, the attempt is recorded, the
    run is retried once and its effect lands once; the worker keeps serving."""
    app_name = f"taskkit-faults-{os.getpid()}"
    cluster.env = {**cluster.env, "PGAPPNAME": app_name}  # libpq names the worker's connections
    worker = cluster.start_worker()
    cluster.start_relay()  # in case the attempt could not be recorded: its lease expires
    db_name = str(connection.settings_dict["NAME"])
    slow = cluster.dispatch(1, sleep=3.0)[0]
    with admin_connection() as admin:

        def victim() -> int | None:
            row = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s "
                "AND state = 'idle in transaction' AND now() - state_change > interval '0.3 s'",
                (db_name, app_name),
            ).fetchall()
            return row[0][0] if len(row) == 1 else None

        pid = wait_for(victim, 20, what="the worker's backend to sleep in the atomic body")
        assert TaskRun.objects.get(pk=slow).state == RunState.RUNNING
        started = time.monotonic()
        (terminated,) = admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
        assert terminated
    others = cluster.dispatch(10)
    row = settle([slow, *others], report, "redis", started)
    assert_nothing_lost(row)
    log = outcomes(slow)
    assert log[-1] == "SUCCEEDED" and len(log) == 2, log
    first = TaskRun.objects.get(pk=slow).attempt_log.get(number=1)
    row.notes = f"attempt 1 {first.outcome} ({first.error_type.rsplit('.', 1)[-1]}), retried"
    assert worker.alive


@postgres_only
def test_13_database_unavailable_under_load(cluster, report):
    """PostgreSQL refuses connections to the test database and every backend of it is terminated
    for 4 s mid-drain; then it comes back. Worker and relay survive and every run completes once."""
    worker = cluster.start_worker()
    relay = cluster.start_relay()
    db_name = str(connection.settings_dict["NAME"])
    mine = own_backend_pid()
    run_ids = cluster.dispatch(400, sleep=0.01)
    wait_for(
        lambda: TaskRun.objects.filter(pk__in=run_ids, state=RunState.SUCCEEDED).count() >= 40,
        60,
        what="the drain to be under way",
    )
    started = time.monotonic()
    terminated = 0
    quoted = connection.ops.quote_name(db_name)
    with admin_connection() as admin:
        try:
            admin.execute(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS false")
            outage_ends = time.monotonic() + 4.0
            while time.monotonic() < outage_ends:
                terminated += sum(
                    1
                    for (ok,) in admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> %s",
                        (db_name, mine),
                    ).fetchall()
                    if ok
                )
                time.sleep(0.2)
        finally:
            admin.execute(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS true")
    row = settle(run_ids, report, "redis", started)
    row.notes = f"{terminated} backends terminated during a 4 s outage"
    assert_nothing_lost(row)
    assert terminated > 0
    assert worker.alive and relay.poll() is None


def test_14_dispatcher_killed_between_commit_and_publish(cluster, report):
    """A process that commits 20 dispatches and is SIGKILLed before its on-commit publish: the
    runs are QUEUED (written published-unless-proven-otherwise, with a deadline) with no
    message; the relay publishes them at their deadline, the grace period after dispatch."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.faults.dispatcher", "die-after-commit", "20"],
        cwd=ROOT,
        env=subprocess_env(cluster),
        capture_output=True,
        text=True,
        timeout=60,
    )
    started = time.monotonic()
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_ids = json.loads(proc.stdout.splitlines()[0])["run_ids"]
    assert len(run_ids) == 20
    runs = TaskRun.objects.filter(pk__in=run_ids)
    assert set(runs.values_list("state", flat=True)) == {RunState.QUEUED}
    assert all(run.requeue_at <= run.created_at + datetime.timedelta(seconds=2) for run in runs)
    assert broker_client(cluster).llen("celery") == 0  # nothing was published
    cluster.start_worker()
    cluster.start_relay()
    assert_nothing_lost(settle(run_ids, report, "redis", started))
    report.notes = "20 committed runs left PENDING, published by the relay"


PROCESSES = 16


def test_15_one_key_dispatched_by_16_processes_at_once(cluster, report, tmp_path):
    """16 processes released together dispatch one idempotency key: one run, one effect, every
    caller gets the same id, nobody sees an IntegrityError, every caller's transaction commits."""
    cluster.start_worker()
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.faults.dispatcher", "key", "faults-15", str(go)],
            cwd=ROOT,
            env=subprocess_env(cluster),
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
        started = time.monotonic()
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
                p.wait()
    assert [o["error"] for o in outs] == [None] * PROCESSES
    run_ids = {o["run_id"] for o in outs}
    assert len(run_ids) == 1
    assert sum(o["created"] for o in outs) == 1
    assert Order.objects.count() == 2 * PROCESSES
    assert TaskRun.objects.filter(task_name=tasks.witness.name).count() == 1
    row = settle(sorted(run_ids), report, "redis", started)
    assert_nothing_lost(row)
    assert outcomes(next(iter(run_ids))) == ["SUCCEEDED"]
    row.notes = f"{PROCESSES} callers, 1 run, 1 created"


def test_16_byte_identical_message_redelivered_mid_attempt(cluster, report):
    """The exact bytes of a run's message pushed again while its attempt runs: the duplicate
    loses the claim, is acknowledged and logged; one attempt, one effect."""
    broker = broker_client(cluster)
    run_id = cluster.dispatch(1, sleep=3.0)[0]
    wait_for(lambda: broker.llen("celery") == 1, 10, what="the message to be queued")
    (raw,) = broker.lrange("celery", 0, -1)
    assert run_id.encode() in raw
    worker = cluster.start_worker()
    wait_for(
        lambda: TaskRun.objects.filter(pk=run_id, state=RunState.RUNNING).exists(),
        20,
        what="the first attempt to start",
    )
    started = time.monotonic()
    broker.lpush("celery", raw)
    skipped = re.compile(rf"skipped a message for run {run_id} of \S+: the run is (\w+) ")
    match = wait_for(
        lambda: skipped.search(worker.log()),
        20,
        what="the duplicate to be skipped and logged",
    )
    assert isinstance(match, re.Match)
    state_at_skip = match.group(1)  # the state the worker saw, not the state now
    if connection.vendor == "postgresql":
        assert state_at_skip == RunState.RUNNING  # skipped while the first attempt still ran
    # on SQLite the duplicate's claim waits for the write lock the sleeping atomic attempt
    # holds, so it loses the claim only once attempt 1 has committed
    row = settle([run_id], report, "redis", started)
    assert_nothing_lost(row)
    assert outcomes(run_id) == ["SUCCEEDED"]
    assert worker.alive
    row.notes = f"duplicate skipped (run {state_at_skip} at the skip)"


def test_19_referenced_object_deleted_between_commit_and_run(cluster, report):
    """Model arguments deleted after commit, before the run: on_missing="fail" ends FAILED,
    "discard" ends DISCARDED, "retry" ends FAILED after its stop; no loop, the worker serves on."""
    orders = [Order.objects.create(reference=f"doomed-{i}") for i in range(3)]
    missing = {
        "fail": tasks.touch_order.delay(orders[0]).id,
        "discard": tasks.touch_order_discard.delay(orders[1]).id,
        "retry": tasks.touch_order_retry.delay(orders[2]).id,
    }
    healthy = cluster.dispatch(10)
    Order.objects.filter(pk__in=[o.pk for o in orders]).delete()
    worker = cluster.start_worker()
    started = time.monotonic()
    row = settle([*missing.values(), *healthy], report, "redis", started)
    runs = {policy: TaskRun.objects.get(pk=pk) for policy, pk in missing.items()}
    assert (runs["fail"].state, outcomes(missing["fail"])) == (RunState.FAILED, ["MISSING"])
    assert (runs["discard"].state, outcomes(missing["discard"])) == (
        RunState.DISCARDED,
        ["MISSING"],
    )
    assert (runs["retry"].state, outcomes(missing["retry"])) == (RunState.FAILED, ["MISSING"] * 3)
    assert not Effect.objects.filter(kind="touch").exists()
    # the three runs whose object is gone end FAILED/DISCARDED by design, without a witness
    assert (row.lost, row.duplicated, row.stuck) == (3, 0, 0), row
    assert_nothing_lost(settle(healthy, Row("healthy", ""), "redis", started))
    assert worker.alive
    row.notes = "missing object: FAILED / DISCARDED / FAILED after 3 attempts (by policy)"


@pytest.mark.timeout(SOAK_SECONDS + 120)
def test_20_soak_with_worker_sigkilled_every_few_seconds(cluster, report, tmp_path):
    """SOAK_RUNS witness runs while the whole worker is SIGKILLed SOAK_KILLS times and restarted,
    with a relay running: every run completes, each effect once.

    The kills are made to happen, whatever the machine's speed: the queue holds SOAK_KILLS gate
    runs (``soak_gate``) spread evenly among the witness runs, each of which waits, mid-attempt,
    until the test releases it. Kill ``i`` comes once the current worker has drained its way to
    gate ``i`` and is running it (progress, not time); gate ``i`` is released only after the
    kill, so the relay recovers the killed attempt (LOST) and a later worker completes it. Runs
    the killed worker held or had prefetched are recovered as well.
    """
    chunk = SOAK_RUNS // (SOAK_KILLS + 1)
    assert chunk >= 1, f"TASKKIT_SOAK_RUNS={SOAK_RUNS} is too few for {SOAK_KILLS} kills"
    started = time.monotonic()
    run_ids: list[str] = []
    gates: list[str] = []
    for i in range(SOAK_KILLS + 1):
        size = chunk if i < SOAK_KILLS else SOAK_RUNS - len(run_ids)
        run_ids += [tasks.witness.delay(len(run_ids) + n).id for n in range(size)]
        if i < SOAK_KILLS:
            gates.append(tasks.soak_gate.delay(i, str(tmp_path / f"release-{i}")).id)
    dispatched = time.monotonic() - started
    worker = cluster.start_worker()
    cluster.start_relay()
    deadline = started + SOAK_SECONDS
    kills = 0
    for i, gate in enumerate(gates):
        name = worker.name

        def gate_running_here(gate: str = gate, name: str = name) -> bool:
            return TaskRun.objects.filter(
                pk=gate, state=RunState.RUNNING, claimed_by__startswith=f"{name}@"
            ).exists()

        wait_for(
            gate_running_here,
            max(1.0, deadline - time.monotonic()),
            interval=0.1,
            what=f"worker {name} to drain its way to gate {i} and run it",
        )
        worker.signal(signal.SIGKILL)  # the gate's attempt cannot end before its release
        worker.stop()
        kills += 1
        (tmp_path / f"release-{i}").touch()
        worker = cluster.start_worker()
    row = settle(run_ids, report, "redis", started, timeout=max(1.0, deadline - time.monotonic()))
    wait_for(
        lambda: (
            TaskRun.objects.filter(pk__in=gates, state__in=TERMINAL_STATES).count() == len(gates)
        ),
        max(1.0, deadline - time.monotonic()),
        what="the gate runs to end",
    )
    row.notes = (
        f"{kills} whole-worker SIGKILLs, each with an attempt in flight; dispatch "
        f"{dispatched:.0f} s, {row.recover_seconds:.0f} s in all for {SOAK_RUNS} runs"
    )
    print(row.notes)
    assert kills == SOAK_KILLS
    assert_nothing_lost(row)
    for gate in gates:  # each kill hit the gate's attempt: recovered by the relay, then done
        log = outcomes(gate)
        assert "LOST" in log and log[-1] == "SUCCEEDED", (gate, log)
