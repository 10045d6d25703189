"""A task renamed by a deploy, for the deploy tests: the code version is the environment's.

``TASKKIT_TEST_DEPLOY_VERSION`` (``old``, the default, or ``new``) picks the name the task is
registered under in this process, so a test can run old and new workers and relays side by side:
the test process (old code) dispatches runs of ``OLD_NAME``; a process of the new code knows only
``NEW_NAME``. Imported by the test Celery app (``tests/celery_app.py``).
"""

import os

from tenacity import stop_after_attempt, wait_fixed

from taskkit import current_run, reliable_task

from .models import Effect

OLD_NAME = "tests.deploy.rename_old"
NEW_NAME = "tests.deploy.rename_new"
VERSION = os.environ.get("TASKKIT_TEST_DEPLOY_VERSION", "old")
NAME = NEW_NAME if VERSION == "new" else OLD_NAME


@reliable_task(
    name=NAME, atomic=True, stop=stop_after_attempt(20), wait=wait_fixed(0.2), time_limit=6
)
def renamed(n, sleep=0.0):
    """A witness under the version's name: its witness row commits with SUCCEEDED, or not at all."""
    import time

    run = current_run()
    Effect.objects.create(
        kind="witness",
        run_id=str(run.run_id),
        attempt=run.attempt,
        payload={"n": n, "version": VERSION},
        pid=os.getpid(),
    )
    if sleep:
        time.sleep(sleep)
    return n
