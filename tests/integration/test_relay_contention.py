"""Relays, dispatchers and workers at once on one database: no sweep fails on a lock (issue 9,
item 10). On SQLite the subprocesses run WITHOUT ``transaction_mode: IMMEDIATE`` (the test
settings' ``TASKKIT_TEST_SQLITE_DEFERRED`` hook), as a user who never set it; on PostgreSQL the
same load runs as is."""

import json
import os
import subprocess
import sys

import pytest
from django.db import connection

from taskkit.models import RelayHeartbeat, RunState, TaskRun
from tests.conftest import OUTPUT, ROOT, Worker, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

LOAD_SECONDS = 12
ENV = {
    "TASKKIT_TEST_SQLITE_DEFERRED": "1",
    "TASKKIT_FAULT_PROFILE": "1",  # relay grace 1 s
    "TASKKIT_TEST_ETA_MAX_SECONDS": "0.2",  # a 1 s countdown waits in the ledger for a relay
}


def test_relays_never_fail_a_sweep_under_contention(clean_broker, settings):
    settings.TASKKIT_RELAY_GRACE_SECONDS = 1
    env = dict(
        os.environ,
        **ENV,
        DJANGO_SETTINGS_MODULE="tests.settings",
        TASKKIT_TEST_DATABASE_NAME=str(connection.settings_dict["NAME"]),
        REDIS_URL=settings.REDIS_URL,
    )
    OUTPUT.mkdir(exist_ok=True)
    workers = [Worker(f"contention-{i}", env=ENV) for i in range(2)]
    relays: list[subprocess.Popen[bytes]] = []
    logs = [OUTPUT / f"relay-contention-{i}-{os.getpid()}.log" for i in range(2)]
    try:
        for worker in workers:
            worker.start()
        for log in logs:
            log.write_bytes(b"")
            relays.append(
                subprocess.Popen(
                    [sys.executable, "-m", "django", "taskkit_relay", "--interval", "0.1"],
                    cwd=ROOT,
                    env=env,
                    stdout=log.open("ab"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        dispatchers = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.integration.load_dispatcher", str(LOAD_SECONDS), "1"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        outs = [d.communicate(timeout=120) for d in dispatchers]
        assert all(d.returncode == 0 for d in dispatchers), [err[-2000:] for _, err in outs]
        results = [json.loads(out.splitlines()[-1]) for out, _ in outs]
        run_ids = [r for result in results for r in result["run_ids"]]
        dispatch_errors = [e for result in results for e in result["errors"]]
        assert len(run_ids) > 100
        wait_for(
            lambda: (
                TaskRun.objects.filter(pk__in=run_ids, state=RunState.SUCCEEDED).count()
                == len(run_ids)
            ),
            120,
            interval=0.5,
            what="every run to succeed",
        )
        assert RelayHeartbeat.objects.count() == 2
        sweeps = list(RelayHeartbeat.objects.values_list("sweeps", flat=True))
    finally:
        for relay in relays:
            relay.terminate()
            relay.wait(20)
        for worker in workers:
            worker.stop()
    failed = [log.read_text().count("sweep failed") for log in logs]
    busy = [log.read_text().count("could not take a batch") for log in logs]
    print(
        f"\n{connection.vendor}: {len(run_ids)} runs, sweeps per relay {sweeps}, failed sweeps "
        f"{failed}, takes refused {busy}, dispatch errors {len(dispatch_errors)}"
    )
    assert failed == [0, 0], [log.read_text()[-3000:] for log in logs]
    assert busy == [0, 0], [log.read_text()[-3000:] for log in logs]  # none waited out
    assert min(sweeps) >= 20, sweeps
    # every run waited in the ledger: the relays published them all
    assert not TaskRun.objects.filter(pk__in=run_ids, publish_count=0).exists()
    assert dispatch_errors == []
