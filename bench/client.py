"""All measurements on one database, in one process: ``python -m bench.client <json options>``.

Started by ``bench.run`` once per database (Django is set up once per process). Prints one JSON
object of raw per-round numbers on its last line; ``bench.run`` turns them into the table.
"""

from __future__ import annotations

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
from bench.probes import QueryCounter  # noqa: E402
from taskkit.models import RunState, TaskRun  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / ".tmp" / "bench-logs"
QUEUE = "bench"

#: The drain variants: (name, task, worker environment).
VARIANTS: dict[str, dict[str, str]] = {
    "taskkit": {"BENCH_RESULTS": "django-db", "BENCH_DB_REUSE_MAX": "1000"},
    "celery+dcr+reuse": {"BENCH_RESULTS": "django-db", "BENCH_DB_REUSE_MAX": "1000"},
    "celery+dcr default": {"BENCH_RESULTS": "django-db", "BENCH_DB_REUSE_MAX": ""},
    "celery, no results": {"BENCH_RESULTS": "none", "BENCH_DB_REUSE_MAX": ""},
}


def log(message: str) -> None:
    print(f"[{connection.vendor}] {message}", file=sys.stderr, flush=True)


def reset() -> None:
    tables = ["taskkit_taskattempt", "taskkit_taskrun", "django_celery_results_taskresult"]
    tables.append(Item._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)}")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")
    redis_client().delete(HOLD, QUEUE, DONE, "unacked", "unacked_index", "bench:queries")


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
            cwd=ROOT, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not redis_client().get("bench:ready"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bench worker did not start; see {self.log_path}")
            time.sleep(0.05)
        time.sleep(0.3)  # the pool's children finish starting

    def rss_mb(self) -> dict[str, float]:
        """RSS of the main process and the largest child, in MB."""
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return {
            "main": _rss(pid),
            "child": max((_rss(int(c)) for c in children), default=0.0),
        }

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


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
        time.sleep(0.01)


def drain(variant: str, n: int, extra_env: dict[str, str] | None = None) -> float:
    reset()
    load(variant, n)
    worker = Worker({**VARIANTS[variant], **(extra_env or {})}, variant)
    recorded = None
    try:
        started = time.perf_counter()
        redis_client().rename(HOLD, QUEUE)
        wait_done(n, worker, timeout=max(120, n / 20))
        recorded = _recorded(variant)  # the last outcomes commit just after the last body ran
        deadline = time.monotonic() + 30
        while recorded is not None and recorded() < n and time.monotonic() < deadline:
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
    finally:
        worker.stop()
    if recorded is not None:
        assert recorded() == n, f"{variant}: {recorded()} of {n} outcomes recorded"
    return n / elapsed


def _recorded(variant: str) -> Callable[[], int] | None:
    if variant == "taskkit":
        return TaskRun.objects.filter(state=RunState.SUCCEEDED).count
    if VARIANTS[variant]["BENCH_RESULTS"] == "django-db":
        return TaskResult.objects.filter(status="SUCCESS").count
    return None


def round_trips(variant: str, n: int) -> dict[str, float]:
    """Statements, commits and connections per run in the worker child, counted, over n runs."""
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
    """Worker RSS after 1k runs and after ``runs`` runs of one taskkit worker."""
    reset()
    load("taskkit", runs)
    worker = Worker(VARIANTS["taskkit"], "rss")
    out: dict[str, Any] = {}
    try:
        redis_client().rename(HOLD, QUEUE)
        mark = min(1000, runs)

        def at(done: int) -> None:
            if done >= mark and "first" not in out:
                out["first"] = {"runs": done, **worker.rss_mb()}

        wait_done(runs, worker, timeout=max(120, runs / 20), on=at)
        time.sleep(0.2)
        at(runs)
        out["last"] = {"runs": runs, **worker.rss_mb()}
    finally:
        worker.stop()
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
    rate = drain("taskkit", n, {"BENCH_PROFILE": directory})
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

    for r in range(rounds):  # A/B rounds, the order flipped each round
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
        for name in names if r % 2 == 0 else names[::-1]:
            out["drain"].setdefault(name, []).append(drain(name, runs))

    log("round trips, relay, RSS")
    out["round_trips"] = {
        "dispatch": dispatch_round_trips(),
        "taskkit": round_trips("taskkit", min(runs, 500)),
        "celery+dcr+reuse": round_trips("celery+dcr+reuse", min(runs, 500)),
    }
    out["relay"] = relay(bulk)
    out["rss"] = rss(opts["rss_runs"])
    if opts.get("profile"):
        out["profile"] = profile(runs)
    out["medians"] = {
        group: {k: statistics.median(v) for k, v in out[group].items()}
        for group in ("dispatch", "bulk", "drain")
    }
    reset()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
