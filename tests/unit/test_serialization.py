"""Unit tests of taskkit.core.serialization: exact round-trips, refusals that name the argument."""

from __future__ import annotations

import datetime
import inspect
import io
import json
import re
import uuid
from decimal import Decimal
from typing import Any

import pytest

from taskkit.core.exceptions import (
    MissingObject,
    PayloadTooLarge,
    ResultNotSerializable,
    UndecodableCall,
    UnsafeArgument,
)
from taskkit.core.serialization import (
    MAX_DEPTH,
    MAX_INT,
    MIN_INT,
    TAG,
    decode,
    decode_call,
    encode,
    encode_call,
    encode_result,
)
from tests.testapp.models import Order

UTC = datetime.UTC
IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30))


def through_json(value: Any) -> Any:
    """Encode ``value``, send it through a JSON string as a broker would, and decode it."""
    return decode(json.loads(json.dumps(encode(value, "argument 'x'"))))


ROUND_TRIPS = [
    pytest.param("text", id="str"),
    pytest.param("", id="empty-str"),
    pytest.param(42, id="int"),
    pytest.param(-(2**63), id="smallest-int"),
    pytest.param(2**63 - 1, id="largest-int"),
    pytest.param(True, id="bool"),
    pytest.param(None, id="none"),
    pytest.param(1.5, id="float"),
    pytest.param(Decimal("9.99"), id="decimal"),
    pytest.param(Decimal("1E+3"), id="decimal-exponent"),
    pytest.param(Decimal("-12.50"), id="decimal-negative-trailing-zero"),
    pytest.param(Decimal("-0"), id="decimal-negative-zero"),
    pytest.param(uuid.UUID("12345678-1234-5678-1234-567812345678"), id="uuid"),
    pytest.param(datetime.datetime(2024, 3, 1, 12, 30, 5, 123456, tzinfo=UTC), id="aware-utc"),
    pytest.param(datetime.datetime(2024, 3, 1, 12, 30, tzinfo=IST), id="aware-offset"),
    pytest.param(datetime.datetime(2024, 3, 1, 12, 30, 5, 7), id="naive-datetime"),
    pytest.param(datetime.date(1999, 12, 31), id="date"),
    pytest.param(datetime.time(23, 59, 58, 999), id="time"),
    pytest.param(datetime.time(8, 0, tzinfo=IST), id="aware-time"),
    pytest.param(datetime.timedelta(days=2, seconds=5, microseconds=7), id="timedelta"),
    pytest.param(datetime.timedelta(seconds=-1), id="negative-timedelta"),
    pytest.param([1, "a", None, [Decimal("0.1"), {"k": []}]], id="nested-list"),
    pytest.param(
        {"when": datetime.date(2020, 1, 2), "items": [{"id": uuid.UUID(int=7)}], "empty": {}},
        id="nested-dict",
    ),
]


@pytest.mark.parametrize("value", ROUND_TRIPS)
def test_round_trip_is_exact(value: Any) -> None:
    """Every supported value decodes to an equal value of the same type and representation."""
    decoded = through_json(value)
    assert decoded == value
    assert type(decoded) is type(value)
    assert repr(decoded) == repr(value)  # Decimal('1E+3') != Decimal('1000.') in repr


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(datetime.datetime(2024, 3, 1, 12, 30, tzinfo=IST), id="aware"),
        pytest.param(datetime.datetime(2024, 3, 1, 12, 30), id="naive"),
        pytest.param(datetime.time(8, 0, tzinfo=UTC), id="aware-time"),
    ],
)
def test_round_trip_keeps_awareness_and_offset(value: datetime.datetime | datetime.time) -> None:
    """An aware value stays aware with the same UTC offset; a naive value stays naive."""
    decoded = through_json(value)
    assert (decoded.tzinfo is None) == (value.tzinfo is None)
    assert decoded.utcoffset() == value.utcoffset()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param((1, 2), [1, 2], id="tuple"),
        pytest.param((), [], id="empty-tuple"),
        pytest.param({"t": (Decimal("1.0"), ("x",))}, {"t": [Decimal("1.0"), ["x"]]}, id="nested"),
    ],
)
def test_tuples_become_lists(value: Any, expected: Any) -> None:
    """Tuples travel as JSON arrays and come back as lists (recursively)."""
    decoded = through_json(value)
    assert decoded == expected
    assert type(decoded) is type(expected)


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        (Decimal("9.99"), "decimal"),
        (uuid.UUID(int=1), "uuid"),
        (datetime.datetime(2024, 1, 1, tzinfo=UTC), "datetime"),
        (datetime.date(2024, 1, 1), "date"),
        (datetime.time(1, 2), "time"),
        (datetime.timedelta(hours=1), "timedelta"),
    ],
)
def test_non_json_types_are_tagged(value: Any, tag: str) -> None:
    """Types JSON lacks are encoded as a dict carrying the reserved tag key, never as str()."""
    encoded = encode(value, "argument 'x'")
    assert isinstance(encoded, dict)
    assert encoded[TAG] == tag


