"""The monitor headers of a run's message (``taskkit.core.headers``): pure, from the row."""

import pytest

from taskkit.core import headers, redaction
from taskkit.core.serialization import TAG

MODEL = {TAG: "model", "model": "shop.order", "pk": 5}
SCRUB = {redaction.SPEC: {"args": [1], "kwargs": ["card"]}}


@pytest.mark.parametrize(
    ("args", "kwargs", "options", "argsrepr", "kwargsrepr"),
    [
        ([], {}, {}, "()", "{}"),
        (["a"], {}, {}, "('a',)", "{}"),
        (["a", 2, None, True], {"n": 1.5}, {}, "('a', 2, None, True)", "{'n': 1.5}"),
        ([MODEL, 0.2], {}, {}, "(<shop.order #5>, 0.2)", "{}"),
        ([{TAG: "decimal", "value": "1.50"}], {}, {}, "(decimal('1.50'),)", "{}"),
        (
            [{TAG: "model", "model": "a.b", "pk": {TAG: "uuid", "value": "u"}}],
            {},
            {},
            "(<a.b #u>,)",
            "{}",
        ),
        (
            [{TAG: "timedelta", "days": 1, "seconds": 2}],
            {},
            {},
            "(timedelta('1 day, 0:00:02'),)",
            "{}",
        ),
        (["ref", "4111"], {"card": "4111"}, SCRUB, "('ref', <sensitive>)", "{'card': <sensitive>}"),
        (
            ["ref", redaction.REDACTED],
            {},
            {**SCRUB, redaction.SCRUBBED: True},
            "('ref', <redacted>)",
            "{}",
        ),
        ([[1, [2, [3, [4, [5]]]]]], {}, {}, "([1, [2, [3, [4, […]]]]],)", "{}"),
        ([{"a": {"b": 1}}], {}, {}, "({'a': {'b': 1}},)", "{}"),
        ("not a list", None, None, "'not a list'", "None"),
    ],
)
def test_argsrepr_and_kwargsrepr_show_the_stored_call_masked(
    args, kwargs, options, argsrepr, kwargsrepr
):
    """Stored values read as Python; tags as short markers; sensitive values never shown."""
    shown = headers.for_run(args, kwargs, options)
    assert (shown.argsrepr, shown.kwargsrepr) == (argsrepr, kwargsrepr)


@pytest.mark.parametrize(
    "args",
    [["x" * 5000], ["y"] * 3000, [list(range(3000))], [{"k" * 10: "v" * 2000}] * 10],
)
def test_long_calls_are_capped(args):
    """Whatever the call's size, each repr is at most MAX_REPR characters and ends with …."""
    shown = headers.for_run(args, {"big": args}, {})
    for text in (shown.argsrepr, shown.kwargsrepr):
        assert len(text) <= headers.MAX_REPR
        assert text.endswith("…") or text.endswith("…)") or text.endswith("…}")


@pytest.mark.parametrize(
    ("options", "attempts", "root", "parent", "retries"),
    [
        ({}, 0, "RUN", None, 0),
        ({}, 9, "RUN", None, 9),
        (headers.origin_options("P", None), 0, "P", "P", 0),
        (headers.origin_options("P", "R"), 3, "R", "P", 3),
        ({"parent_id": 5, "root_id": []}, -1, "RUN", None, 0),  # garbage is ignored
    ],
)
def test_root_parent_and_retries(options, attempts, root, parent, retries):
    """A run dispatched from another names it (and its root); otherwise it is its own root."""
    published = headers.for_run([], {}, options, attempts).publish_options("RUN")
    assert published["root_id"] == root
    assert published["parent_id"] == parent
    assert published["retries"] == retries


@pytest.mark.parametrize(
    "text", ["abc", 'a"b', "a\\b", "é", "\x00", "\t", "('x', 1)", "<sensitive>", "\u2028", ""]
)
def test_spliced_values_are_encoded_as_kombu_encodes_them(text):
    """Message copies splice each run's texts into one encoded message: same JSON as kombu's."""
    from kombu.utils.json import dumps

    from taskkit.producer.templates import _quote

    assert _quote(text) == dumps(text)
