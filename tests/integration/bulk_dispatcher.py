"""A process that bulk-dispatches keyed runs, for the concurrency test of ``delay_many``.

    python -m tests.integration.bulk_dispatcher <first> <count> <go>

Waits for file <go> (unless it is ``-``), then dispatches ``tasks.charge`` for orders
first..first+count-1 in one ``delay_many`` inside a transaction, and prints one JSON line: the run
ids, the created flags, the seconds the dispatch took and any exception that reached the caller.
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


def main() -> None:
    first, count, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if go != "-":
        open(f"{go}.ready.{os.getpid()}", "w").close()
        while not os.path.exists(go):
            time.sleep(0.001)
    out: dict = {"error": None}
    started = time.monotonic()
    try:
        with transaction.atomic():
            results = tasks.charge.delay_many((i, "1.00") for i in range(first, first + count))
        out.update(ids=[r.id for r in results], created=[r.created for r in results])
    except Exception as exc:  # reported to the test, which fails on it
        out["error"] = f"{type(exc).__name__}: {exc}"
    out["seconds"] = time.monotonic() - started
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
