"""All measurements on one database, in one process: ``python -m bench.client <json options>``.

Started by ``bench.run`` once per database (Django is set up once per process). Prints one JSON
object of raw per-round numbers on its last line; ``bench.run`` turns them into the table.

Drains are backlog drains: every run is dispatched onto a queue no worker reads, a 2-process
prefork worker is started and has connected, then the queue is renamed into the one it reads.
The drain is timed from the first task start to the last outcome stored, from the worker
children's own clocks (``bench.probes``). Over the same window the bench reads, from ``/proc``:

- worker CPU: user + system time of the worker's main process and its pool children;
- PostgreSQL CPU, the whole local server: every process under the postmaster plus the
  postmaster's reaped children (``cutime`` + ``cstime``: backends that closed during the drain,
  which is every backend of a worker that reconnects per task); and, separately, the backends
  whose ``application_name`` is the worker's (those still open at the end of the drain).
  Other databases' transactions in the window are counted too, to flag a shared server.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import glob
import json
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402
from django_celery_results.models import TaskResult  # noqa: E402

from bench.benchapp.models import Item  # noqa: E402
from bench.benchapp.tasks import DONE, HOLD, plain_noop, redis_client, reliable_noop  # noqa: E402
from bench.celery_app import app  # noqa: E402, F401 - the tasks bind to this app
from bench.probes import FIRST, LAST, QueryCounter  # noqa: E402
from taskkit.models import RunState, TaskRun  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / ".tmp" / "bench-logs"
QUEUE = "bench"
WORKER_APPNAME = "taskkit-bench-worker"
TICK = os.sysconf("SC_CLK_TCK")

#: The drain variants: (name, task, worker environment).
VARIANTS: dict[str, dict[str, str]] = {
    "taskkit": {"BENCH_RESULTS": "django-db", "BENCH_DB_REUSE_MAX": "1000"},
    "celery+dcr+reuse": {"BENCH_RESULTS": "django-db", "BENCH_DB_REUSE_MAX": "1000"},
    "celery+dcr default": {"BENCH_RESULTS": "django-db", "BENCH_DB_REUSE_MAX": ""},
    "celery, no results": {"BENCH_RESULTS": "none", "BENCH_DB_REUSE_MAX": ""},
}


def log(message: str) -> None:
    print(f"[{connection.vendor}] {message}", file=sys.stderr, flush=True)


#: The tables a measurement fills: the ledger's and django-celery-results' rows.
TABLES = ["taskkit_taskattempt", "taskkit_taskrun", "django_celery_results_taskresult"]


def empty(tables: list[str]) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)}")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")


def reset() -> None:
    empty([*TABLES, Item._meta.db_table])
    r = redis_client()
    r.delete(HOLD, QUEUE, DONE, "unacked", "unacked_index", "bench:queries")
    stamps = list(r.scan_iter(f"{FIRST}*")) + list(r.scan_iter(f"{LAST}*"))
    if stamps:
        r.delete(*stamps)


# -- dispatch -----------------------------------------------------------------------------------


def dispatch_taskkit(n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        with transaction.atomic():
            Item.objects.create(note=str(i))
            reliable_noop.delay(i)
    return n / (time.perf_counter() - started)


def dispatch_plain(n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        with transaction.atomic():
            Item.objects.create(note=str(i))
            transaction.on_commit(functools.partial(plain_noop.delay, i))
    return n / (time.perf_counter() - started)


def bulk_taskkit(n: int) -> float:
    started = time.perf_counter()
    with transaction.atomic():
        reliable_noop.delay_many((i,) for i in range(n))
    elapsed = time.perf_counter() - started
    assert redis_client().llen(HOLD) == n and not TaskRun.objects.filter(state="PENDING").exists()
    return elapsed


def bulk_plain(n: int) -> float:
    started = time.perf_counter()
    with transaction.atomic():
        for i in range(n):
            transaction.on_commit(functools.partial(plain_noop.delay, i))
    return time.perf_counter() - started


def bulk_floor(n: int) -> float:
    """A bulk INSERT of the same rows plus one pipelined LPUSH of a real message per row."""
    message = redis_client().lindex(HOLD, 0)  # left by the previous measurement
    rows = [
        TaskRun(id=uuid.uuid4(), task_name=reliable_noop.name, queue=HOLD, args=[i], kwargs={})
        for i in range(n)
    ]
    started = time.perf_counter()
    with transaction.atomic():
        TaskRun.objects.bulk_create(rows)
    pipe = redis_client().pipeline(transaction=False)
    for _ in range(n):
        pipe.lpush("bench_floor", message)
    pipe.execute()
    elapsed = time.perf_counter() - started
    redis_client().delete("bench_floor")
    return elapsed


# -- worker -------------------------------------------------------------------------------------


class Worker:
    def __init__(self, env: dict[str, str], name: str) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"worker-{connection.vendor}-{name.replace(' ', '_')}.log"
        redis_client().delete("bench:ready")
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", "-P", "prefork",
             "-c", "2", "-Q", QUEUE, "-n", f"bench-{os.getpid()}@%h", "--without-gossip",
             "--without-mingle", "--without-heartbeat", "-l", "WARNING"],
            cwd=ROOT, env={**os.environ, "BENCH_PG_APPNAME": WORKER_APPNAME, **env},
            stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not redis_client().get("bench:ready"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bench worker did not start; see {self.log_path}")
            time.sleep(0.05)
        time.sleep(0.3)  # the pool's children finish starting

    def children(self) -> list[int]:
        return _children(self.process.pid)

    def rss_mb(self) -> dict[str, float]:
        """RSS of the main process and the largest child, in MB."""
        return {
            "main": _rss(self.process.pid),
            "child": max((_rss(c) for c in self.children()), default=0.0),
        }

    def cpu_seconds(self) -> float:
        """User + system CPU of the main process and its (live) pool children, in seconds."""
        return sum(_cpu(pid) for pid in [self.process.pid, *self.children()])

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # the thread ended
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (field 3, ``state``, is index 0)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def _cpu(pid: int, reaped: bool = False) -> float:
    """utime + stime of ``pid`` (+ cutime + cstime of its reaped children), in seconds."""
    try:
        fields = _stat(pid)
    except (FileNotFoundError, ProcessLookupError):  # ended since it was listed
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    if reaped:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime (fields 16, 17)
    return ticks / TICK


class PostgresCPU:
    """CPU of the local PostgreSQL server and of the worker's backends (``None`` if remote)."""

    def __init__(self) -> None:
        self.postmaster: int | None = None
        if connection.vendor != "postgresql":
            return
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (backend,) = cursor.fetchone()
        try:
            self.postmaster = int(_stat(backend)[1])  # ppid of our own backend
        except (FileNotFoundError, PermissionError):
            self.postmaster = None  # a remote server: no /proc to read

    def server(self) -> float | None:
        """All PostgreSQL processes, including backends that ended (reaped by the postmaster)."""
        if self.postmaster is None:
            return None
        pm = self.postmaster
        return _cpu(pm, reaped=True) + sum(_cpu(c) for c in _children(pm))

    def worker_backends(self) -> dict[int, float]:
        if self.postmaster is None:
            return {}
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [WORKER_APPNAME]
            )
            return {pid: _cpu(pid) for (pid,) in cursor.fetchall()}

    def other_xacts(self) -> int | None:
        """Transactions committed or rolled back by other databases (stats lag up to ~1 s)."""
        if connection.vendor != "postgresql":
            return None
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT coalesce(sum(xact_commit + xact_rollback), 0) FROM pg_stat_database"
                " WHERE datname IS DISTINCT FROM current_database()"
            )
            return int(cursor.fetchone()[0])


