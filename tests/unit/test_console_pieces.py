"""The console's pure pieces: search parsing, bucket maths, latency sketches and percentiles."""

from __future__ import annotations

import datetime
import itertools
import uuid

import pytest

from taskkit.admin.search import Search, SearchError, parse
from taskkit.core import buckets, sketch

pytestmark = pytest.mark.timeout(30)

UTC = datetime.UTC


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("", None),
        ("   ", None),
        ("3f2a9c1e", Search("any", "3f2a9c1e")),
        ("id:3f2a", Search("id", "3f2a")),
        ("ID: 3f2a9c1e-77", Search("id", "3f2a9c1e-77")),
        ("key:order-42", Search("key", "order-42")),
        ("key:a:b:c", Search("key", "a:b:c")),
        ("error:card declined", Search("error", "card declined")),
        ("class:CardDeclined", Search("class", "CardDeclined")),
        ("arg:42", Search("arg", "42")),
        ("arg:order_id=42", Search("arg", "42", "order_id")),
        ("arg: order_id = 42 ", Search("arg", "42", "order_id")),
        ("arg:a=b=c", Search("arg", "b=c", "a")),
        ("arg:x y=1", Search("arg", "x y=1")),  # not a name: a positional value
        ("task:billing", Search("task", "billing")),
        ("unknown:thing", Search("any", "unknown:thing")),
        ("charge:1001", Search("any", "charge:1001")),
    ],
)
def test_parse(term, expected):
    """What a search term asks for."""
    assert parse(term) == expected


@pytest.mark.parametrize("term", ["key:", "error:  ", "id:xyz", "id:12", "arg:"])
def test_parse_refuses_with_a_hint(term):
    """An empty or impossible term says how to write it."""
    with pytest.raises(SearchError, match=r"write|hex digits"):
        parse(term)


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("3f2a9c1e", "3f2a9c1e" + "0" * 24, "3f2a9c1e" + "f" * 24),
        ("3F2A", "3f2a" + "0" * 28, "3f2a" + "f" * 28),
        ("3f2a9c1e-77aa", "3f2a9c1e77aa" + "0" * 20, "3f2a9c1e77aa" + "f" * 20),
        ("0" * 32, "0" * 32, "0" * 32),
    ],
)
def test_id_prefix_range(text, low, high):
    assert Search("id", text).id_range == (uuid.UUID(low), uuid.UUID(high))


@pytest.mark.parametrize("text", ["abc", "xyz12345", "3f2a9c1e3f2a9c1e3f2a9c1e3f2a9c1e0"])
def test_no_id_range_for_what_is_not_an_id_prefix(text):
    assert Search("id", text).id_range is None


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("42", [42, "42"]),
        ("4.5", [4.5, "4.5"]),
        ('"42"', ["42"]),
        ("EUR", ["EUR"]),
        ("true", [True]),
        ("null", [None]),
        ('{"a": 1}', [{"a": 1}]),
    ],
)
def test_argument_values(text, values):
    """An argument term matches its JSON value, and a number its text as well."""
    assert Search("arg", text).values == values


T = datetime.datetime(2026, 11, 26, 13, 47, 31, 500_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("width", "start"),
    [
        (60, datetime.datetime(2026, 11, 26, 13, 47, tzinfo=UTC)),
        (3600, datetime.datetime(2026, 11, 26, 13, 0, tzinfo=UTC)),
    ],
)
def test_floor_and_index(width, start):
    assert buckets.floor(T, width) == start
    assert buckets.start_of(buckets.index(T, width), width) == start
    assert buckets.floor(start, width) == start  # a start is its own bucket
    assert buckets.floor(start - datetime.timedelta(microseconds=1), width) < start


def test_a_bucket_closes_a_settle_time_after_it_ends():
    end = datetime.datetime(2026, 11, 26, 13, 48, tzinfo=UTC)
    settle = datetime.timedelta(seconds=buckets.SETTLE_SECONDS)
    assert buckets.closed_until(end + settle, 60) == end
    assert buckets.closed_until(end + settle - datetime.timedelta(seconds=1), 60) == end - (
        datetime.timedelta(minutes=1)
    )


@pytest.mark.parametrize(
    ("key", "count", "first"),
    [
        ("1h", 60, datetime.datetime(2026, 11, 26, 12, 48, tzinfo=UTC)),
        ("24h", 24, datetime.datetime(2026, 11, 25, 14, 0, tzinfo=UTC)),
        ("7d", 168, datetime.datetime(2026, 11, 19, 14, 0, tzinfo=UTC)),
        ("nonsense", 60, datetime.datetime(2026, 11, 26, 12, 48, tzinfo=UTC)),
    ],
)
def test_windows_end_with_the_open_bucket(key, count, first):
    window = buckets.window(key)
    starts = window.starts(T)
    assert len(starts) == count
    assert starts[0] == first
    assert starts[-1] == buckets.floor(T, window.width)
    assert all(
        b - a == datetime.timedelta(seconds=window.width) for a, b in itertools.pairwise(starts)
    )


@pytest.mark.parametrize("seconds", [0.0005, 0.001, 0.0123, 0.5, 1.0, 2.5, 60.0, 3600.0, 86400.0])
def test_a_bin_stands_for_its_values_within_five_percent(seconds):
    represented = sketch.value_of(sketch.bin_of(seconds))
    assert represented == pytest.approx(max(seconds, 0.001), rel=0.05)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1.0] * 99 + [10.0], 0.5, 1.0),
        ([1.0] * 99 + [10.0], 0.99, 1.0),
        ([1.0] * 98 + [10.0] * 2, 0.99, 10.0),
        ([1.0] * 98 + [10.0] * 2, 1.0, 10.0),
        ([0.2, 0.4, 0.6, 0.8, 1.0], 0.5, 0.6),
        ([0.2, 0.4, 0.6, 0.8, 1.0], 0.0, 0.2),
        ([5.0], 0.99, 5.0),
    ],
)
def test_quantiles_nearest_rank(values, q, expected):
    assert sketch.quantile(sketch.of(values), q) == pytest.approx(expected, rel=0.05)


def test_sketches_merge_bin_by_bin():
    """Merging per-bucket sketches gives the sketch of all their values."""
    a, b = [0.1, 0.2, 3.0], [0.2, 7.0]
    assert sketch.merge([sketch.of(a), sketch.of(b)]) == sketch.of(a + b)
    assert sketch.count(sketch.merge([])) == 0
    assert sketch.quantile({}, 0.5) is None


def test_a_quantile_out_of_range_is_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        sketch.quantile({"1": 1}, 1.5)
