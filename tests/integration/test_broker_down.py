"""A broker that is down at commit time never reaches the caller; the run waits in the ledger."""

import json
import os
import socket
import subprocess
import sys
from contextlib import contextmanager

import pytest
from django.db import connection

from taskkit.models import RunState, TaskRun
from tests.conftest import ROOT
from tests.testapp.models import Order

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


def dispatch_with_broker(redis_url: str, *args: str) -> dict:
    env = dict(
        os.environ,
        REDIS_URL=redis_url,
        TASKKIT_TEST_DATABASE_NAME=str(connection.settings_dict["NAME"]),
    )
    out = subprocess.run(
        [sys.executable, "-m", "tests.integration.dispatcher", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=45,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextmanager
def refused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port  # nothing listens there any more


@contextmanager
def blackholed_port():
    """A port whose accept queue is full, so new connections hang like a dropped SYN."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(server.getsockname())
        fillers.append(c)
    try:
        yield server.getsockname()[1]
    finally:
        for c in fillers:
            c.close()
        server.close()


@pytest.mark.parametrize("broker", [refused_port, blackholed_port])
def test_broker_down_at_commit(broker):
    """The caller gets no exception, returns within 2 s, and the run stays PENDING."""
    with broker() as port:
        out = dispatch_with_broker(f"redis://127.0.0.1:{port}/0", "commit", "down")
    assert out["error"] is None
    assert out["seconds"] < 2.0, out
    run = TaskRun.objects.get(pk=out["run_id"])
    assert run.state == RunState.PENDING and run.queued_at is None
    assert Order.objects.count() == 2  # the caller's data committed