UNSAFE = [
    pytest.param({1, 2}, "sorted(", id="set"),
    pytest.param(frozenset({1}), "sorted(", id="frozenset"),
    pytest.param(b"raw", "base64", id="bytes"),
    pytest.param(bytearray(b"raw"), "base64", id="bytearray"),
    pytest.param(object(), "pass JSON values", id="object"),
    pytest.param(lambda: None, "functions and classes", id="lambda"),
    pytest.param(Order, "functions and classes", id="class"),
    pytest.param(io.StringIO("content"), "open files", id="open-file"),
    pytest.param(float("nan"), "finite number", id="nan"),
    pytest.param(float("inf"), "finite number", id="inf"),
    pytest.param(float("-inf"), "finite number", id="minus-inf"),
    pytest.param(Decimal("NaN"), "finite Decimal", id="decimal-nan"),
    pytest.param(Decimal("Infinity"), "finite Decimal", id="decimal-inf"),
    pytest.param({1: "a"}, "string keys", id="int-key"),
    pytest.param({("a", "b"): 1}, "string keys", id="tuple-key"),
    pytest.param({TAG: "decimal", "value": "1"}, "reserved key", id="reserved-key"),
    pytest.param(iter([1, 2]), "pass JSON values", id="iterator"),
]


@pytest.mark.parametrize(("value", "hint"), UNSAFE)
def test_unsafe_value_is_refused_with_a_hint(value: Any, hint: str) -> None:
    """A value that cannot travel raises UnsafeArgument (a TypeError) naming it, with a fix."""
    with pytest.raises(UnsafeArgument) as excinfo:
        encode(value, "argument 'order'")
    assert isinstance(excinfo.value, TypeError)
    message = str(excinfo.value)
    assert message.startswith("argument 'order'")
    assert hint in message


@pytest.mark.parametrize(
    ("value", "path"),
    [
        pytest.param([1, {2}], "argument 'x'[1] ", id="list-index"),
        pytest.param((0, 0, b""), "argument 'x'[2] ", id="tuple-index"),
        pytest.param({"a": {"b": [object()]}}, "argument 'x'['a']['b'][0] ", id="nested-dict"),
        pytest.param({"a": {3: 1}}, "argument 'x'['a'] has the key 3", id="nested-key"),
        pytest.param([{"ok": 1}, {TAG: 1}], "argument 'x'[1] uses the reserved key", id="tag"),
        pytest.param({"f": float("nan")}, "argument 'x'['f'] is nan", id="nested-nan"),
    ],
)
def test_refusal_names_the_nested_path(value: Any, path: str) -> None:
    """The refusal message locates the offending item inside nested lists and dicts."""
    with pytest.raises(UnsafeArgument, match=r"^" + re.escape(path)):
        encode(value, "argument 'x'")


# --- model instances -------------------------------------------------------------------------


@pytest.mark.django_db
def test_saved_instance_travels_as_reference() -> None:
    """A saved model instance encodes to a (label, pk) reference, never to its field values."""
    order = Order.objects.create(reference="A-1", amount=Decimal("9.99"))
    assert encode(order, "argument 'order'") == {
        TAG: "model",
        "model": "testapp.Order",
        "pk": order.pk,
    }


