"""Fixtures: a real Celery worker subprocess against the test database and the test Redis."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Worker:
    """A ``celery worker`` subprocess in its own process group."""

    def __init__(
        self,
        name: str,
        concurrency: int = 2,
        queues: str = "celery",
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.concurrency = concurrency
        self.queues = queues
        self.extra_env = env or {}
        self.log_path = OUTPUT / f"worker-{name}-{os.getpid()}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Worker:
        OUTPUT.mkdir(exist_ok=True)
        env = dict(os.environ)
        env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
        env["TASKKIT_TEST_DATABASE_NAME"] = str(connection.settings_dict["NAME"])
        env["REDIS_URL"] = settings.REDIS_URL
        env.update(self.extra_env)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        start_offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.celery_app",
                "worker",
                "-P",
                "prefork",
                "-c",
                str(self.concurrency),
                "-E",
                "-n",
                f"{self.name}@%h",
                "-Q",
                self.queues,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "INFO",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                pytest.fail(f"worker exited with {self.process.returncode}; see {self.log_path}")
            with open(self.log_path, "rb") as f:
                f.seek(start_offset)
                return b" ready." in f.read()

        wait_for(ready, timeout, what=f"worker {self.name} to be ready")
        return self

    def children(self) -> list[int]:
        """Pids of the prefork pool's processes."""
        assert self.process is not None
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True
        )
        return [int(p) for p in out.stdout.split()]

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signum)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        else:
            with contextlib.suppress(ProcessLookupError):  # children of a dead worker
                os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()
        self.process = None


@pytest.fixture(scope="session")
def redis_client() -> redis_lib.Redis:
    return redis_lib.Redis.from_url(settings.REDIS_URL)


@pytest.fixture
def clean_broker(redis_client: redis_lib.Redis) -> Iterator[redis_lib.Redis]:
    """Empty the test queues (messages left by earlier tests name runs that no longer exist)."""
    redis_client.delete("celery", "inspect", "unacked", "unacked_index")
    yield redis_client


@pytest.fixture(scope="session")
def session_worker(django_db_setup: None, django_db_blocker: object) -> Iterator[Worker]:
    worker = Worker("w1").start()
    yield worker
    worker.stop()


@pytest.fixture
def worker(session_worker: Worker, transactional_db: None, clean_broker: object) -> Worker:
    """A running worker for a test whose data is committed (``transaction=True``)."""
    if not session_worker.alive:
        session_worker.stop()
        session_worker.start()
    return session_worker
