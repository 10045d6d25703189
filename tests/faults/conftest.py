"""The fault suite's harness: a broker of its own behind a fault-injecting proxy, real worker and
relay subprocesses, a witness table, and a report of lost and duplicated effects per scenario.

Every scenario dispatches ``witness`` runs (atomic: the witness row commits with SUCCEEDED or not
at all), injects a fault, heals it in ``finally``, waits for the drain with a bounded wait, and
records: runs dispatched, terminal, lost (dispatched but not SUCCEEDED with its witness), runs with
duplicated effects (more than one witness row), stuck (not terminal), and seconds to recover.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kombu.pools
import pytest
from django.db import connection
from django.db.models import Count

from devsupport.embedded_redis import EmbeddedRedis
from taskkit.models import TERMINAL_STATES, RunState, TaskRun
from tests.conftest import OUTPUT, ROOT, Worker, wait_for
from tests.faults.proxy import Proxy
from tests.testapp import tasks
from tests.testapp.models import Effect

FAULT_ENV = {"TASKKIT_FAULT_PROFILE": "1"}
RESULTS: list[Row] = []


@dataclass
class Row:
    scenario: str
    broker: str
    dispatched: int = 0
    terminal: int = 0
    lost: int = 0
    duplicated: int = 0
    stuck: int = 0
    recover_seconds: float = 0.0
    notes: str = ""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    lines = [
        "| scenario | broker | dispatched | terminal | lost | duplicated effects | stuck | "
        "seconds to recover |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in RESULTS:
        lines.append(
            f"| {r.scenario} | {r.broker} | {r.dispatched} | {r.terminal} | {r.lost} | "
            f"{r.duplicated} | {r.stuck} | {r.recover_seconds:.1f} |"
        )
    table = "\n".join(lines)
    terminalreporter.write_sep("=", "fault suite")
    terminalreporter.write_line(table)
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / f"faults-{connection.vendor}.md").write_text(table + "\n")


@pytest.fixture(autouse=True)
def fault_profile(settings):  # the test process dispatches with the same profile as the workers
    settings.TASKKIT_RELAY_GRACE_SECONDS = 1
    settings.TASKKIT_REQUEUE_AFTER = 4
    settings.TASKKIT_LEASE_MARGIN_SECONDS = 2
    return settings


class RedisBroker:
    """A redis-server of the scenario's own, so it can be stopped, flushed and restarted."""

    name = "redis"

    def __init__(self) -> None:
        self.server = EmbeddedRedis().start()
        self.port = self.server.port

    def url(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    def stop(self) -> None:
        self.server.stop()

    def restart_empty(self) -> None:
        self.server.stop()
        self.server = EmbeddedRedis(port=self.port).start()

    def flush(self) -> None:
        import redis

        redis.Redis(port=self.port).flushall()

    def close(self) -> None:
        self.server.stop()


class RabbitBroker:
    """A vhost of its own on the machine's RabbitMQ (127.0.0.1:5672)."""

    name = "rabbitmq"

    def __init__(self) -> None:
        self.vhost = f"taskkit-faults-{os.getpid()}-{time.monotonic_ns()}"
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", self.vhost], check=True, timeout=30)
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*"],
            check=True,
            timeout=30,
        )
        self.port = 5672

    def url(self, port: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{port}/{self.vhost}"

    def close(self) -> None:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", self.vhost], timeout=30)


def rabbit_available() -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", 5672)) == 0


def point_app_at(url: str) -> None:
    """Make this process's Celery app publish to ``url`` (the scenario's broker)."""
    app = tasks.witness.app
    with contextlib.suppress(Exception):
        app.pool.force_close_all()
    # kombu keeps producer and connection pools per broker URL in module globals; a closed one
    # would be handed back when the app returns to a URL it used before.
    kombu.pools.reset()
    app.conf.broker_url = url
    app.conf.broker_write_url = None
    app._pool = None
    app.amqp._producer_pool = None
    # The dispatcher of `task-sent` events is cached (and captured by the cached task sender)
    # with the exchange type of the first broker (`celeryev` is fanout on Redis, topic on
    # RabbitMQ): kept, it declares `celeryev` as fanout on RabbitMQ, and every event the
    # worker sends then fails PRECONDITION_FAILED (the worker slows to a few runs a second).
    app.amqp.__dict__.pop("_event_dispatcher", None)
    app.amqp.__dict__.pop("send_task_message", None)


class Cluster:
    """Workers and relays of one scenario, all talking to the broker through the proxy."""

    def __init__(self, broker: RedisBroker | RabbitBroker, name: str) -> None:
        self.broker = broker
        self.proxy = Proxy(broker.port)
        self.url = broker.url(self.proxy.port)
        self.name = name
        self.workers: list[Worker] = []
        self.relays: list[subprocess.Popen[bytes]] = []
        self.env = {**FAULT_ENV, "REDIS_URL": self.url}
        point_app_at(self.url)

    def start_worker(self, concurrency: int = 2) -> Worker:
        worker = Worker(f"{self.name}-{len(self.workers)}", concurrency=concurrency, env=self.env)
        self.workers.append(worker.start())
        return worker

    def start_relay(self) -> subprocess.Popen[bytes]:
        env = dict(
            os.environ, **self.env, TASKKIT_TEST_DATABASE_NAME=str(connection.settings_dict["NAME"])
        )
        log = open(OUTPUT / f"relay-{self.name}-{os.getpid()}.log", "ab")  # noqa: SIM115
        relay = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "django",
                "taskkit_relay",
                "--settings",
                "tests.settings",
                "--interval",
                "0.3",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.relays.append(relay)
        return relay

    def dispatch(self, count: int, **kwargs: object) -> list[str]:
        return [tasks.witness.delay(i, **kwargs).id for i in range(count)]

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        for relay in self.relays:
            if relay.poll() is None:
                relay.terminate()
                try:
                    relay.wait(10)
                except subprocess.TimeoutExpired:
                    relay.kill()
                    relay.wait()
        self.proxy.close()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Iterator[Row]:
    row = Row(scenario=request.node.name, broker="")
    yield row
    RESULTS.append(row)


def _make_cluster(
    broker: RedisBroker | RabbitBroker, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    cluster = Cluster(broker, name=request.node.name.replace("[", "-").rstrip("]")[:40])
    try:
        yield cluster
    finally:
        from django.conf import settings

        point_app_at(settings.REDIS_URL)  # first: later tests must not inherit a dead broker
        try:
            cluster.close()
        finally:
            broker.close()


@pytest.fixture
def cluster(transactional_db: None, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A Redis broker of the scenario's own behind a proxy."""
    yield from _make_cluster(RedisBroker(), request)


@pytest.fixture(params=["redis", "rabbitmq"])
def any_cluster(transactional_db: None, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The scenario once on Redis and once on RabbitMQ."""
    if request.param == "rabbitmq":
        if not rabbit_available():
            pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
        broker: RedisBroker | RabbitBroker = RabbitBroker()
    else:
        broker = RedisBroker()
    yield from _make_cluster(broker, request)


def settle(
    run_ids: list[str], report: Row, broker: str, started: float, timeout: float = 60.0
) -> Row:
    """Wait (bounded) until every run is terminal, then count lost, duplicated and stuck runs."""

    def done() -> bool:
        return TaskRun.objects.filter(pk__in=run_ids, state__in=TERMINAL_STATES).count() == len(
            run_ids
        )

    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.2)
    report.broker = broker
    report.recover_seconds = time.monotonic() - started
    report.dispatched = len(run_ids)
    states = Counter(TaskRun.objects.filter(pk__in=run_ids).values_list("state", flat=True))
    report.terminal = sum(states[s] for s in TERMINAL_STATES)
    report.stuck = report.dispatched - report.terminal
    witnessed = set(
        Effect.objects.filter(kind="witness", run_id__in=run_ids).values_list("run_id", flat=True)
    )
    succeeded = set(
        str(pk)
        for pk in TaskRun.objects.filter(pk__in=run_ids, state=RunState.SUCCEEDED).values_list(
            "pk", flat=True
        )
    )
    report.lost = len([r for r in run_ids if r not in (witnessed & succeeded)])
    report.duplicated = (
        Effect.objects.filter(kind="witness", run_id__in=run_ids)
        .values("run_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    return report


def assert_nothing_lost(report: Row) -> None:
    assert (report.lost, report.duplicated, report.stuck) == (0, 0, 0), report


__all__ = ["Cluster", "Path", "assert_nothing_lost", "settle", "wait_for"]
