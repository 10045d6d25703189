"""A dispatching process for the process-fault scenarios (run with ``python -m``).

    python -m tests.faults.dispatcher die-after-commit <count>
        dispatch <count> witness runs in one transaction, print their ids, commit, and SIGKILL
        itself from an on-commit callback that runs before taskkit's publish callbacks.
    python -m tests.faults.dispatcher key <key> <go>
        wait for file <go>, then dispatch witness(0) with idempotency key <key> in a transaction.

Prints JSON lines: ``{"run_ids": [...]}`` before the commit (die-after-commit), or one line with
the run id, whether it was created and any exception that reached the caller (key).
"""

import json
import os
import signal
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from django.db import transaction  # noqa: E402

from tests.testapp import tasks  # noqa: E402
from tests.testapp.models import Order  # noqa: E402


def die_after_commit(count: int) -> None:
    with transaction.atomic():
        # on_commit callbacks run in registration order: this one runs first, after the COMMIT
        # and before the publish callbacks the dispatches below register.
        transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
        run_ids = [tasks.witness.delay(i).id for i in range(count)]
        print(json.dumps({"run_ids": run_ids}), flush=True)
    print(json.dumps({"error": "survived the commit"}), flush=True)  # never reached


def key(idempotency_key: str, go: str) -> None:
    open(f"{go}.ready.{os.getpid()}", "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
    out: dict[str, object] = {"error": None}
    started = time.monotonic()
    try:
        with transaction.atomic():
            Order.objects.create(reference=f"before-{os.getpid()}")
            result = tasks.witness.apply_async((0,), idempotency_key=idempotency_key)
            Order.objects.create(reference=f"after-{os.getpid()}")  # the transaction still works
        out.update(run_id=result.id, created=result.created)
    except Exception as exc:  # reported to the test, which fails on it
        out["error"] = f"{type(exc).__name__}: {exc}"
    out["seconds"] = time.monotonic() - started
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "die-after-commit":
        die_after_commit(int(sys.argv[2]))
    else:
        key(sys.argv[2], sys.argv[3])
