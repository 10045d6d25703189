"""Latency sketches: a mergeable histogram on a log scale, for commit-to-start percentiles.

A value of ``ms`` milliseconds falls in bin ``floor(ln(max(ms, 1)) / ln(GAMMA))``; a bin stands
for its geometric middle, so a percentile read from a sketch is within about 5% of the true one
(``GAMMA`` = 1.1), whatever the range. Sketches of buckets and tasks add up bin by bin, which a
sorted sample or a stored percentile cannot. Stored as JSON ``{"bin": count}``.

Everything here is pure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

#: Ratio between the bounds of a bin: the relative error of a percentile is at most sqrt(GAMMA) - 1.
GAMMA = 1.1
_LOG_GAMMA = math.log(GAMMA)

Sketch = dict[str, int]


def bin_of(seconds: float) -> int:
    """The bin of a latency in seconds (under a millisecond counts as one millisecond)."""
    return math.floor(math.log(max(seconds * 1000.0, 1.0)) / _LOG_GAMMA)


def value_of(bin_: int) -> float:
    """The latency in seconds a bin stands for (its geometric middle)."""
    if bin_ <= 0:
        return 0.001
    return GAMMA ** (bin_ + 0.5) / 1000.0


def add(sketch: Sketch, bin_: int, count: int = 1) -> None:
    key = str(bin_)
    sketch[key] = sketch.get(key, 0) + count


def add_all(sketch: Sketch, other: Mapping[str, int]) -> None:
    """Add ``other`` into ``sketch``, in place."""
    for key, n in other.items():
        sketch[key] = sketch.get(key, 0) + n


def merge(sketches: Iterable[Mapping[str, int]]) -> Sketch:
    out: Sketch = {}
    for sketch in sketches:
        for key, count in sketch.items():
            out[key] = out.get(key, 0) + int(count)
    return out


def of(seconds: Iterable[float]) -> Sketch:
    out: Sketch = {}
    for value in seconds:
        add(out, bin_of(value))
    return out


def count(sketch: Mapping[str, int]) -> int:
    return sum(int(n) for n in sketch.values())


def quantile(sketch: Mapping[str, int], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) in seconds, or ``None`` for an empty sketch."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q!r} is not between 0 and 1")
    total = count(sketch)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for key in sorted(sketch, key=int):
        seen += int(sketch[key])
        if seen >= rank:
            return value_of(int(key))
    return value_of(int(max(sketch, key=int)))  # pragma: no cover - rank <= total
