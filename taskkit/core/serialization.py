"""JSON encoding of task arguments and results, shared by dispatch and execution.

Only JSON travels. A few types that JSON lacks are tagged so they round-trip exactly (Decimal,
UUID, datetime, date, time, timedelta), and saved model instances travel as a reference
``(app_label.ModelName, pk)`` that the worker re-fetches. Everything else is refused with an
``UnsafeArgument`` that names the argument and says what to pass instead; the encoder never falls
back to ``str()`` or ``repr()``.

Values are also refused when a database could not store them faithfully (see the limits below),
so that no dispatch fails at INSERT with a database error. Decoding a stored call names the
argument and the cause of any failure (``UndecodableCall``): a removed model, an unknown tag, a
bad value, or a call that no longer fits the function's signature after a deploy.
"""

from __future__ import annotations

import datetime
import decimal
import inspect
import io
import json
import math
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import DataError, models

from .exceptions import (
    MissingObject,
    PayloadTooLarge,
    ResultNotSerializable,
    UndecodableCall,
    UnsafeArgument,
)

TAG = "__taskkit__"

#: How deep lists and dicts may nest in one argument (or result). Every reader of a stored value
#: recurses: the worker's decoder, Django's JSONField (``json.loads``), the admin's renderer, and
#: Python stops at ~1,000 frames (a worker's stack is deeper than the dispatcher's, so a value near
#: the limit passed dispatch and failed in the worker). 32 is far beyond real data and far from
#: any of those limits.
MAX_DEPTH = 32

#: The integers that travel: 64-bit signed. SQLite's JSON functions turn larger ones into floats
#: (2**63 reads back as 9.223372036854776e+18), PostgreSQL's bigint primary keys stop there,
#: JavaScript and most other consumers lose precision even sooner, and ``json.dumps`` raises
#: ``ValueError`` past 4,300 digits. Pass bigger numbers as ``str`` or ``Decimal``.
MIN_INT = -(2**63)
MAX_INT = 2**63 - 1

# Strings: PostgreSQL's jsonb refuses a NUL character ("\u0000": "unsupported Unicode escape
# sequence") and lone surrogates ("\ud800": "invalid input syntax for type json"). SQLite stores
# both, but its JSON functions cut a string at NUL and return invalid UTF-8 for a lone surrogate,
# and a lone surrogate cannot be encoded as UTF-8 (logs, HTML). Both are refused everywhere, in
# values and in dict keys, so a project behaves the same on SQLite and PostgreSQL.

_SCALARS = (bool, type(None))


def _check_text(text: str, where: str) -> None:
    if "\x00" in text:
        raise UnsafeArgument(
            f"{where} contains a NUL character (\\x00) at index {text.index(chr(0))}, which "
            "PostgreSQL cannot store (and SQLite's JSON functions cut the string there). Remove "
            "it, or base64-encode binary data."
        )
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UnsafeArgument(
            f"{where} contains a lone surrogate ({text[exc.start]!r}) at index {exc.start}, "
            "which is not valid Unicode: PostgreSQL refuses it and it cannot be written as "
            "UTF-8. Decode the original bytes with the right codec (errors='replace' if need "
            "be), or base64-encode binary data."
        ) from None


