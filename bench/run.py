"""``make bench``: taskkit against plain Celery on SQLite (WAL) and PostgreSQL, as one table.

    python -m bench [--runs N] [--rounds R] [--bulk N] [--rss-runs N] [--quick] [--profile]
                    [--sqlite-only | --postgres-only] [--rss-only] [--asynchronous-claims]

Starts its own embedded Redis, uses its own SQLite file and its own PostgreSQL database
(``BENCH_PG_URL``, default ``postgres://postgres@127.0.0.1:5432/taskkit_bench``, created if
missing; skipped with a message if PostgreSQL is unreachable), runs ``bench.client`` once per
database and prints medians over the rounds, with ratios taskkit / plain Celery: the table of
every measurement, the backlog drains with worker and PostgreSQL CPU per run, and the issue's
targets. Drains are backlog drains timed from the first task start to the last outcome stored
(see ``bench.client``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/taskkit_bench")


def postgres_url() -> str | None:
    """The bench database, created if missing; ``None`` (with a message) if unreachable."""
    try:
        import psycopg
    except ImportError:
        print("PostgreSQL skipped: psycopg is not installed.", file=sys.stderr)
        return None
    base, _, name = PG_URL.rpartition("/")
    try:
        with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=3) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        print(f"PostgreSQL skipped ({PG_URL} unreachable: {exc}); SQLite only.", file=sys.stderr)
        return None
    return PG_URL


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make bench BENCH_ARGS=...", description=__doc__)
    parser.add_argument("--runs", type=int, default=2000, help="runs per drain (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (default 3)")
    parser.add_argument("--bulk", type=int, default=10_000, help="runs per bulk dispatch")
    parser.add_argument("--rss-runs", type=int, default=None, help="RSS after this many runs "
                        "(default 10 x --runs; 100000 for the issue's figure)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small sizes, one round (CI)")
    parser.add_argument("--profile", action="store_true", help="cProfile a taskkit drain")
    parser.add_argument("--asynchronous-claims", action="store_true",
                        help="taskkit with TASKKIT_ASYNCHRONOUS_CLAIMS = True")  # fmt: skip
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--sqlite-only", action="store_true")
    only.add_argument("--postgres-only", action="store_true")
    parser.add_argument("--rss-only", action="store_true", help="only the worker RSS drain "
                        "(with --rss-runs 100000: the issue's figure)")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.runs, args.rounds, args.bulk = 200, 1, 1000
    if args.rss_runs is None:
        args.rss_runs = max(1000, 10 * args.runs) if not args.quick else 1500
    return args


def main() -> None:
    args = parse()
    sys.path.insert(0, str(ROOT))
    from devsupport.embedded_redis import EmbeddedRedis

    redis = EmbeddedRedis().start()
    (ROOT / ".tmp").mkdir(exist_ok=True)
    sqlite = ROOT / ".tmp" / "bench.sqlite3"
    for leftover in ROOT.glob(".tmp/bench.sqlite3*"):
        leftover.unlink()
    databases = [] if args.postgres_only else [("SQLite (WAL)", f"sqlite:///{sqlite}")]
    pg = None if args.sqlite_only else postgres_url()
    if pg:
        databases.append(("PostgreSQL", pg))
    elif args.postgres_only:
        sys.exit("--postgres-only: PostgreSQL is unreachable (see above).")
    options = {
        "runs": args.runs,
        "rounds": args.rounds,
        "bulk": args.bulk,
        "rss_runs": args.rss_runs,
        "profile": args.profile,
        "rss_only": args.rss_only,
    }
    results: list[tuple[str, dict[str, Any]]] = []
    started = time.monotonic()
    try:
        for label, url in databases:
            env = dict(os.environ, BENCH_DATABASE_URL=url, BENCH_REDIS_URL=redis.url)
            env["DJANGO_SETTINGS_MODULE"] = "bench.settings"
            if args.asynchronous_claims:
                env["BENCH_ASYNCHRONOUS_CLAIMS"] = "1"
            env.pop("REDIS_URL", None)
            proc = subprocess.run(
                [sys.executable, "-m", "bench.client", json.dumps(options)],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                sys.exit(f"bench on {label} failed (exit {proc.returncode})")
            results.append((label, json.loads(proc.stdout.strip().splitlines()[-1])))
    finally:
        redis.stop()
    took = time.monotonic() - started
    if args.rss_only:
        print(rss_table(results, took))
        return
    if args.asynchronous_claims:
        print("taskkit runs with TASKKIT_ASYNCHRONOUS_CLAIMS = True (not the default).\n")
    print(table(results, args, took))
    print()
    print(drain_table(results, args))
    print()
    print(targets_table(results, args))
    for label, out in results:
        if "profile" in out:
            print(f"\n### Profile, {label}\n```\n{out['profile']}\n```")


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def table(results: list[tuple[str, dict[str, Any]]], args: argparse.Namespace, took: float) -> str:
    rows = [
        "| measurement | database | taskkit | plain Celery | taskkit / plain |",
        "|---|---|---|---|---|",
    ]
    for label, out in results:
        m = out["medians"]
        d, b, dr = m["dispatch"], m["bulk"], m["drain"]
        rows += [
            f"| (1) dispatch: row + `.delay()` per transaction, runs/s | {label} | "
            f"{d['taskkit']:.0f} | {d['celery']:.0f} (on_commit + delay) | "
            f"{_ratio(d['taskkit'], d['celery'])} |",
            f"| (2) bulk: {args.bulk} runs in one transaction, s | {label} | "
            f"{b['taskkit']:.2f} (`delay_many`) | {b['celery']:.2f} (on_commit + delay loop) | "
            f"{_ratio(b['taskkit'], b['celery'])} |",
            f"| (2) bulk vs floor (bulk INSERT + pipelined LPUSH), s | {label} | "
            f"{b['taskkit']:.2f} | floor {b['floor']:.2f} | {_ratio(b['taskkit'], b['floor'])} |",
        ]
        for variant in ("celery+dcr+reuse", "celery+dcr default", "celery, no results"):
            rows.append(
                f"| (3) drain {args.runs} runs, 2-process worker, runs/s | {label} | "
                f"{dr['taskkit']['rate']:.0f} | {dr[variant]['rate']:.0f} ({variant}) | "
                f"{_ratio(dr['taskkit']['rate'], dr[variant]['rate'])} |"
            )
        relay = out["relay"]
        relay_cell = (
            f"{relay:.2f} s ({args.bulk / relay:.0f}/s)" if isinstance(relay, float) else relay
        )
        rows.append(
            f"| (4) relay: re-publish {args.bulk} PENDING runs | {label} | {relay_cell} | - | - |"
        )
        rt = out["round_trips"]
        rows.append(
            f"| (5) DB statements/run: dispatch; worker | {label} | "
            f"{_trips(rt['dispatch'])}; {_trips(rt['taskkit'])} | "
            f"worker {_trips(rt['celery+dcr+reuse'])} | - |"
        )
        rss = out["rss"]
        rows.append(
            f"| (6) worker RSS MB (main / largest child) after {rss['first']['runs']} and "
            f"{rss['last']['runs']} runs | {label} | "
            f"{rss['first']['main']:.0f}/{rss['first']['child']:.0f} → "
            f"{rss['last']['main']:.0f}/{rss['last']['child']:.0f} | - | - |"
        )
    head = (
        f"Medians over {args.rounds} round(s); {args.runs} runs per drain; "
        f"took {took / 60:.1f} min.\n\n"
    )
    details = [
        "",
        "Round trips per run, by kind (counted in the worker child / dispatching process):",
    ]
    for label, out in results:
        for phase, counts in out["round_trips"].items():
            parts = ", ".join(f"{k} {v:.2f}" for k, v in counts.items())
            details.append(f"- {label}, {phase}: {parts}")
    return head + "\n".join(rows) + "\n" + "\n".join(details)


def _trips(counts: dict[str, float]) -> str:
    statements = sum(v for k, v in counts.items() if k not in ("commit", "connect"))
    return (
        f"{statements:.1f} stmt + {counts.get('commit', 0):.1f} commit"
        f" + {counts.get('connect', 0):.2f} connect"
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def drain_table(results: list[tuple[str, dict[str, Any]]], args: argparse.Namespace) -> str:
    rows = [
        f"Backlog drains of {args.runs} runs by a 2-process prefork worker (timed from the first "
        "task start to the last outcome stored; medians):",
        "",
        "| system | database | drain runs/s | worker CPU ms/run | PostgreSQL CPU ms/run: "
        "server (worker's backends) | SQL/run, worker | taskkit / system |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, out in results:
        dr = out["medians"]["drain"]
        for name, m in dr.items():
            pg = "-"
            if "pg_cpu_ms" in m:
                pg = f"{m['pg_cpu_ms']:.2f} ({m['pg_backend_cpu_ms']:.2f})"
            trips = out["round_trips"].get(name)
            rows.append(
                f"| {name} | {label} | {m['rate']:.0f} | {m['worker_cpu_ms']:.2f} | {pg} | "
                f"{_trips(trips) if trips else '-'} | {_ratio(dr['taskkit']['rate'], m['rate'])} |"
            )
    rows += [
        "",
        "Worker CPU: user + system time of the worker's main process and pool children "
        "(/proc/<pid>/stat) over the drain, per run. PostgreSQL CPU: every process of the local "
        "server plus the backends that ended during the drain (the postmaster's cutime + "
        "cstime), per run; in parentheses only the worker's own backends still open at the end "
        "(application_name; it misses backends that closed: all of them when the worker "
        "reconnects per task, and those CELERY_DB_REUSE_MAX=1000 recycled, once per 1000 tasks "
        "per child). SQL/run: counted by a "
        "Django execute_wrapper in the worker children over a separate, untimed drain of "
        f"{min(args.runs, 500)} runs.",
    ]
    for label, out in results:
        others = [d.get("pg_other_xacts") for drains in out["drain"].values() for d in drains]
        busy = [n for n in others if n]
        if busy:
            rows.append(
                f"{label}: other databases on the same server committed up to {max(busy)} "
                "transactions during a drain (a shared server: its CPU is in the server figure)."
            )
        walls = ", ".join(
            f"{name} {m['wall_rate']:.0f}" for name, m in out["medians"]["drain"].items()
        )
        rows.append(f"{label}, runs/s from the queue's rename to all recorded (before): {walls}.")
    return "\n".join(rows)


def targets_table(results: list[tuple[str, dict[str, Any]]], args: argparse.Namespace) -> str:
    rows = [
        "Issue #10's targets (medians of this run; each round's own ratio beside it, since the "
        "machine's speed drifts between rounds):",
        "",
        "| target | database | measured | per round | target | met |",
        "|---|---|---|---|---|---|",
    ]

    def add(name: str, label: str, value: float, per: list[float], goal: str, met: bool) -> None:
        rounds = ", ".join(f"{r:.2f}" for r in per)
        rows.append(
            f"| {name} | {label} | {value:.2f}x | {rounds} | {goal} | {'yes' if met else 'NO'} |"
        )

    def per_round(a: list[Any], b: list[Any], key: str | None = None) -> list[float]:
        return [(x[key] / y[key]) if key else (x / y) for x, y in zip(a, b, strict=True)]

    for label, out in results:
        m, d = out["medians"], out["drain"]
        dr = m["drain"]
        tk = dr["taskkit"]["rate"]
        add("drain / celery+dcr+reuse (backlog)", label, tk / dr["celery+dcr+reuse"]["rate"],
            per_round(d["taskkit"], d["celery+dcr+reuse"], "rate"),
            ">= 1.0x", tk >= dr["celery+dcr+reuse"]["rate"])  # fmt: skip
        if out["vendor"] == "postgresql":
            ratio = tk / dr["celery+dcr default"]["rate"]
            add("drain / celery+dcr default (backlog)", label, ratio,
                per_round(d["taskkit"], d["celery+dcr default"], "rate"),
                ">= 3.0x", ratio >= 3.0)  # fmt: skip
        ratio = m["dispatch"]["taskkit"] / m["dispatch"]["celery"]
        add("dispatch / bare on_commit + delay", label, ratio,
            per_round(out["dispatch"]["taskkit"], out["dispatch"]["celery"]), ">= 0.8x",
            ratio >= 0.8)  # fmt: skip
        ratio = m["bulk"]["taskkit"] / m["bulk"]["floor"]
        add(f"bulk {args.bulk} / floor", label, ratio,
            per_round(out["bulk"]["taskkit"], out["bulk"]["floor"]),
            "<= 2.0x", ratio <= 2.0)  # fmt: skip
    for label, out in results:
        rss = out["rss"]
        first, last = rss["first"], rss["last"]
        rows.append(
            f"| worker RSS flat over 100k runs | {label} | "
            f"{first['main']:.0f}/{first['child']:.0f} MB at {first['runs']} → "
            f"{last['main']:.0f}/{last['child']:.0f} MB at {last['runs']} runs | "
            f"- | 100k runs | "
            f"{'measured' if last['runs'] >= 100_000 else 'not at 100k: --rss-runs'} |"
        )
    for label, out in results:
        rss = out["rss"]
        runs = rss["last"]["runs"]
        rows.append(
            f"\n{label}, RSS run of {runs} runs: load {rss['load_s']:.0f} s + drain "
            f"{rss['drain_s']:.0f} s; 100k runs would take about "
            f"{(rss['load_s'] + rss['drain_s']) * 100_000 / runs / 60:.0f} min."
        )
    return "\n".join(rows)


def rss_table(results: list[tuple[str, dict[str, Any]]], took: float) -> str:
    rows = [
        f"Worker RSS (taskkit, 2-process prefork worker), took {took / 60:.1f} min:",
        "",
        "| database | runs | main MB | largest child MB |",
        "|---|---|---|---|",
    ]
    for label, out in results:
        for sample in out["rss"]["samples"]:
            rows.append(
                f"| {label} | {sample['runs']} | {sample['main']:.1f} | {sample['child']:.1f} |"
            )
    for label, out in results:
        rss = out["rss"]
        rows.append(
            f"\n{label}: loading {rss['last']['runs']} runs took {rss['load_s']:.0f} s, "
            f"draining them {rss['drain_s']:.0f} s."
        )
    return "\n".join(rows)
