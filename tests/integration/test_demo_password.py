"""The demo's admin password: made once, kept, shown again at every start, and reset on demand.

Each step runs as the demo runs it, in its own process (``demo/run.py``'s ``prepare_database``,
``manage.py demo_password``), on a temporary SQLite database and ``DEMO_VAR_DIR``.
"""

import os
import stat
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.integration.test_demo_terminal import demo_env

pytestmark = pytest.mark.timeout(180)

PREPARE = "import run; print('password=' + str(run.prepare_database(verbosity=0)))"
CHECK = (
    "import os, sys, django; sys.path.insert(0, '.'); "
    "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'demoproject.settings'); django.setup(); "
    "from django.contrib.auth import get_user_model; "
    "print(get_user_model().objects.get(username='admin').check_password(sys.argv[1]))"
)


def _run(env, *args) -> str:
    out = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT / "demo",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def _prepared(env) -> str:
    line = [x for x in _run(env, "-c", PREPARE).splitlines() if x.startswith("password=")][-1]
    return line.removeprefix("password=")


def test_the_password_is_kept_across_restarts_and_reset_on_demand(tmp_path):
    """First start makes a password; the next start shows the same; demo_password sets a new
    one that the next start shows; each is the admin's real password."""
    env = demo_env(tmp_path)
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    first = _prepared(env)
    assert first and first != "None"
    saved = tmp_path / "var" / "admin-password"
    assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600
    assert _prepared(env) == first  # a restart shows it again
    assert _run(env, "-c", CHECK, first).strip() == "True"

    out = _run(env, "manage.py", "demo_password")
    new = out.split("admin password: ")[1].split()[0]
    assert new != first
    assert _prepared(env) == new
    assert _run(env, "-c", CHECK, new).strip() == "True"
    assert _run(env, "-c", CHECK, first).strip() == "False"

    _run(env, "manage.py", "demo_password", "--password", "chosen-one")
    assert _prepared(env) == "chosen-one"


def test_an_unknown_password_says_how_to_set_one(tmp_path):
    """A database whose password was never saved (an older demo): the banner says how to reset."""
    env = demo_env(tmp_path)
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    _prepared(env)
    (tmp_path / "var" / "admin-password").unlink()
    assert _prepared(env) == "None"
    banner = _run(
        env,
        "-c",
        "import os, run; os.environ.update(FLOWER_USER='admin', FLOWER_PASSWORD='x', "
        "REDIS_URL='redis://r'); print(run.banner(8000, 5555, None))",
    )
    assert "make demo-password" in banner
