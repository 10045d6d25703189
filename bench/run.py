"""``make bench``: taskkit against plain Celery on SQLite (WAL) and PostgreSQL, as one table.

    python -m bench [--runs N] [--rounds R] [--bulk N] [--rss-runs N] [--quick] [--profile]

Starts its own embedded Redis, uses its own SQLite file and its own PostgreSQL database
(``BENCH_PG_URL``, default ``postgres://postgres@127.0.0.1:5432/taskkit_bench``, created if
missing; skipped with a message if PostgreSQL is unreachable), runs ``bench.client`` once per
database and prints medians over the rounds, with ratios taskkit / plain Celery.
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
    parser.add_argument("--sqlite-only", action="store_true")
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
    databases = [("SQLite (WAL)", f"sqlite:///{sqlite}")]
    pg = None if args.sqlite_only else postgres_url()
    if pg:
        databases.append(("PostgreSQL", pg))
    options = {
        "runs": args.runs,
        "rounds": args.rounds,
        "bulk": args.bulk,
        "rss_runs": args.rss_runs,
        "profile": args.profile,
    }
    results: list[tuple[str, dict[str, Any]]] = []
    started = time.monotonic()
    try:
        for label, url in databases:
            env = dict(os.environ, BENCH_DATABASE_URL=url, BENCH_REDIS_URL=redis.url)
            env["DJANGO_SETTINGS_MODULE"] = "bench.settings"
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
    print(table(results, args, time.monotonic() - started))
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
                f"{dr['taskkit']:.0f} | {dr[variant]:.0f} ({variant}) | "
                f"{_ratio(dr['taskkit'], dr[variant])} |"
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
        f"took {took / 60:.1f} min.\n"
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
