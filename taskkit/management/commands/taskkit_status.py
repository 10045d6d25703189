"""``manage.py taskkit_status``: the ledger's figures (the same as the metrics) as tables."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from taskkit.models import RunState
from taskkit.observe import stats


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


class Command(BaseCommand):
    help = "Show runs by task and state, waiting ages, commit-to-start delay and relay heartbeats."

    def handle(self, *args: Any, **options: Any) -> None:
        figures = stats.read()
        self.stdout.write(self.render(figures))

    def render(self, figures: stats.LedgerStats) -> str:
        states = [str(s) for s in RunState]
        rows = []
        for task in figures.tasks:
            failed = sum(n for (t, _), n in figures.attempt_failures.items() if t == task)
            rows.append(
                [
                    task,
                    *(str(figures.runs.get((task, s), 0)) for s in states),
                    str(figures.attempts.get(task, 0)),
                    str(failed),
                ]
            )
        parts = [
            "Runs",
            table(["task", *states, "attempts", "failed attempts"], rows) if rows else "(no runs)",
            "",
            "Waiting",
            table(
                ["state", "oldest"],
                [[str(s), seconds(figures.oldest_waiting.get(s))] for s in stats.WAITING_STATES],
            ),
            "",
            f"Commit to start (last {figures.commit_to_start_runs} started runs)",
            table(
                ["quantile", "seconds"],
                [[f"p{round(q * 100)}", seconds(v)] for q, v in figures.commit_to_start.items()],
            )
            if figures.commit_to_start
            else "(no started runs)",
            "",
            "Relays",
            table(
                ["relay", "last sweep"],
                [[n, f"{seconds(a)} ago"] for n, a in sorted(figures.relay_heartbeats.items())],
            )
            if figures.relay_heartbeats
            else "(no relay has reported; is manage.py taskkit_relay running?)",
        ]
        return "\n".join(parts) + "\n"
