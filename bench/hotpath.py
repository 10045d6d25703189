"""The worker's database work per run, alone: ``python -m bench.hotpath [runs] [--modes ...]``.

No broker, no worker: in this one process, ``runs`` QUEUED runs are claimed and ended the way a
worker does it (``ledger.claim_by_id`` + ``ledger.succeed`` with its TaskResult row), and, for
comparison, the same number of TaskResult rows are stored the way django-celery-results does it
(``TaskResult.objects.store_result``). Per run it prints the wall time, this process's CPU, and
on PostgreSQL the server backend's CPU (read from ``/proc``; "-" when the server is not local)
and the WAL written. It isolates what a drain mixes with Celery's own work and two processes
sharing two cores.

The database is ``BENCH_DATABASE_URL`` (``bench.settings``; default the bench's SQLite file).
``--parts`` times a claim piece by piece instead (alone, asynchronous, and the cheapest writes
and reads beside it). Example, the figures in docs/benchmarks.md:

    BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/taskkit_bench python -m bench.hotpath
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402
from django_celery_results.models import TaskResult  # noqa: E402

from bench.client import TABLES, empty  # noqa: E402
from taskkit.core import ledger, prepared, sql  # noqa: E402
from taskkit.models import RunState, TaskRun  # noqa: E402

TASK = "bench.benchapp.tasks.reliable_noop"


def result_fields(run_id: Any) -> dict[str, Any]:
    """A TaskResult row as a worker with ``result_extended`` writes it for a no-op task."""
    return {
        "content_encoding": "utf-8",
        "content_type": "application/json",
        "meta": '{"children": []}',
        "result": "1",
        "status": "SUCCESS",
        "task_id": str(run_id),
        "traceback": None,
        "task_name": TASK,
        "task_args": "(1,)",
        "task_kwargs": "{}",
        "worker": "bench@host",
        "periodic_task_name": None,
    }


def backend_pid() -> int | None:
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    return pid if Path(f"/proc/{pid}/stat").exists() else None


def cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wal() -> int:
    """WAL written so far: PostgreSQL's LSN; SQLite's ``-wal`` file, which only grows between
    ``wal_start`` and the end of a measurement (pages written whole, plus a frame header)."""
    if connection.vendor == "sqlite":
        path = Path(f"{connection.settings_dict['NAME']}-wal")
        return path.stat().st_size if path.exists() else 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        return int(cursor.fetchone()[0])


def wal_start() -> None:
    """SQLite: empty the WAL and stop automatic checkpoints for the measurement."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_autocheckpoint = 0")
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def wal_end() -> None:
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cursor.execute("PRAGMA wal_autocheckpoint = 1000")


def reset(runs: int) -> list[uuid.UUID]:
    empty(TABLES)
    now = timezone.now()
    ids = [uuid.uuid4() for _ in range(runs)]
    TaskRun.objects.bulk_create(
        TaskRun(id=run_id, task_name=TASK, queue="bench", args=[i], kwargs={},
                options={"queue": "bench"}, state=RunState.QUEUED, created_at=now, queued_at=now)
        for i, run_id in enumerate(ids)
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return ids


def taskkit(run_id: uuid.UUID) -> None:
    claim = ledger.claim_by_id(run_id, TASK, "bench@host:1", 300)
    assert claim is not None
    row = ledger.ResultRow(model=TaskResult, fields=result_fields(run_id))
    assert ledger.succeed(claim, 1, row)


def django_celery_results(run_id: uuid.UUID) -> None:
    TaskResult.objects.store_result(**result_fields(run_id))


def claim_alone(run_id: uuid.UUID, asynchronous: bool = False) -> None:
    settings.TASKKIT_ASYNCHRONOUS_CLAIMS = asynchronous  # read at each claim, as in a worker
    assert ledger.claim_by_id(run_id, TASK, "bench@host:1", 300) is not None


def asynchronous_claim(run_id: uuid.UUID) -> None:
    claim_alone(run_id, asynchronous=True)


def _prepared(text: str, values: list[tuple[str, Any]]) -> None:
    table = sql.table(TaskRun, "default")
    params = sql.prep_all(TaskRun, "default", values)
    assert prepared.fetchone("default", text.format(table=table), params) is not None


def update_unindexed(run_id: uuid.UUID) -> None:
    """The cheapest write: one column no index holds (a HOT update), prepared, and its commit."""
    text = "UPDATE {table} SET claimed_by = %s WHERE id = %s RETURNING 1"
    _prepared(text, [("claimed_by", "w"), ("id", run_id)])


def update_state(run_id: uuid.UUID) -> None:
    """The state alone: a new row version with an entry in every index."""
    text = "UPDATE {table} SET state = %s WHERE id = %s RETURNING 1"
    _prepared(text, [("state", "RUNNING"), ("id", run_id)])


def select_by_pk(run_id: uuid.UUID) -> None:
    _prepared("SELECT 1 FROM {table} WHERE id = %s", [("id", run_id)])


MODES = {"taskkit": taskkit, "django-celery-results": django_celery_results}
#: ``--parts``: what one claim costs, piece by piece (PostgreSQL: prepared, in autocommit).
PARTS = {
    "claim alone": claim_alone,
    "claim, TASKKIT_ASYNCHRONOUS_CLAIMS": asynchronous_claim,
    "UPDATE state + commit": update_state,
    "UPDATE an unindexed column + commit": update_unindexed,
    "SELECT by primary key": select_by_pk,
}


def measure(mode: str, runs: int) -> dict[str, float]:
    ids = reset(runs)
    pid = backend_pid()
    step = {**MODES, **PARTS}[mode]
    wal_start()
    wal0, server0, client0, wall0 = wal(), cpu(pid), time.process_time(), time.perf_counter()
    for run_id in ids:
        step(run_id)
    wall1, client1, server1, wal1 = time.perf_counter(), time.process_time(), cpu(pid), wal()
    wal_end()
    return {
        "wall_ms": 1000 * (wall1 - wall0) / runs,
        "client_ms": 1000 * (client1 - client0) / runs,
        "server_ms": 1000 * (server1 - server0) / runs if pid else float("nan"),
        "wal_bytes": (wal1 - wal0) / runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("runs", type=int, nargs="?", default=3000)
    parser.add_argument("--rounds", type=int, default=2, help="rounds, each mode once (default 2)")
    parser.add_argument("--parts", action="store_true", help="time a claim's pieces instead")
    args = parser.parse_args()
    modes = PARTS if args.parts else MODES
    call_command("migrate", run_syncdb=True, verbosity=0)
    print(f"{connection.vendor}, {args.runs} runs per measurement, per run:")
    print("| round | mode | wall ms | this process CPU ms | server CPU ms | WAL bytes |")
    print("|---|---|---|---|---|---|")
    for r in range(args.rounds):
        order = list(modes) if r % 2 == 0 else list(modes)[::-1]
        for mode in order:
            m = measure(mode, args.runs)
            server = "-" if m["server_ms"] != m["server_ms"] else f"{m['server_ms']:.2f}"
            written = f"{m['wal_bytes']:.0f}"
            print(
                f"| {r + 1} | {mode} | {m['wall_ms']:.2f} | {m['client_ms']:.2f} | {server} | "
                f"{written} |",
                flush=True,
            )
    reset(0)


if __name__ == "__main__":
    main()
