"""The running demo's state: one file that every demo process reads to find the demo.

``make demo`` (``demo/run.py``) starts one Redis and writes its URL, the database URL and the
ports to ``demo/var/demo.json`` (``DEMO_VAR_DIR`` moves ``demo/var``); it removes the file when
it stops. The settings of every other demo process (``manage.py demo_traffic`` from a second
terminal, ``manage.py shell``) read it, so they talk to the demo's one Redis and database instead
of a private one. ``require_running`` refuses, saying how to start it, when no demo runs.

The admin's password is kept in ``demo/var/admin-password`` (readable by its owner only), so the
banner shows it again after a restart; ``make demo-password`` sets a new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

DEMO = Path(__file__).resolve().parent.parent

#: The broker URL of a demo process started while no demo runs: a refused port, so a dispatch
#: fails fast and stays in the ledger instead of going to a private Redis nobody consumes.
NOT_RUNNING_REDIS_URL = "redis://127.0.0.1:9/0"


class DemoNotRunning(Exception):
    """Raised by ``require_running``; its message says how to start the demo."""


def var_dir() -> Path:
    return Path(os.environ.get("DEMO_VAR_DIR") or DEMO / "var")


def state_path() -> Path:
    return var_dir() / "demo.json"


def password_path() -> Path:
    return var_dir() / "admin-password"


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write(values: dict[str, Any]) -> None:
    """Record the running demo (this process) and what it started."""
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), **values}, indent=2))
    tmp.replace(path)


def read() -> dict[str, Any] | None:
    """The running demo's state, or ``None`` (no file, or its process is gone)."""
    try:
        values = json.loads(state_path().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(values, dict) or not _alive(values.get("pid")):
        return None
    return values


def clear() -> None:
    """Remove the state file if this process wrote it."""
    values = None
    with contextlib.suppress(OSError, ValueError):
        values = json.loads(state_path().read_text())
    if isinstance(values, dict) and values.get("pid") == os.getpid():
        with contextlib.suppress(OSError):
            state_path().unlink()


def require_running() -> dict[str, Any]:
    """The running demo's state; ``DemoNotRunning`` (saying how to start it) if there is none."""
    values = read()
    if values is None and not os.environ.get("REDIS_URL"):
        raise DemoNotRunning(
            f"the demo is not running (no live {state_path()}): start it with `make demo` in "
            "another terminal and run this command again once its banner shows "
            "(or set REDIS_URL and DATABASE_URL to the ones your demo uses)."
        )
    return values or {}


def saved_password() -> str | None:
    try:
        return password_path().read_text().strip() or None
    except OSError:
        return None


def save_password(password: str) -> None:
    path = password_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    os.chmod(path, 0o600)


def new_password() -> str:
    return secrets.token_urlsafe(12)
