"""`make demo` works: web, worker and Flower start, and an order placed on the page runs."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.timeout(150)
def test_demo_smoke_check():
    """demo/run.py --check places an order over HTTP and sees it confirmed by the worker."""
    drop = {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "TASKKIT_TEST_DATABASE_NAME"}
    env = {k: v for k, v in os.environ.items() if k not in drop}  # as on a fresh machine
    out = subprocess.run(
        [sys.executable, "demo/run.py", "--check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "OK"