@pytest.mark.django_db
def test_saved_instance_is_refetched_on_decode() -> None:
    """Decoding a reference fetches the current row: an equal instance with fresh field values."""
    order = Order.objects.create(reference="A-2", amount=Decimal("1.00"))
    encoded = json.loads(json.dumps(encode({"order": order}, "argument 'x'")))
    Order.objects.filter(pk=order.pk).update(note="changed after dispatch")
    decoded = decode(encoded)["order"]
    assert type(decoded) is Order
    assert decoded == order
    assert decoded is not order
    assert decoded.reference == "A-2"
    assert decoded.amount == Decimal("1.00")
    assert decoded.note == "changed after dispatch"


@pytest.mark.django_db
def test_unsaved_instance_is_refused() -> None:
    """An unsaved instance raises UnsafeArgument that names the argument and says 'unsaved'."""
    with pytest.raises(UnsafeArgument, match=r"^argument 'order' is an unsaved testapp\.Order"):
        encode(Order(reference="new"), "argument 'order'")


@pytest.mark.django_db
def test_instance_with_pk_but_never_saved_is_refused() -> None:
    """An instance given a pk by hand but never saved is still refused as unsaved."""
    with pytest.raises(UnsafeArgument, match="unsaved"):
        encode(Order(pk=12345, reference="new"), "argument 'order'")


@pytest.mark.django_db
def test_deleted_instance_raises_missing_object_on_decode() -> None:
    """A reference whose row was deleted after encoding raises MissingObject naming model and pk."""
    order = Order.objects.create(reference="gone")
    pk = order.pk
    encoded = encode([order], "argument 'x'")
    Order.objects.filter(pk=pk).delete()
    with pytest.raises(MissingObject, match=rf"testapp\.Order with pk={pk}\b") as excinfo:
        decode(encoded)
    assert isinstance(excinfo.value, LookupError)


@pytest.mark.django_db
def test_deleted_instance_cannot_be_encoded() -> None:
    """An instance deleted before dispatch (its pk reset to None) is refused as deleted."""
    order = Order.objects.create(reference="gone")
    order.delete()
    with pytest.raises(UnsafeArgument, match=r"is a deleted testapp\.Order instance"):
        encode(order, "argument 'order'")


# --- encode_call -------------------------------------------------------------------------------


def _charge(order_id: int, amount: Decimal, *extra: Any, note: str = "", **options: Any) -> None:
    """A task function with every kind of parameter."""


CHARGE = inspect.signature(_charge)
BIG = 10_000


@pytest.mark.parametrize(
    ("args", "kwargs", "expected_args", "expected_kwargs"),
    [
        pytest.param(
            (1, Decimal("2.50")), {}, [1, {TAG: "decimal", "value": "2.50"}], {}, id="positional"
        ),
        pytest.param(
            (),
            {"order_id": 1, "amount": Decimal("1")},
            [],
            {"order_id": 1, "amount": {TAG: "decimal", "value": "1"}},
            id="keywords",
        ),
        pytest.param(
            (1, Decimal("1"), "x", ("y",)),
            {"note": "n", "other": [1]},
            [1, {TAG: "decimal", "value": "1"}, "x", ["y"]],
            {"note": "n", "other": [1]},
            id="varargs-and-varkw",
        ),
    ],
)
def test_encode_call_encodes_a_valid_call(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    expected_args: list[Any],
    expected_kwargs: dict[str, Any],
) -> None:
    """A call the signature accepts encodes to JSON args and kwargs, keeping the split."""
    assert encode_call(CHARGE, "shop.charge", args, kwargs, BIG) == (expected_args, expected_kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "problem"),
    [
        pytest.param((1,), {}, "missing a required argument: 'amount'", id="missing"),
        pytest.param(
            (), {"amount": 1}, "missing a required argument: 'order_id'", id="missing-first"
        ),
        pytest.param(
            (1, 2), {"order_id": 1}, "multiple values for argument 'order_id'", id="duplicate"
        ),
    ],
)
def test_encode_call_rejects_a_call_the_function_cannot_accept(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    problem: str,
) -> None:
    """A call that does not bind raises TypeError prefixed with the task's name."""
    with pytest.raises(TypeError) as excinfo:
        encode_call(CHARGE, "shop.charge", args, kwargs, BIG)
    assert not isinstance(excinfo.value, UnsafeArgument)
    assert str(excinfo.value) == f"shop.charge: {problem}"


