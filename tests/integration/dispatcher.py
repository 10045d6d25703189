"""A dispatching process for tests that need one outside pytest (other broker, concurrency).

    python -m tests.integration.dispatcher commit <kind>      dispatch tasks.record in a transaction
    python -m tests.integration.dispatcher key <key> <go>     wait for file <go>, dispatch charge

Prints one JSON line: the run id, whether it was created, the seconds the dispatch took and any
exception that reached the caller.
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


def main() -> None:
    mode = sys.argv[1]
    out = {"error": None}
    if mode == "key":
        go = sys.argv[3]
        open(f"{go}.ready.{os.getpid()}", "w").close()
        while not os.path.exists(go):
            time.sleep(0.001)
    started = time.monotonic()
    try:
        with transaction.atomic():
            Order.objects.create(reference=f"{mode}-{os.getpid()}")
            if mode == "commit":
                result = tasks.record.delay(sys.argv[2])
            else:
                result = tasks.charge.apply_async((1, "9.99"), idempotency_key=sys.argv[2])
            Order.objects.create(reference=f"after-{os.getpid()}")  # the transaction still works
        out.update(run_id=result.id, created=result.created)
    except Exception as exc:  # reported to the test, which fails on it
        out["error"] = f"{type(exc).__name__}: {exc}"
    out["seconds"] = time.monotonic() - started
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
