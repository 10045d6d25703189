"""A dispatching process for the relay contention test (run with ``python -m``).

    python -m tests.integration.load_dispatcher <seconds> <countdown>

Dispatches ``tasks.record`` runs with ``countdown`` seconds, one per transaction (a write, then
the dispatch, as a view does), for ``seconds``; with a countdown over TASKKIT_ETA_MAX_SECONDS
every run waits in the ledger for a relay to publish it. Prints one JSON line: the run ids and the
errors that reached the caller.
"""

import json
import os
import sys
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from django.db import transaction  # noqa: E402

from tests.testapp import tasks  # noqa: E402
from tests.testapp.models import Order  # noqa: E402


def main(seconds: float, countdown: float) -> None:
    run_ids: list[str] = []
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        try:
            with transaction.atomic():
                Order.objects.create(reference=f"load-{os.getpid()}-{n}")
                run_ids.append(tasks.record.apply_async((f"load-{n}",), countdown=countdown).id)
        except Exception as exc:  # reported to the test
            errors.append(f"{type(exc).__name__}: {exc}")
        time.sleep(0.01)
    print(json.dumps({"run_ids": run_ids, "errors": errors}), flush=True)


if __name__ == "__main__":
    main(float(sys.argv[1]), float(sys.argv[2]))