def test_encode_call_rejects_unexpected_keyword() -> None:
    """A keyword the function does not take is a TypeError naming the task and the keyword."""

    def fixed(a: int) -> None:
        """No **kwargs."""

    with pytest.raises(TypeError, match=r"^shop\.fixed: .*'b'"):
        encode_call(inspect.signature(fixed), "shop.fixed", (1,), {"b": 2}, BIG)


def test_encode_call_rejects_too_many_positional_args() -> None:
    """Extra positional arguments without *args are a TypeError naming the task."""

    def fixed(a: int) -> None:
        """No *args."""

    with pytest.raises(TypeError, match=r"^shop\.fixed: too many positional arguments"):
        encode_call(inspect.signature(fixed), "shop.fixed", (1, 2), {}, BIG)


@pytest.mark.parametrize(
    ("args", "kwargs", "where"),
    [
        pytest.param(
            ({1},), {"amount": 1}, "argument 'order_id' of shop.charge()", id="first-positional"
        ),
        pytest.param((1, b"x"), {}, "argument 'amount' of shop.charge()", id="second-positional"),
        pytest.param(
            (1, 2, "ok", {3}), {}, "argument '*args[1]' of shop.charge()", id="extra-positional"
        ),
        pytest.param((1, 2), {"note": object()}, "argument 'note' of shop.charge()", id="keyword"),
        pytest.param(
            (1, 2),
            {"other": [float("nan")]},
            "argument 'other' of shop.charge()[0]",
            id="var-keyword-nested",
        ),
    ],
)
def test_encode_call_names_the_unsafe_argument(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    where: str,
) -> None:
    """An unsafe argument is named by its parameter name, or *args[i] for extra positionals."""
    with pytest.raises(UnsafeArgument) as excinfo:
        encode_call(CHARGE, "shop.charge", args, kwargs, BIG)
    assert str(excinfo.value).startswith(where + " ")


def test_encode_call_without_signature_names_positionals_by_index() -> None:
    """Without a signature nothing is bound and positional arguments are named '#i'."""
    assert encode_call(None, "t", (1,), {"k": 2}, BIG) == ([1], {"k": 2})
    with pytest.raises(UnsafeArgument, match=r"^argument '#1' of t\(\) "):
        encode_call(None, "t", (1, {2}), {}, BIG)


@pytest.mark.parametrize(
    ("max_bytes", "too_large"),
    [
        # [["abcd"],{}] is 13 bytes of compact JSON.
        pytest.param(13, False, id="exactly-at-limit"),
        pytest.param(12, True, id="one-byte-over"),
        pytest.param(1, True, id="far-over"),
    ],
)
def test_encode_call_enforces_max_bytes(max_bytes: int, too_large: bool) -> None:
    """Arguments over max_bytes as compact JSON raise PayloadTooLarge naming task and sizes."""

    def task(text: str) -> None:
        """One argument."""

    call = (inspect.signature(task), "shop.task", ("abcd",), {}, max_bytes)
    if not too_large:
        assert encode_call(*call) == (["abcd"], {})
        return
    with pytest.raises(PayloadTooLarge) as excinfo:
        encode_call(*call)
    assert isinstance(excinfo.value, ValueError)
    message = str(excinfo.value)
    assert "shop.task()" in message
    assert "13 bytes" in message
    assert f"limit of {max_bytes}" in message


# --- encode_result -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            {"total": Decimal("3.30")}, {"total": {TAG: "decimal", "value": "3.30"}}, id="dict"
        ),
        pytest.param(None, None, id="none"),
        pytest.param((1, 2), [1, 2], id="tuple"),
    ],
)
def test_encode_result_encodes_json_values(value: Any, expected: Any) -> None:
    """A JSON-able return value is encoded like an argument."""
    assert encode_result(value, "shop.task") == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({1, 2}, id="set"),
        pytest.param(b"x", id="bytes"),
        pytest.param(float("nan"), id="nan"),
        pytest.param({1: 2}, id="int-key"),
        pytest.param([object()], id="nested-object"),
    ],
)
def test_encode_result_refuses_non_json(value: Any) -> None:
    """A return value that cannot be stored raises ResultNotSerializable naming the task."""
    with pytest.raises(ResultNotSerializable) as excinfo:
        encode_result(value, "shop.task")
    assert not isinstance(excinfo.value, UnsafeArgument)
    assert str(excinfo.value).startswith("the return value of shop.task()")


