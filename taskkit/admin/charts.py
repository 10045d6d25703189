"""The overview's charts as server-rendered SVG: no JavaScript, no build step.

``attempts_chart`` stacks finished / retried / failed attempts per bucket; ``latency_chart``
draws commit-to-start p50 and p99 per bucket. Every bar and point carries a ``<title>`` (the
browser's tooltip, read by screen readers); ``numbers`` is the same data as a table. All text
goes through ``format_html``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..core import sketch
from ..core.rollup import Chart
from .display import join

WIDTH = 960
HEIGHT = 220
LEFT = 56  # room for the y axis labels
BOTTOM = 24  # room for the x axis labels
TOP = 10
COLOURS = {"finished": "#2a7d2a", "retried": "#b36b00", "failed": "#ba2121"}
LATENCY_COLOURS = {"p50": "#205f9e", "p99": "#8a3ab9"}


@dataclass(frozen=True)
class Row:
    """One bucket as the numbers table shows it."""

    start: datetime.datetime
    label: str
    finished: int
    retried: int
    failed: int
    p50: float | None
    p99: float | None
    started: int

    @property
    def p50_text(self) -> str:
        return seconds_text(self.p50)

    @property
    def p99_text(self) -> str:
        return seconds_text(self.p99)


def label(moment: datetime.datetime, width: int, long: bool) -> str:
    local = timezone.localtime(moment)
    if long:
        return local.strftime("%a %d %H:%M")
    return local.strftime("%H:%M")


def rows(chart: Chart) -> list[Row]:
    long = chart.window.count * chart.window.width > 86400
    return [
        Row(
            start=start,
            label=label(start, chart.window.width, long),
            finished=c.finished,
            retried=c.retried,
            failed=c.failed,
            p50=sketch.quantile(c.latency, 0.5),
            p99=sketch.quantile(c.latency, 0.99),
            started=sketch.count(c.latency),
        )
        for start, c in zip(chart.starts, chart.totals, strict=True)
    ]


def seconds_text(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def _n(value: float) -> str:
    return f"{value:.1f}"


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(10 * magnitude)


def _frame(title: str, top: str, body: list[SafeString], xlabels: list[SafeString]) -> SafeString:
    plot_h = HEIGHT - BOTTOM - TOP
    return format_html(
        '<svg class="taskkit-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" '
        'width="100%" preserveAspectRatio="none" role="img" aria-label="{}">'
        '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999"></line>'
        '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#ddd"></line>'
        '<text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>'
        '<text x="{}" y="{}" font-size="11" text-anchor="end">0</text>{}{}</svg>',
        WIDTH,
        HEIGHT,
        title,
        LEFT,
        TOP + plot_h,
        WIDTH,
        TOP + plot_h,
        LEFT,
        TOP,
        WIDTH,
        TOP,
        LEFT - 4,
        TOP + 10,
        top,
        LEFT - 4,
        TOP + plot_h,
        join(body),
        join(xlabels),
    )


def _xlabels(data: list[Row]) -> list[SafeString]:
    slot = (WIDTH - LEFT) / max(1, len(data))
    every = max(1, len(data) // 8)
    return [
        format_html(
            '<text x="{}" y="{}" font-size="11" text-anchor="middle">{}</text>',
            _n(LEFT + slot * (i + 0.5)),
            HEIGHT - 6,
            row.label,
        )
        for i, row in enumerate(data)
        if i % every == 0
    ]


def attempts_chart(data: list[Row], title: str) -> SafeString:
    """Stacked bars: finished (bottom), retried, failed (top) per bucket."""
    plot_h = HEIGHT - BOTTOM - TOP
    top = _nice_max(max((r.finished + r.retried + r.failed for r in data), default=0))
    slot = (WIDTH - LEFT) / max(1, len(data))
    bar = max(1.0, slot * 0.8)
    body: list[SafeString] = []
    for i, row in enumerate(data):
        y = TOP + plot_h
        x = LEFT + slot * i + (slot - bar) / 2
        for kind in ("finished", "retried", "failed"):
            n = getattr(row, kind)
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            body.append(
                format_html(
                    '<rect class="taskkit-bar" data-kind="{}" x="{}" y="{}" '
                    'width="{}" height="{}" fill="{}"><title>{}: {} {}</title></rect>',
                    kind,
                    _n(x),
                    _n(y),
                    _n(bar),
                    _n(h),
                    COLOURS[kind],
                    row.label,
                    n,
                    kind,
                )
            )
    return _frame(title, f"{top:g}", body, _xlabels(data))


def latency_chart(data: list[Row], title: str) -> SafeString:
    """p50 and p99 commit-to-start per bucket: points joined by lines, gaps where none started."""
    plot_h = HEIGHT - BOTTOM - TOP
    top = _nice_max(max((r.p99 or 0.0 for r in data), default=0.0))
    slot = (WIDTH - LEFT) / max(1, len(data))
    body: list[SafeString] = []
    for name in ("p50", "p99"):
        colour = LATENCY_COLOURS[name]
        points = []
        for i, row in enumerate(data):
            value = getattr(row, name)
            if value is None:
                continue
            x = LEFT + slot * (i + 0.5)
            y = TOP + plot_h - plot_h * value / top
            points.append((x, y))
            body.append(
                format_html(
                    '<circle class="taskkit-point" data-series="{}" cx="{}" cy="{}" '
                    'r="3" fill="{}"><title>{}: {} {} (of {} first attempts)</title></circle>',
                    name,
                    _n(x),
                    _n(y),
                    colour,
                    row.label,
                    name,
                    seconds_text(value),
                    row.started,
                )
            )
        if len(points) > 1:
            body.insert(
                0,
                format_html(
                    '<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"></polyline>',
                    colour,
                    " ".join(f"{x:.1f},{y:.1f}" for x, y in points),
                ),
            )
    return _frame(title, seconds_text(top), body, _xlabels(data))
