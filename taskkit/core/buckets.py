"""Time buckets of the overview's charts: which widths, where a bucket starts, which are closed.

A chart is a ``Window``: ``count`` buckets of ``width`` seconds ending with the open one (the
bucket ``now`` falls in). Bucket starts are whole multiples of the width since the Unix epoch,
in UTC, so every process and host cuts time the same way. A bucket is *closed* once
``SETTLE_SECONDS`` have passed since its end: attempts are recorded by the workers as they end
(their clocks, their commit a moment later), and the rollup counts a bucket only once.

Everything here is pure.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

UTC = datetime.UTC
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
MINUTE = 60
HOUR = 3600
#: A bucket is counted into the rollup this long after it ended (late commits, clock skew).
SETTLE_SECONDS = 60


@dataclass(frozen=True)
class Window:
    key: str
    label: str
    width: int
    count: int

    def first_start(self, now: datetime.datetime) -> datetime.datetime:
        """Start of the oldest bucket shown at ``now``."""
        return floor(now, self.width) - datetime.timedelta(seconds=self.width * (self.count - 1))

    def starts(self, now: datetime.datetime) -> list[datetime.datetime]:
        first = self.first_start(now)
        return [first + datetime.timedelta(seconds=self.width * i) for i in range(self.count)]


WINDOWS = {
    w.key: w
    for w in (
        Window("1h", "last hour, per minute", MINUTE, 60),
        Window("24h", "last 24 hours, per hour", HOUR, 24),
        Window("7d", "last 7 days, per hour", HOUR, 168),
    )
}
DEFAULT_WINDOW = "1h"


def window(key: str | None) -> Window:
    """The window named ``key`` (the default for none or an unknown one)."""
    return WINDOWS.get(key or DEFAULT_WINDOW, WINDOWS[DEFAULT_WINDOW])


def index(moment: datetime.datetime, width: int) -> int:
    """The number of the bucket of ``width`` seconds ``moment`` falls in (since the epoch)."""
    return int((moment - EPOCH).total_seconds() // width)


def start_of(number: int, width: int) -> datetime.datetime:
    return EPOCH + datetime.timedelta(seconds=number * width)


def floor(moment: datetime.datetime, width: int) -> datetime.datetime:
    """The start of the bucket ``moment`` falls in."""
    return start_of(index(moment, width), width)


def closed_until(now: datetime.datetime, width: int) -> datetime.datetime:
    """The end of the last closed bucket: every bucket ending at or before it may be counted."""
    return floor(now - datetime.timedelta(seconds=SETTLE_SECONDS), width)