# --- limits: what databases cannot store faithfully --------------------------------------------


def nested(depth: int, kind: str = "list") -> Any:
    """``depth`` lists (or dicts) inside each other around 1."""
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


LIMITS = [
    # (value, accepted?, words the refusal must contain)
    pytest.param(MAX_INT, True, "", id="max-int"),
    pytest.param(MIN_INT, True, "", id="min-int"),
    pytest.param(MAX_INT + 1, False, "64-bit", id="max-int-plus-1"),
    pytest.param(MIN_INT - 1, False, "64-bit", id="min-int-minus-1"),
    pytest.param(10**5000, False, "64-bit", id="int-too-long-to-print"),
    pytest.param([1, 2**64], False, "64-bit", id="nested-big-int"),
    pytest.param(True, True, "", id="bool"),
    pytest.param(nested(MAX_DEPTH), True, "", id="list-at-depth-limit"),
    pytest.param(nested(MAX_DEPTH, "dict"), True, "", id="dict-at-depth-limit"),
    pytest.param(nested(MAX_DEPTH + 1), False, f"more than {MAX_DEPTH} levels", id="list-deeper"),
    pytest.param(
        nested(MAX_DEPTH + 1, "dict"), False, f"more than {MAX_DEPTH} levels", id="dict-deeper"
    ),
    pytest.param(nested(5000), False, f"more than {MAX_DEPTH} levels", id="list-5000-deep"),
    pytest.param("a\x00b", False, "NUL character", id="nul"),
    pytest.param({"a\x00": 1}, False, "NUL character", id="nul-in-key"),
    pytest.param(["ok", "\ud800"], False, "lone surrogate", id="lone-high-surrogate"),
    pytest.param("x\udc80", False, "lone surrogate", id="lone-low-surrogate"),
    pytest.param({"\udfff": 1}, False, "lone surrogate", id="surrogate-in-key"),
    pytest.param("\U0001f600 é \ufffe \x01", True, "", id="astral-and-control-chars"),
    pytest.param("x" * 100_000, True, "", id="long-str"),
]


@pytest.mark.parametrize(("value", "accepted", "words"), LIMITS)
def test_limits_of_what_travels(value: Any, accepted: bool, words: str) -> None:
    """Integers beyond 64 bits, nesting beyond MAX_DEPTH, NUL and lone surrogates are refused
    (PostgreSQL's jsonb refuses the strings; SQLite's JSON rounds big ints and cuts at NUL)."""
    if accepted:
        assert through_json(value) == value
        return
    with pytest.raises(UnsafeArgument) as excinfo:
        encode(value, "argument 'x'")
    message = str(excinfo.value)
    assert message.startswith("argument 'x'") or message.startswith("a key of argument 'x'")
    assert words in message
    message.encode("utf-8")  # the refusal itself can always be logged


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 900, 5000])
def test_decode_refuses_what_dispatch_would_refuse_whatever_the_python(levels: int) -> None:
    """A stored value nested deeper than MAX_DEPTH (written before the limit) is undecodable,
    decided by the limit itself, not by Python's recursion limit (which differs by version)."""
    with pytest.raises(UndecodableCall, match="nested too deeply to decode"):
        decode(nested(levels))
    with pytest.raises(UndecodableCall, match="nested too deeply to decode"):
        decode(nested(levels, "dict"))


def test_limits_apply_to_results() -> None:
    """A result the ledger could not store is refused like an argument."""
    with pytest.raises(ResultNotSerializable, match="NUL"):
        encode_result({"out": "a\x00"}, "shop.task")