def _rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load(variant: str, n: int) -> None:
    """Put ``n`` messages (and, for taskkit, runs) on the hold queue, which no worker reads."""
    if variant == "taskkit":
        for start in range(0, n, 10_000):
            reliable_noop.delay_many((i,) for i in range(start, min(n, start + 10_000)))
    else:
        with plain_noop.app.producer_or_acquire() as producer:
            for i in range(n):
                plain_noop.apply_async((i,), producer=producer)
    assert redis_client().llen(HOLD) == n, redis_client().llen(HOLD)


def wait_done(
    n: int, worker: Worker, timeout: float, on: Callable[[int], None] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while (done := int(redis_client().get(DONE) or 0)) < n:
        if on is not None:
            on(done)
        if worker.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"drain stopped at {done}/{n}; see {worker.log_path}")
        time.sleep(0.02)


def _stamps(prefix: str) -> list[float]:
    r = redis_client()
    return [float(v) for v in r.mget(list(r.scan_iter(f"{prefix}*"))) if v is not None]


def drain(variant: str, n: int, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """A backlog drain of ``n`` runs: runs/s from first start to last finish, CPU ms per run."""
    reset()
    load(variant, n)
    worker = Worker({**VARIANTS[variant], **(extra_env or {})}, variant)
    pg = PostgresCPU()
    recorded = None
    try:
        cpu0, pg0, backends0, other0 = (
            worker.cpu_seconds(), pg.server(), pg.worker_backends(), pg.other_xacts()
        )  # fmt: skip
        started = time.perf_counter()
        redis_client().rename(HOLD, QUEUE)
        wait_done(n, worker, timeout=max(120, n / 20))
        cpu1, pg1, backends1 = worker.cpu_seconds(), pg.server(), pg.worker_backends()
        recorded = _recorded(variant)  # stored before the probe counted the run as done
        deadline = time.monotonic() + 30
        while recorded is not None and recorded() < n and time.monotonic() < deadline:
            time.sleep(0.005)
        wall = time.perf_counter() - started
    finally:
        worker.stop()
    if recorded is not None:
        assert recorded() == n, f"{variant}: {recorded()} of {n} outcomes recorded"
    elapsed = max(_stamps(LAST)) - min(_stamps(FIRST))
    other1 = pg.other_xacts()
    out: dict[str, Any] = {
        "rate": n / elapsed,
        "wall_rate": n / wall,  # rename to all recorded, as the bench measured before
        "worker_cpu_ms": 1000 * (cpu1 - cpu0) / n,
    }
    if pg0 is not None and pg1 is not None:
        out["pg_cpu_ms"] = 1000 * (pg1 - pg0) / n
        out["pg_backend_cpu_ms"] = (
            1000 * sum(cpu - backends0.get(pid, 0.0) for pid, cpu in backends1.items()) / n
        )
        out["pg_backends"] = len(backends1)
    if other0 is not None and other1 is not None:
        out["pg_other_xacts"] = other1 - other0
    return out


def _recorded(variant: str) -> Callable[[], int] | None:
    if variant == "taskkit":
        return TaskRun.objects.filter(state=RunState.SUCCEEDED).count
    if VARIANTS[variant]["BENCH_RESULTS"] == "django-db":
        return TaskResult.objects.filter(status="SUCCESS").count
    return None


def round_trips(variant: str, n: int) -> dict[str, float]:
    """Statements, commits and connections per run in the worker child, counted, over n runs.

    A separate, untimed drain: a Django ``execute_wrapper`` in each worker child sorts and
    counts every statement, plus commits and new connections, flushed to Redis after each task.
    """
    drain(variant, n, {"BENCH_COUNT_QUERIES": "1"})
    counts = {k.decode(): int(v) for k, v in redis_client().hgetall("bench:queries").items()}
    return {kind: count / n for kind, count in sorted(counts.items())}


def dispatch_round_trips(n: int = 20) -> dict[str, float]:
    reset()
    counter = QueryCounter().install()
    for i in range(n):
        with transaction.atomic():
            reliable_noop.delay(i)
    connection.execute_wrappers.remove(counter)
    return {kind: count / n for kind, count in sorted(counter.counts.items())}


def rss(runs: int) -> dict[str, Any]:
    """Worker RSS after 1k runs, at each tenth of ``runs``, and after ``runs``: one taskkit worker.

    Also the time it took to load the backlog and to drain it (``--rss-runs 100000`` is the
    issue's figure; the two times say what a run of that size costs).
    """
    reset()
    started = time.perf_counter()
    load("taskkit", runs)
    loaded = time.perf_counter() - started
    worker = Worker(VARIANTS["taskkit"], "rss")
    out: dict[str, Any] = {"samples": []}
    marks = sorted({min(1000, runs), *(runs * k // 10 for k in range(1, 10))})
    try:
        started = time.perf_counter()
        redis_client().rename(HOLD, QUEUE)

        def at(done: int) -> None:
            if marks and done >= marks[0]:
                sample = {"runs": done, **worker.rss_mb()}
                out.setdefault("first", sample)
                out["samples"].append(sample)
                while marks and done >= marks[0]:
                    marks.pop(0)

        wait_done(runs, worker, timeout=max(120, runs / 20), on=at)
        drained = time.perf_counter() - started
        time.sleep(0.2)
        at(runs)
        out["last"] = {"runs": runs, **worker.rss_mb()}
        out["samples"].append(out["last"])
    finally:
        worker.stop()
    out["load_s"], out["drain_s"] = loaded, drained
    return out


def relay(n: int) -> float | str:
    try:
        import taskkit.relay  # noqa: F401
    except ImportError:
        return "relay not available (taskkit.relay does not import)"
    reset()
    now = timezone.now()
    TaskRun.objects.bulk_create(
        TaskRun(id=uuid.uuid4(), task_name=reliable_noop.name, queue=HOLD, args=[i], kwargs={},
                options={"queue": HOLD}, state=RunState.PENDING, created_at=now)
        for i in range(n)
    )  # fmt: skip
    # lost an hour ago (created_at is auto_now_add, so set it after the insert)
    TaskRun.objects.update(created_at=now - datetime.timedelta(hours=1))
    started = time.perf_counter()
    call_command("taskkit_relay", once=True)
    elapsed = time.perf_counter() - started
    published = redis_client().llen(HOLD)
    if published < n:
        return f"relay published {published} of {n} in {elapsed:.1f} s"
    return elapsed


def profile(n: int) -> str:
    """cProfile of both worker children over a taskkit drain of n runs: the top functions."""
    directory = tempfile.mkdtemp(prefix="taskkit-bench-profile-")
    rate = drain("taskkit", n, {"BENCH_PROFILE": directory})["rate"]
    files = glob.glob(f"{directory}/*.prof")
    if not files:
        return "no profile written"
    stats = pstats.Stats(*files)
    lines = [f"taskkit drain of {n} runs at {rate:.0f}/s, cProfile of the worker children:"]
    import io

    for order in ("tottime", "cumulative"):
        buffer = io.StringIO()
        stats.stream = buffer  # type: ignore[attr-defined]
        stats.sort_stats(order).print_stats(25)
        lines.append(buffer.getvalue())
    return "\n".join(lines)


def main() -> None:
    opts = json.loads(sys.argv[1])
    broker = reliable_noop.app.conf.broker_url
    if broker != os.environ["BENCH_REDIS_URL"] or plain_noop.app is not reliable_noop.app:
        sys.exit(f"bench tasks are bound to {broker!r}, not the bench's own Redis; refusing.")
    call_command("migrate", run_syncdb=True, verbosity=0)
    runs, rounds, bulk = opts["runs"], opts["rounds"], opts["bulk"]
    out: dict[str, Any] = {"vendor": connection.vendor, "dispatch": {}, "bulk": {}, "drain": {}}
    dispatch_n = min(runs, 1000)
    if opts.get("rss_only"):
        out["rss"] = rss(opts["rss_runs"])
        reset()
        print(json.dumps(out))
        return

    for r in range(rounds):  # rounds in rotated order: A/B flipped, drain systems rotated
        log(f"round {r + 1}/{rounds}: dispatch, bulk, drain")
        pairs = [("taskkit", dispatch_taskkit), ("celery", dispatch_plain)]
        for name, fn in pairs if r % 2 == 0 else pairs[::-1]:
            reset()
            out["dispatch"].setdefault(name, []).append(fn(dispatch_n))
        bulk_pairs = [("taskkit", bulk_taskkit), ("celery", bulk_plain)]
        for name, fn in bulk_pairs if r % 2 == 0 else bulk_pairs[::-1]:
            reset()
            out["bulk"].setdefault(name, []).append(fn(bulk))
            if name == "celery":
                out["bulk"].setdefault("floor", []).append(bulk_floor(bulk))
        names = list(VARIANTS)
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            out["drain"].setdefault(name, []).append(drain(name, runs))
            log(f"  drain {name}: {out['drain'][name][-1]}")

    log("round trips, relay, RSS")
    out["round_trips"] = {"dispatch": dispatch_round_trips()}
    for name in ("taskkit", "celery+dcr+reuse", "celery+dcr default"):
        out["round_trips"][name] = round_trips(name, min(runs, 500))
    out["relay"] = relay(bulk)
    out["rss"] = rss(opts["rss_runs"])
    if opts.get("profile"):
        out["profile"] = profile(runs)
    out["medians"] = {
        group: {k: statistics.median(v) for k, v in out[group].items()}
        for group in ("dispatch", "bulk")
    }
    out["medians"]["drain"] = {
        name: {
            metric: statistics.median(d[metric] for d in drains)
            for metric in drains[0]
            if all(metric in d for d in drains)
        }
        for name, drains in out["drain"].items()
    }
    reset()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
