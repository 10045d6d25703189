"""Unit tests of the pure pieces of secrets handling: ``sensitive=`` validation, scrub specs,
masking of stored values and error text (taskkit/redaction.py), the result cap."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from taskkit.core import redaction
from taskkit.core.exceptions import ConfigurationError, InvalidIdempotencyKey, RedactedError
from taskkit.core.serialization import cap_result
from taskkit.task import reliable_task

R = {"__taskkit__": "redacted"}
M = {"__taskkit__": "sensitive"}


def charge(order, card, cvv=None, *, note=""):
    pass


def variadic(kind, *secrets, token=None, **extra):
    pass


# -- sensitive= at decoration time -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sensitive", "message"),
    [
        (("crad",), "'crad' is not a parameter of .*charge \\(did you mean 'card'\\?\\)"),
        (("pin",), "'pin' is not a parameter of .*charge; its parameters are order, card, cvv"),
        ((1,), "pass parameter names as str"),
        (("",), "pass parameter names as str"),
    ],
)
def test_bad_sensitive_names_fail_at_decoration(sensitive: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        reliable_task(name=f"unit.redaction.bad.{sensitive!r}", sensitive=sensitive)(charge)


@pytest.mark.parametrize(
    ("sensitive", "kept"),
    [
        ("card", ("card",)),  # one name as a str
        (("card", "cvv", "card"), ("card", "cvv")),  # duplicates dropped, order kept
        (["note"], ("note",)),  # keyword-only
        ((), ()),
    ],
)
def test_sensitive_names_are_kept_on_the_task(sensitive: Any, kept: tuple[str, ...]) -> None:
    task = reliable_task(name=f"unit.redaction.ok.{sensitive!r}", sensitive=sensitive)(charge)
    assert task.sensitive == kept


def test_a_misspelt_option_suggests_sensitive() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'sensitive'"):
        reliable_task(name="unit.redaction.sensitve", sensitve=("card",))


# -- scrub specs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("func", "sensitive", "nargs", "keys", "spec"),
    [
        (charge, ("card",), 2, [], {"args": [1], "kwargs": []}),
        (charge, ("card",), 1, ["card"], {"args": [], "kwargs": ["card"]}),
        (charge, ("card", "cvv"), 3, [], {"args": [1, 2], "kwargs": []}),
        (charge, ("cvv",), 2, [], None),  # not passed: nothing to scrub
        (charge, ("note",), 2, ["note"], {"args": [], "kwargs": ["note"]}),
        (charge, (), 2, [], None),
        (variadic, ("secrets",), 4, [], {"args": [1, 2, 3], "kwargs": []}),
        (variadic, ("extra",), 1, ["token", "a", "b"], {"args": [], "kwargs": ["a", "b"]}),
        (variadic, ("token",), 1, ["token", "a"], {"args": [], "kwargs": ["token"]}),
        (variadic, ("kind",), 3, [], {"args": [0], "kwargs": []}),
    ],
)
def test_spec_for_a_call(func, sensitive, nargs, keys, spec) -> None:
    assert redaction.spec_for(inspect.signature(func), sensitive, nargs, keys) == spec


@pytest.mark.parametrize(
    ("args", "kwargs", "options", "fields"),
    [
        # positions and keys replaced; the spec kept, the row marked scrubbed
        (
            ["o", "4111"],
            {"cvv": "123", "x": 1},
            {"queue": "q", "sensitive": {"args": [1], "kwargs": ["cvv"]}},
            {
                "args": ["o", R],
                "kwargs": {"cvv": R, "x": 1},
                "options": {
                    "queue": "q",
                    "sensitive": {"args": [1], "kwargs": ["cvv"]},
                    "sensitive_scrubbed": True,
                },
            },
        ),
        (["o"], {}, {"queue": "q"}, {}),  # no spec: nothing to write
        (  # already scrubbed: nothing to write
            ["o", R],
            {},
            {"sensitive": {"args": [1], "kwargs": []}, "sensitive_scrubbed": True},
            {},
        ),
        (  # a spec pointing past the stored values (a damaged row) is ignored, not a crash
            ["o"],
            {},
            {"sensitive": {"args": [5], "kwargs": ["gone"]}},
            {
                "args": ["o"],
                "kwargs": {},
                "options": {
                    "sensitive": {"args": [5], "kwargs": ["gone"]},
                    "sensitive_scrubbed": True,
                },
            },
        ),
    ],
)
def test_scrubbed_fields(args, kwargs, options, fields) -> None:
    assert redaction.scrubbed_fields(args, kwargs, options) == fields
    assert args[0] == "o"  # the inputs are not modified


@pytest.mark.parametrize(
    ("args", "kwargs", "options", "shown"),
    [
        (["o", "4111"], {}, {"sensitive": {"args": [1], "kwargs": []}}, (["o", M], {})),
        (
            ["o"],
            {"card": "4111"},
            {"sensitive": {"args": [], "kwargs": ["card"]}},
            (["o"], {"card": M}),
        ),
        (["o", "4111"], {}, {}, (["o", "4111"], {})),
        (["o", R], {}, {"sensitive": {"args": [1]}, "sensitive_scrubbed": True}, (["o", R], {})),
    ],
)
def test_for_display(args, kwargs, options, shown) -> None:
    assert redaction.for_display(args, kwargs, options) == shown


# -- secrets in text -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "spec", "texts"),
    [
        (["o", "4111222233334444"], {}, {"args": [1]}, ["4111222233334444"]),
        (["o", 123456789], {}, {"args": [1]}, ["123456789"]),
        (["o", "abc"], {}, {"args": [1]}, []),  # too short to search for
        ([], {"c": {"n": "4111", "exp": "12/29"}}, {"kwargs": ["c"]}, ["12/29", "4111"]),
        ([], {"c": ["secret1", True, None]}, {"kwargs": ["c"]}, ["secret1"]),
        (  # a tagged value: its payload, not its tag name
            [{"__taskkit__": "decimal", "value": "1234.50"}],
            {},
            {"args": [0]},
            ["1234.50"],
        ),
        (  # a model reference: its pk
            [{"__taskkit__": "model", "model": "shop.Card", "pk": 98765}],
            {},
            {"args": [0]},
            ["98765"],
        ),
        (["it's-secret\n"], {}, {"args": [0]}, ["it's-secret\\n", "it's-secret\n"]),
        (["o", "4111"], {}, None, []),
    ],
)
def test_secret_texts(args, kwargs, spec, texts) -> None:
    assert redaction.secret_texts(args, kwargs, spec) == texts


@pytest.mark.parametrize(
    ("text", "secrets", "masked"),
    [
        ("card 4111222233334444 declined", ["4111222233334444"], "card [sensitive] declined"),
        ("a 4111 b 4111", ["4111"], "a [sensitive] b [sensitive]"),
        ("nothing here", ["4111"], "nothing here"),
        ("x 12345 y", ["12345", "1234"], "x [sensitive] y"),  # longest first
    ],
)
def test_mask_text(text, secrets, masked) -> None:
    assert redaction.mask_text(text, secrets) == masked


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_mask_exception_replaces_only_an_exception_that_holds_a_secret() -> None:
    clean = _raised(ValueError("declined"))
    assert redaction.mask_exception(clean, ["4111222233334444"]) is clean
    assert redaction.mask_exception(clean, []) is clean

    leaky = _raised(ValueError("card 4111222233334444 declined"))
    masked = redaction.mask_exception(leaky, ["4111222233334444"])
    assert isinstance(masked, RedactedError)
    assert str(masked) == "builtins.ValueError: card [sensitive] declined"
    assert masked.original_type == "builtins.ValueError"
    assert masked.__traceback__ is leaky.__traceback__


def test_mask_exception_looks_at_the_whole_chain() -> None:
    try:
        try:
            int("4111222233334444x")
        except ValueError as inner:
            raise RuntimeError("charge failed") from inner
    except RuntimeError as outer:
        masked = redaction.mask_exception(outer, ["4111222233334444"])
    assert isinstance(masked, RedactedError)
    assert str(masked) == "builtins.RuntimeError: charge failed"


def test_check_key() -> None:
    redaction.check_key("t", "charge:o-1", ["4111222233334444"])
    with pytest.raises(InvalidIdempotencyKey, match="contains the value of a sensitive argument"):
        redaction.check_key("t", "charge:4111222233334444", ["4111222233334444"])


# -- the result cap --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "limit", "capped"),
    [
        (None, 1, (None, None)),
        (12345678901234567890, 4, (12345678901234567890, None)),  # scalars are never measured
        ("abc", 100, ("abc", None)),
        ("abcdef", 7, ({"__taskkit__": "omitted", "bytes": 8, "limit": 7}, 8)),
        ("abcdef", 8, ("abcdef", None)),
        (["é"], 10, (["é"], None)),  # measured as ASCII JSON: ["\u00e9"] is 10 bytes
        (["é"], 9, ({"__taskkit__": "omitted", "bytes": 10, "limit": 9}, 10)),
        ("\U0001f600", 13, ({"__taskkit__": "omitted", "bytes": 14, "limit": 13}, 14)),
        ({"a": "x" * 10}, 10, ({"__taskkit__": "omitted", "bytes": 18, "limit": 10}, 18)),
    ],
)
def test_cap_result(value, limit, capped) -> None:
    assert cap_result(value, limit) == capped