def encode(value: Any, where: str, _depth: int = 0) -> Any:
    """Return the JSON form of ``value``; ``where`` names it in errors ("argument 'order'")."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, str):
        _check_text(value, where)
        return value
    if isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            raise UnsafeArgument(
                f"{where} is an integer of {value.bit_length()} bits, outside the 64-bit signed "
                "range taskkit stores (-2**63 .. 2**63-1): databases and JSON readers would "
                "round or refuse it. Pass it as a str or a Decimal."
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnsafeArgument(
                f"{where} is {value!r}, which JSON cannot store; pass a finite number."
            )
        return value
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise UnsafeArgument(f"{where} is {value!r}; pass a finite Decimal.")
        return {TAG: "decimal", "value": str(value)}
    if isinstance(value, uuid.UUID):
        return {TAG: "uuid", "value": str(value)}
    if isinstance(value, datetime.datetime):
        return {TAG: "datetime", "value": value.isoformat()}
    if isinstance(value, datetime.date):
        return {TAG: "date", "value": value.isoformat()}
    if isinstance(value, datetime.time):
        return {TAG: "time", "value": value.isoformat()}
    if isinstance(value, datetime.timedelta):
        return {
            TAG: "timedelta",
            "days": value.days,
            "seconds": value.seconds,
            "microseconds": value.microseconds,
        }
    if isinstance(value, models.Model):
        return _encode_instance(value, where)
    if isinstance(value, list | tuple | dict) and _depth >= MAX_DEPTH:
        raise UnsafeArgument(
            f"{where} nests lists and dicts more than {MAX_DEPTH} levels deep, taskkit's limit "
            "(so that workers, the ledger and the admin can all read it back). Flatten it, or "
            "store the structure in the database and pass a reference to it."
        )
    if isinstance(value, list | tuple):
        return [encode(item, f"{where}[{i}]", _depth + 1) for i, item in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnsafeArgument(
                    f"{where} has the key {key!r} of type {type(key).__name__}; JSON objects only "
                    "have string keys. Convert the keys to str."
                )
            if key == TAG:
                raise UnsafeArgument(f"{where} uses the reserved key {TAG!r}; rename it.")
            _check_text(key, f"a key of {where}")
            out[key] = encode(item, f"{where}[{key!r}]", _depth + 1)
        return out
    raise UnsafeArgument(
        f"{where} is {_describe(value)}, which cannot travel to a worker: {_hint(value)}"
    )


def _encode_instance(instance: models.Model, where: str) -> dict[str, Any]:
    label = instance._meta.label
    if not instance._state.adding and instance.pk is None:
        raise UnsafeArgument(
            f"{where} is a deleted {label} instance (its pk is None); pass an existing row."
        )
    if instance._state.adding or instance.pk is None:
        raise UnsafeArgument(
            f"{where} is an unsaved {label} instance; only saved instances travel (as a "
            "reference re-fetched by the worker). Call .save() first, or pass its field values."
        )
    return {TAG: "model", "model": label, "pk": encode(instance.pk, f"{where}.pk")}


def _describe(value: Any) -> str:
    return f"a {type(value).__module__}.{type(value).__qualname__}"


def _hint(value: Any) -> str:
    if isinstance(value, models.QuerySet):
        return (
            "querysets are evaluated lazily and could mean other rows by the time the task "
            "runs; pass a list of primary keys: list(qs.values_list('pk', flat=True))."
        )
    if isinstance(value, set | frozenset):
        return "sets have no JSON form; pass sorted(the_set)."
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes have no JSON form; decode them to str or base64-encode them."
    if isinstance(value, io.IOBase) or hasattr(value, "read"):
        return "open files cannot travel; store the content and pass its path or a model instance."
    if inspect.isroutine(value) or inspect.isclass(value) or callable(value):
        return "functions and classes cannot travel; pass a name or value the task can look up."
    return (
        "pass JSON values (str, int, float, bool, None, list, dict), Decimal, UUID, date/time "
        "values, or a saved model instance."
    )


def decode(value: Any, _depth: int = 0) -> Any:
    """Inverse of ``encode``; model references are fetched from the database.

    Raises ``MissingObject`` for a referenced row that is gone and ``UndecodableCall`` (with the
    cause) for a value that cannot be decoded — including one nested deeper than ``MAX_DEPTH``
    (a row written before dispatch refused such values): the limit is checked here, not left to
    Python's recursion limit, which differs between versions. Database errors propagate unchanged.
    """
    if isinstance(value, list) or (isinstance(value, dict) and value.get(TAG) is None):
        if _depth >= MAX_DEPTH:
            raise UndecodableCall(
                f"nested too deeply to decode (dispatch now refuses more than {MAX_DEPTH} levels)"
            )
        if isinstance(value, list):
            return [decode(item, _depth + 1) for item in value]
        return {key: decode(item, _depth + 1) for key, item in value.items()}
    if isinstance(value, dict):
        tag = value.get(TAG)
        decoder = _DECODERS.get(tag) if isinstance(tag, str) else None
        if decoder is None:
            raise UndecodableCall(
                f"unknown tagged value {_short(tag)} (written by another version of taskkit, or "
                "not by taskkit at all)"
            )
        if tag == "model":
            return decoder(value)
        try:
            return decoder(value)
        except (KeyError, TypeError, ValueError, ArithmeticError, OverflowError) as exc:
            raise UndecodableCall(
                f"bad {tag} value {_short(value)} ({type(exc).__name__}: {exc})"
            ) from None
    return value


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _decode_instance(ref: Mapping[str, Any]) -> models.Model:
    label = ref.get("model")
    if not isinstance(label, str) or "pk" not in ref:
        raise UndecodableCall(f"bad model reference {_short(dict(ref))}")
    try:
        model = apps.get_model(label)
    except LookupError:
        raise UndecodableCall(f"model {label!r} is not installed (removed by a deploy?)") from None
    except ValueError:
        raise UndecodableCall(f"{label!r} is not a model label (app_label.ModelName)") from None
    pk = decode(ref["pk"])
    try:
        return model._default_manager.get(pk=pk)
    except model.DoesNotExist:
        raise MissingObject(f"{label} with pk={pk!r} no longer exists.") from None
    except (ValueError, TypeError, ValidationError, DataError) as exc:
        raise UndecodableCall(
            f"the stored pk {_short(pk)} does not fit {label}'s primary key ({exc})"
        ) from None


def _refuse_redacted(value: Mapping[str, Any]) -> Any:
    raise ValueError(
        "a sensitive argument of this run was scrubbed when the run ended; it cannot run again "
        "(dispatch the task anew with its arguments)."
    )


def stored_timedelta(value: Mapping[str, Any]) -> datetime.timedelta | None:
    """The ``timedelta`` a stored tag holds, or ``None`` if no timedelta can be made of it: for
    displays (the admin, Flower's ``argsrepr``), which show what they can and never raise."""
    try:
        return datetime.timedelta(
            days=value.get("days", 0),
            seconds=value.get("seconds", 0),
            microseconds=value.get("microseconds", 0),
        )
    except (TypeError, ValueError, OverflowError):
        return None


_DECODERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "decimal": lambda v: decimal.Decimal(v["value"]),
    "uuid": lambda v: uuid.UUID(v["value"]),
    "datetime": lambda v: datetime.datetime.fromisoformat(v["value"]),
    "date": lambda v: datetime.date.fromisoformat(v["value"]),
    "time": lambda v: datetime.time.fromisoformat(v["value"]),
    "timedelta": lambda v: datetime.timedelta(
        days=v["days"], seconds=v["seconds"], microseconds=v["microseconds"]
    ),
    "model": _decode_instance,
    "redacted": _refuse_redacted,
}


