"""JSON encoding of task arguments and results, shared by dispatch and execution.

Only JSON travels. A few types that JSON lacks are tagged so they round-trip exactly (Decimal,
UUID, datetime, date, time, timedelta), and saved model instances travel as a reference
``(app_label.ModelName, pk)`` that the worker re-fetches. Everything else is refused with an
``UnsafeArgument`` that names the argument and says what to pass instead; the encoder never falls
back to ``str()`` or ``repr()``.
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
from django.db import models

from .exceptions import MissingObject, PayloadTooLarge, ResultNotSerializable, UnsafeArgument

TAG = "__taskkit__"

_SCALARS = (str, int, bool, type(None))


def encode(value: Any, where: str) -> Any:
    """Return the JSON form of ``value``; ``where`` names it in errors ("argument 'order'")."""
    if isinstance(value, _SCALARS):
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
    if isinstance(value, list | tuple):
        return [encode(item, f"{where}[{i}]") for i, item in enumerate(value)]
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
            out[key] = encode(item, f"{where}[{key!r}]")
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


def decode(value: Any) -> Any:
    """Inverse of ``encode``; model references are fetched from the database."""
    if isinstance(value, list):
        return [decode(item) for item in value]
    if isinstance(value, dict):
        tag = value.get(TAG)
        if tag is None:
            return {key: decode(item) for key, item in value.items()}
        return _DECODERS[tag](value)
    return value


def _decode_instance(ref: Mapping[str, Any]) -> models.Model:
    model = apps.get_model(ref["model"])
    pk = decode(ref["pk"])
    try:
        return model._default_manager.get(pk=pk)
    except model.DoesNotExist:
        raise MissingObject(f"{ref['model']} with pk={pk!r} no longer exists.") from None


def _refuse_redacted(value: Mapping[str, Any]) -> Any:
    raise ValueError(
        "a sensitive argument of this run was scrubbed when the run ended; it cannot run again "
        "(dispatch the task anew with its arguments)."
    )


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
    names: list[str] = [f"#{i}" for i in range(len(args))]
    if signature is not None:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{task_name}: {exc}") from None
        positional = [
            p.name
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        names = [
            positional[i] if i < len(positional) else f"*args[{i - len(positional)}]"
            for i in range(len(args))
        ]
        del bound
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


def payload_size(args: Any, kwargs: Any) -> int:
    return len(json.dumps([args, kwargs], separators=(",", ":")).encode())


def decode_call(args: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    return decode(args), decode(kwargs)


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
