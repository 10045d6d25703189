"""A process on SQLite never loads a PostgreSQL driver: importing psycopg costs every worker
child and the main process about 8 MB of RSS (seen in ``make bench``'s RSS table when
``taskkit.core.prepared`` imported it at module level)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import os, sys
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
import django
django.setup()
import taskkit.admin.options, taskkit.core.ledger, taskkit.core.prepared, taskkit.producer.dispatch
import taskkit.relay.sweep, taskkit.task, taskkit.worker.execution, taskkit.worker.results
print(sorted(name for name in sys.modules if name.split(".")[0] in ("psycopg", "psycopg2")))
"""


def test_the_worker_side_on_sqlite_does_not_import_psycopg(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=50, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