def test_encode_call_names_the_argument_over_a_limit() -> None:
    """The refusal of a call names the parameter (here the keyword-only 'note')."""
    with pytest.raises(UnsafeArgument, match=r"^argument 'note' of shop\.charge\(\) contains"):
        encode_call(CHARGE, "shop.charge", (1, 2), {"note": "\x00"}, BIG)


# --- decode_call: stored calls that can never run ----------------------------------------------


def _three(a: Any, b: Any, c: Any) -> None:
    """The function after a deploy added a parameter."""


def ref(label: str, pk: Any) -> dict[str, Any]:
    return {TAG: "model", "model": label, "pk": pk}


UNDECODABLE = [
    # (stored args, stored kwargs, the start of the message, the cause it must name)
    pytest.param(
        [1, 2],
        {},
        "the stored call of shop.f() no longer fits its signature shop.f(a, b, c)",
        "missing a required argument: 'c'",
        id="signature-gained-a-parameter",
    ),
    pytest.param(
        [1, 2, 3, 4], {}, "the stored call of shop.f()", "too many positional", id="too-many"
    ),
    pytest.param(
        [1, 2, 3], {"d": 4}, "the stored call of shop.f()", "keyword argument 'd'", id="extra-kw"
    ),
    pytest.param(
        [ref("shop.Order", 1), 2, 3],
        {},
        "argument 'a' of shop.f()",
        "model 'shop.Order' is not installed (removed by a deploy?)",
        id="removed-model",
    ),
    pytest.param(
        [1, 2, ref("noappdot", 1)],
        {},
        "argument 'c' of shop.f()",
        "is not a model label",
        id="bad-model-label",
    ),
    pytest.param(
        [1, 2],
        {"c": {TAG: "vector", "value": [1]}},
        "argument 'c' of shop.f()",
        "unknown tagged value 'vector'",
        id="unknown-tag",
    ),
    pytest.param(
        [1, {TAG: "datetime", "value": "yesterday"}, 3],
        {},
        "argument 'b' of shop.f()",
        "bad datetime value",
        id="bad-datetime",
    ),
    pytest.param(
        [[{TAG: "decimal"}], 2, 3],
        {},
        "argument 'a' of shop.f()",
        "bad decimal value",
        id="tag-missing-its-value",
    ),
    pytest.param(
        [1, 2, {TAG: "timedelta", "days": "x", "seconds": 0, "microseconds": 0}],
        {},
        "argument 'c' of shop.f()",
        "bad timedelta value",
        id="bad-timedelta",
    ),
    pytest.param(
        [1, 2, ref("testapp.Order", "not-a-number")],
        {},
        "argument 'c' of shop.f()",
        "does not fit testapp.Order's primary key",
        id="pk-of-the-wrong-type",
    ),
    pytest.param(
        [nested(3000), 2, 3],
        {},
        "argument 'a' of shop.f()",
        "nested too deeply to decode",
        id="nesting-too-deep",
    ),
    pytest.param("not a list", {}, "the stored call of shop.f()", "not a list", id="bad-args"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("args", "kwargs", "start", "cause"), UNDECODABLE)
def test_undecodable_call_names_the_argument_and_the_cause(
    args: Any, kwargs: Any, start: str, cause: str
) -> None:
    """Whatever keeps a stored call from running raises UndecodableCall naming where and why."""
    with pytest.raises(UndecodableCall) as excinfo:
        decode_call(inspect.signature(_three), "shop.f", args, kwargs)
    message = str(excinfo.value)
    assert message.startswith(start), message
    assert cause in message, message


@pytest.mark.django_db
def test_decode_call_keeps_missing_object_and_decodes_a_good_call() -> None:
    """A deleted row stays MissingObject (its own on_missing policy); a good call decodes."""
    order = Order.objects.create(reference="r")
    stored = encode_call(
        inspect.signature(_three), "shop.f", (order, Decimal("1.5")), {"c": None}, BIG
    )
    assert decode_call(inspect.signature(_three), "shop.f", *stored) == (
        [order, Decimal("1.5")],
        {"c": None},
    )
    Order.objects.filter(pk=order.pk).delete()
    with pytest.raises(MissingObject):
        decode_call(inspect.signature(_three), "shop.f", *stored)