def encode_call(
    signature: inspect.Signature | None,
    task_name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    max_bytes: int,
) -> tuple[list[Any], dict[str, Any]]:
    """Check a call against the task's signature and encode its arguments.

    Raises ``TypeError`` for a call the function could not accept, ``UnsafeArgument`` naming
    the argument that cannot travel, and ``PayloadTooLarge`` over ``max_bytes``.
    """
    if signature is not None:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{task_name}: {exc}") from None
    names = argument_names(signature, len(args))
    encoded_args = [
        encode(a, f"argument {n!r} of {task_name}()") for n, a in zip(names, args, strict=True)
    ]
    encoded_kwargs = {k: encode(v, f"argument {k!r} of {task_name}()") for k, v in kwargs.items()}
    size = payload_size(encoded_args, encoded_kwargs)
    if size > max_bytes:
        raise PayloadTooLarge(
            f"The arguments of {task_name}() are {size} bytes as JSON, over the limit of "
            f"{max_bytes} (TASKKIT_MAX_PAYLOAD_BYTES). Store large data in the database or a file "
            "and pass a reference to it."
        )
    return encoded_args, encoded_kwargs


def argument_names(signature: inspect.Signature | None, count: int) -> list[str]:
    """Names of ``count`` positional arguments: parameter names, ``*args[i]`` or ``#i``."""
    if signature is None:
        return [f"#{i}" for i in range(count)]
    positional = [
        p.name
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return [
        positional[i] if i < len(positional) else f"*args[{i - len(positional)}]"
        for i in range(count)
    ]


def payload_size(args: Any, kwargs: Any) -> int:
    return len(json.dumps([args, kwargs], separators=(",", ":")).encode())


def decode_call(
    signature: inspect.Signature | None, task_name: str, args: Any, kwargs: Any
) -> tuple[list[Any], dict[str, Any]]:
    """Decode a run's stored call and check that it still fits the function's signature.

    Raises ``UndecodableCall`` naming the argument and the cause (the run can never succeed:
    a removed model, an unknown tag, a bad value, a signature changed by a deploy),
    ``MissingObject`` for a referenced row that is gone; database errors propagate unchanged
    (they may pass). Binding happens before the call, so a ``TypeError`` raised inside the
    function's body stays an ordinary failure.
    """
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise UndecodableCall(
            f"the stored call of {task_name}() is not a list of arguments and a dict of keyword "
            f"arguments (args={_short(args)}, kwargs={_short(kwargs)})"
        )
    if signature is not None:
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise UndecodableCall(
                f"the stored call of {task_name}() no longer fits its signature "
                f"{task_name}{_plain(signature)}: {exc} (the run holds {len(args)} positional "
                f"argument(s) and the keyword(s) {sorted(kwargs) or 'none'}). The signature "
                "changed after the run was dispatched (a deploy?): give new parameters a "
                "default, or keep accepting the old call until queued runs have drained."
            ) from None
    names = argument_names(signature, len(args))
    decoded_args = [
        _decode_argument(value, f"argument {name!r} of {task_name}()")
        for name, value in zip(names, args, strict=True)
    ]
    decoded_kwargs = {
        key: _decode_argument(value, f"argument {key!r} of {task_name}()")
        for key, value in kwargs.items()
    }
    return decoded_args, decoded_kwargs


def _plain(signature: inspect.Signature) -> inspect.Signature:
    """The signature without annotations (shorter in messages)."""
    return signature.replace(
        parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
        return_annotation=inspect.Signature.empty,
    )


def _decode_argument(value: Any, where: str) -> Any:
    try:
        return decode(value)
    except UndecodableCall as exc:
        raise UndecodableCall(f"{where}: {exc}") from None
    except RecursionError:
        raise UndecodableCall(
            f"{where}: nested too deeply to decode (dispatch now refuses more than {MAX_DEPTH} "
            "levels)"
        ) from None


def cap_result(encoded: Any, max_bytes: int) -> tuple[Any, int | None]:
    """``(encoded, None)`` if its JSON form fits ``max_bytes``, else ``(marker, its size)``.

    The marker ``{"__taskkit__": "omitted", "bytes": size, "limit": max_bytes}`` is what is
    stored (and handed to Celery) instead of a result over ``TASKKIT_MAX_RESULT_BYTES``.
    """
    if encoded is None or isinstance(encoded, bool | int | float):
        return encoded, None  # a scalar fits any sensible limit; no need to measure it
    if isinstance(encoded, str) and 12 * len(encoded) + 2 <= max_bytes:
        return encoded, None  # fits even if every character were an escaped surrogate pair
    size = len(json.dumps(encoded, separators=(",", ":")).encode())
    if size <= max_bytes:
        return encoded, None
    return {TAG: "omitted", "bytes": size, "limit": max_bytes}, size


def encode_result(value: Any, task_name: str) -> Any:
    try:
        return encode(value, f"the return value of {task_name}()")
    except UnsafeArgument as exc:
        raise ResultNotSerializable(str(exc)) from None
