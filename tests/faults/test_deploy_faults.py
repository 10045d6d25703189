"""Deploys are faults too (issue 9, scenarios a and d): a task renamed under a full ledger, and old
and new workers side by side while it is renamed.

Old and new code are the same module, ``tests.testapp.deploy_rename``, whose task is registered
under ``OLD_NAME`` or ``NEW_NAME`` by ``TASKKIT_TEST_DEPLOY_VERSION`` in each subprocess; the test
process is old code. The grace (``TASKKIT_UNKNOWN_TASK_GRACE_SECONDS``) is a few seconds here.
Expected: every run terminal or still runnable (a renamed run SUCCEEDED by an old worker, with
its witness once, or FAILED with ``TaskNotRegistered`` and no witness), none RUNNING past its
lease, and each relay's heartbeat younger than twice its interval throughout (sampled while the
scenario runs).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from django.db import connection, connections
from django.db.models import Count
from django.utils import timezone

from taskkit.models import RelayHeartbeat, RunState, TaskRun
from tests.conftest import OUTPUT, ROOT
from tests.faults.conftest import Cluster, Row, settle
from tests.testapp import deploy_rename, tasks
from tests.testapp.models import Effect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

NOT_REGISTERED = "taskkit.exceptions.TaskNotRegistered"
RELAY_INTERVAL = 2.0
GRACE_SECONDS = 4


def version_env(cluster: Cluster, version: str) -> dict[str, str]:
    return {
        **cluster.env,
        "TASKKIT_TEST_DEPLOY_VERSION": version,
        "TASKKIT_TEST_UNKNOWN_TASK_GRACE_SECONDS": str(GRACE_SECONDS),
        "TASKKIT_TEST_RELAY_BATCH_SIZE": "100",
    }


def start_relay(cluster: Cluster, version: str) -> subprocess.Popen[bytes]:
    """A relay of the given code version (stopped with the cluster)."""
    env = dict(
        os.environ,
        **version_env(cluster, version),
        TASKKIT_TEST_DATABASE_NAME=str(connection.settings_dict["NAME"]),
    )
    log = open(OUTPUT / f"relay-{cluster.name}-{version}-{os.getpid()}.log", "ab")  # noqa: SIM115
    relay = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django",
            "taskkit_relay",
            "--settings",
            "tests.settings",
            "--interval",
            str(RELAY_INTERVAL),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    cluster.relays.append(relay)
    return relay


def start_worker(cluster: Cluster, version: str) -> None:
    saved = cluster.env
    cluster.env = version_env(cluster, version)
    try:
        cluster.start_worker()
    finally:
        cluster.env = saved


@dataclass
class Watch:
    """Samples, while the scenario runs, the heartbeat age of each relay, its sweeps (distinct
    heartbeats) and the runs RUNNING past their lease (beyond the relay's interval, the time it
    needs to notice)."""

    relays: list[subprocess.Popen[bytes]]
    ages: dict[int, float] = field(default_factory=dict)
    sweeps: dict[int, set[object]] = field(default_factory=dict)
    #: Per relay: when the watch first and last saw it alive (monotonic seconds).
    alive: dict[int, tuple[float, float]] = field(default_factory=dict)
    overdue: int = 0
    samples: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                now = timezone.now()
                for name, last in RelayHeartbeat.objects.values_list("name", "last_sweep_at"):
                    pid = int(name.rsplit(":", 1)[-1])
                    if any(r.pid == pid and r.poll() is None for r in self.relays):
                        age = (now - last).total_seconds()
                        self.ages[pid] = max(self.ages.get(pid, 0.0), age)
                        self.sweeps.setdefault(pid, set()).add(last)
                        seen = time.monotonic()
                        self.alive[pid] = (self.alive.get(pid, (seen, seen))[0], seen)
                late = now - 2 * timezone.timedelta(seconds=RELAY_INTERVAL)
                self.overdue = max(
                    self.overdue,
                    TaskRun.objects.filter(state=RunState.RUNNING, lease_until__lt=late).count(),
                )
                self.samples += 1
                time.sleep(0.1)
        finally:
            connections.close_all()


@contextlib.contextmanager
def watching(relays: list[subprocess.Popen[bytes]]) -> Iterator[Watch]:
    watch = Watch(relays)
    thread = threading.Thread(target=watch.run, daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        watch.stop.set()
        thread.join(10)


def wait_for_heartbeat(relay: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not RelayHeartbeat.objects.filter(name__endswith=f":{relay.pid}").exists():
        assert relay.poll() is None, "the relay exited"
        assert time.monotonic() < deadline, "the relay never swept"
        time.sleep(0.1)


def judge(renamed: list[str], others: list[str], row: Row, watch: Watch) -> dict[str, int]:
    """Count the outcomes; ``row.lost`` counts runs that ended any way but the expected ones."""
    witnesses = dict(
        Effect.objects.filter(kind="witness", run_id__in=renamed + others)
        .values("run_id")
        .annotate(n=Count("id"))
        .values_list("run_id", "n")
    )
    outcome = {"succeeded": 0, "failed_not_registered": 0, "runnable": 0, "wrong": 0}
    for pk, state, error_type in TaskRun.objects.filter(pk__in=renamed).values_list(
        "pk", "state", "error_type"
    ):
        n = witnesses.get(str(pk), 0)
        if state == RunState.SUCCEEDED and n == 1:
            outcome["succeeded"] += 1
        elif state == RunState.FAILED and error_type == NOT_REGISTERED and n == 0:
            outcome["failed_not_registered"] += 1
        elif state in (RunState.PENDING, RunState.QUEUED, RunState.RETRYING) and n == 0:
            outcome["runnable"] += 1
        else:
            outcome["wrong"] += 1
    ok_others = TaskRun.objects.filter(pk__in=others, state=RunState.SUCCEEDED).count()
    others_wrong = len(others) - ok_others + sum(1 for r in others if witnesses.get(r, 0) != 1)
    row.lost = outcome["wrong"] + others_wrong
    row.stuck = outcome["runnable"] + len(others) - ok_others
    worst = max(watch.ages.values(), default=0.0)
    row.notes = (
        f"{outcome['succeeded']} renamed runs SUCCEEDED, {outcome['failed_not_registered']} "
        f"FAILED TaskNotRegistered after a {GRACE_SECONDS}s grace; {ok_others}/{len(others)} "
        f"others SUCCEEDED; worst heartbeat age {worst:.2f}s (interval {RELAY_INTERVAL}s, "
        f"{watch.samples} samples); runs RUNNING past their lease: {watch.overdue}"
    )
    return outcome


def assert_deploy_expectations(row: Row, watch: Watch) -> None:
    print(f"\n{row.scenario}: {row.notes}")
    assert (row.lost, row.duplicated) == (0, 0), row
    assert watch.samples > 10 and watch.ages, row
    # The sweep never hangs (a run of an unknown name taken again and again kept the old relay
    # in one sweep for ever): every relay kept writing heartbeats for as long as it was alive,
    # and no gap came near what a hung sweep gives (the scenario's length). The bounds leave room
    # for a busy machine, where one sweep's writes can wait seconds: 4.4 s was seen at load 3.
    for pid, beats in watch.sweeps.items():
        first, last = watch.alive[pid]
        assert len(beats) >= int((last - first) / (4 * RELAY_INTERVAL)), (pid, last - first, row)
    assert max(watch.ages.values()) < 5 * RELAY_INTERVAL, (watch.ages, row)
    assert watch.overdue == 0, row
    assert not TaskRun.objects.filter(
        state=RunState.RUNNING, lease_until__lt=timezone.now()
    ).exists()


def test_a_deploy_renames_a_task_with_1000_runs_waiting(cluster, report):
    """(a) 1,000 runs of the old name PENDING / QUEUED (messages on the broker) / RETRYING and 2
    RUNNING whose workers the deploy stopped; after the deploy only new code runs (relay and
    worker). The new worker rejects the old name's messages, the relay publishes them by name
    and fails them after the grace, recovers the two leases, and keeps publishing other work."""
    renamed = [r.id for r in deploy_rename.renamed.delay_many([(i,) for i in range(1000)])]
    running = [deploy_rename.renamed.delay(1000 + i).id for i in range(2)]
    ago = timezone.now() - timezone.timedelta(minutes=5)
    TaskRun.objects.filter(pk__in=renamed[:333]).update(
        state=RunState.PENDING, queued_at=None, created_at=ago
    )
    TaskRun.objects.filter(pk__in=renamed[666:]).update(
        state=RunState.RETRYING, attempts=1, queued_at=None, not_before=ago
    )
    TaskRun.objects.filter(pk__in=running).update(
        state=RunState.RUNNING,
        attempts=1,
        started_at=ago,
        first_started_at=ago,
        lease_until=timezone.now(),
        claimed_by="old-worker:1",
    )
    states = dict(
        TaskRun.objects.filter(task_name=deploy_rename.OLD_NAME)
        .values("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    assert states == {"PENDING": 333, "QUEUED": 333, "RETRYING": 334, "RUNNING": 2}, states

    started = time.monotonic()
    relay = start_relay(cluster, "new")
    start_worker(cluster, "new")
    wait_for_heartbeat(relay)
    with watching([relay]) as watch:
        others = cluster.dispatch(50)
        row = settle(renamed + running + others, report, "redis", started, timeout=90)
    outcome = judge(renamed + running, others, row, watch)
    assert outcome["failed_not_registered"] == 1002, row
    assert_deploy_expectations(row, watch)
    assert relay.poll() is None


def test_old_and_new_workers_side_by_side_while_a_task_is_renamed(cluster, report):
    """(d) A rolling deploy: an old worker and relay run; 300 runs of the task are dispatched
    under its old name; a new worker (which knows only the new name) and a new relay start and
    the old relay stops, while the old worker keeps serving. Messages that reach the new worker
    are rejected and published again by the relay; the old worker runs what it gets, once; what
    is left when the grace ends is FAILED. Other work is never held up."""
    old_relay = start_relay(cluster, "old")
    start_worker(cluster, "old")
    wait_for_heartbeat(old_relay)
    started = time.monotonic()
    renamed = [r.id for r in deploy_rename.renamed.delay_many([(i, 0.02) for i in range(300)])]
    others = cluster.dispatch(20)
    new_relay = start_relay(cluster, "new")
    start_worker(cluster, "new")
    wait_for_heartbeat(new_relay)
    with watching([old_relay, new_relay]) as watch:
        old_relay.terminate()
        assert old_relay.wait(20) == 0
        others += cluster.dispatch(20)
        row = settle(renamed + others, report, "redis", started, timeout=90)
    outcome = judge(renamed, others, row, watch)
    assert outcome["succeeded"] + outcome["failed_not_registered"] == 300, row
    assert outcome["succeeded"] > 0, row  # the old worker ran the old name's runs
    assert_deploy_expectations(row, watch)
    assert all(w.alive for w in cluster.workers)


__all__ = ["tasks"]
