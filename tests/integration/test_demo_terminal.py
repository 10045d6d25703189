"""The demo as a user drives it from two terminals: ``make demo`` in one (a real pseudo-terminal,
so Ctrl-C is the terminal's), ``manage.py demo_traffic`` in another.

The second terminal's orders reach the demo's one Redis (found through ``demo/var/demo.json``,
here a temporary ``DEMO_VAR_DIR``) and are worked at once; ``--failure-rate 0.2`` makes about a
fifth of them fail for good; Ctrl-C ends ``make demo`` with exit status 0, no error from make,
and every process it started stopped.
"""

import contextlib
import os
import pty
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.timeout(300)

DROP = {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "TASKKIT_TEST_DATABASE_NAME"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_env(tmp_path: Path) -> dict[str, str]:
    """A fresh machine's environment, the demo's files in ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if k not in DROP}
    env.update(
        DEMO_VAR_DIR=str(tmp_path / "var"),
        DEMO_MAIL_DIR=str(tmp_path / "mail"),
        PYTHONUNBUFFERED="1",
    )
    return env


def processes_with(needle: str) -> list[int]:
    """Live processes whose environment holds ``needle`` (``NAME=value``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle.encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


class Terminal:
    """``make demo`` in a pseudo-terminal: its output read in a thread, Ctrl-C typed into it."""

    def __init__(self, env: dict[str, str]) -> None:
        stamp = f"{os.environ.get('VENV', '.venv')}/.installed-"
        # make leads a new session whose controlling terminal is the pty (util-linux's setsid
        # --ctty, then exec: the same pid), started without forking this multi-threaded process
        # by hand (pty.fork() warns about that from Python 3.12).
        self.fd, tty = pty.openpty()
        self.process = subprocess.Popen(
            ["setsid", "--ctty", "make", "-o", stamp, "demo"],
            cwd=ROOT,
            env=env,
            stdin=tty,
            stdout=tty,
            stderr=tty,
        )
        os.close(tty)
        self.pid = self.process.pid
        self.output = b""
        self.status: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 4096)
            except OSError:
                return
            if not data:
                return
            self.output += data

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def ctrl_c(self) -> None:
        os.write(self.fd, b"\x03")

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.status = self.process.returncode
                return self.status
            time.sleep(0.1)
        return None

    def kill(self) -> None:
        if self.status is None:
            with contextlib.suppress(OSError):
                os.killpg(self.pid, signal.SIGKILL)
            self.wait(10)
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except Exception:
        return False


def _charge_states(db: Path, task: str = "shop.tasks.charge_order") -> dict[str, int]:
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
            rows = conn.execute(
                "SELECT state, count(*) FROM taskkit_taskrun WHERE task_name = ? GROUP BY state",
                (task,),
            ).fetchall()
    except sqlite3.Error:
        return {}
    return dict(rows)


def test_two_terminals_a_visible_failure_rate_and_a_clean_ctrl_c(tmp_path):
    """Orders placed from a second terminal run on the demo's Redis, about 20% fail for good,
    and Ctrl-C ends `make demo` with status 0 and nothing left running."""
    env = demo_env(tmp_path)
    db = tmp_path / "db.sqlite3"
    web, flower = free_port(), free_port()
    env.update(PORT=str(web), FLOWER_PORT=str(flower), DATABASE_URL=f"sqlite:///{db}")
    needle = f"DEMO_VAR_DIR={env['DEMO_VAR_DIR']}"
    terminal = Terminal(env)
    try:
        wait_for(lambda: _up(f"http://127.0.0.1:{web}/"), 120, 0.5, "the demo's web page")
        assert (tmp_path / "var" / "demo.json").exists()

        # the second terminal: no REDIS_URL, no DATABASE_URL, only where the demo keeps its state
        second = {k: v for k, v in env.items() if k not in {"DATABASE_URL", "PORT"}}
        out = subprocess.run(
            [
                sys.executable,
                "manage.py",
                "demo_traffic",
                "--orders",
                "40",
                "--failure-rate",
                "0.2",
                "--export",
                "1",
            ],
            cwd=ROOT / "demo",
            env=second,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        wait_for(
            lambda: sum(_charge_states(db).get(s, 0) for s in ("SUCCEEDED", "FAILED")) == 40,
            150,
            0.5,
            f"the 40 charges to end (now {_charge_states(db)})",
        )
        failed = _charge_states(db).get("FAILED", 0)
        assert 4 <= failed <= 16, f"{failed} of 40 failed with --failure-rate 0.2"
        wait_for(
            lambda: _charge_states(db, "shop.tasks.export_orders") == {"SUCCEEDED": 1},
            60,
            0.5,
            "the slow export run (--export 1) to succeed",
        )

        terminal.ctrl_c()
        status = terminal.wait(90)
        assert status == 0, terminal.text()[-3000:]
        text = terminal.text()
        assert not re.search(r"make: \*\*\*|Error \d+|Interrupt", text), text[-3000:]
        assert "every process has ended" in text
        wait_for(lambda: not processes_with(needle), 20, 0.2, "every demo process to end")
        assert not (tmp_path / "var" / "demo.json").exists()
    finally:
        terminal.kill()
        for pid in processes_with(needle):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def test_demo_traffic_refuses_when_no_demo_runs(tmp_path):
    """Without a running demo, demo_traffic publishes nothing and says how to start one."""
    out = subprocess.run(
        [sys.executable, "manage.py", "demo_traffic", "--orders", "1"],
        cwd=ROOT / "demo",
        env=demo_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "the demo is not running" in out.stderr and "make demo" in out.stderr
