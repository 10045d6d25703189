"""Sensitive arguments: which stored values to hide, and the hiding itself.

``@reliable_task(sensitive=("card",))`` names parameters whose values must reach the task as
passed but nowhere else. At dispatch, ``spec_for`` turns the names into the positions and keys
the call actually used (a *scrub spec*, stored in ``TaskRun.options["sensitive"]``), so whoever
ends the run later (a worker, a worker's main process, the relay, an operator) can scrub it
without knowing the task. ``apply`` replaces those values by a marker: ``MASKED`` for display
while the run lives, ``REDACTED`` in the ledger once it has ended (``scrubbed_fields``; the run's
options then carry ``SCRUBBED``, and an operator retry is refused). ``secret_texts`` /
``mask_text`` / ``mask_exception`` keep the values out of error text (the ledger's last error and
attempts, logs, signals, Celery's result backend and events) when task code puts them there.

Everything here is pure: no database, no Celery.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from .exceptions import InvalidIdempotencyKey, RedactedError
from .serialization import TAG

#: Key of ``TaskRun.options`` holding the scrub spec: ``{"args": [positions], "kwargs": [keys]}``.
SPEC = "sensitive"
#: Key of ``TaskRun.options`` set once the sensitive values were scrubbed from the row.
SCRUBBED = "sensitive_scrubbed"
#: What a scrubbed value becomes in the ledger (the admin shows "redacted").
REDACTED: dict[str, Any] = {TAG: "redacted"}
#: What a live run's sensitive value is shown as (the admin shows "sensitive").
MASKED: dict[str, Any] = {TAG: "sensitive"}
#: Shorter values are not searched for in error text or keys (they would match everywhere).
MIN_SECRET_CHARS = 4
#: Shown instead of a sensitive value found in error text.
TEXT_MASK = "[sensitive]"

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def spec_for(
    signature: inspect.Signature | None,
    sensitive: Collection[str],
    nargs: int,
    kwarg_keys: Iterable[str],
) -> dict[str, list[Any]] | None:
    """Where the sensitive parameters sit in one call: positions of ``args``, keys of ``kwargs``.

    A sensitive ``*args`` parameter covers every extra position, a sensitive ``**kwargs`` every
    extra key. ``None`` when the call passes no sensitive value (nothing to scrub, no cost).
    """
    if not sensitive or signature is None:
        return None
    params = signature.parameters
    positional = [
        p.name for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    var_pos = next((p.name for p in params.values() if p.kind == p.VAR_POSITIONAL), None)
    var_kw = next((p.name for p in params.values() if p.kind == p.VAR_KEYWORD), None)
    positions = [
        i for i in range(nargs) if (positional[i] if i < len(positional) else var_pos) in sensitive
    ]
    keys = [
        key
        for key in kwarg_keys
        if (key if key in params and params[key].kind not in _VARIADIC else var_kw) in sensitive
    ]
    if not positions and not keys:
        return None
    return {"args": positions, "kwargs": keys}


def apply(
    args: list[Any], kwargs: Mapping[str, Any], spec: Mapping[str, Any] | None, marker: Any
) -> tuple[list[Any], dict[str, Any]]:
    """Copies of ``args`` / ``kwargs`` with the values ``spec`` names replaced by ``marker``."""
    args, kwargs = list(args), dict(kwargs)
    if not spec:
        return args, kwargs
    for i in spec.get("args", ()):
        if isinstance(i, int) and 0 <= i < len(args):
            args[i] = dict(marker)
    for key in spec.get("kwargs", ()):
        if key in kwargs:
            kwargs[key] = dict(marker)
    return args, kwargs


def spec_of(options: Any) -> Mapping[str, Any] | None:
    """The scrub spec stored in a run's options, if any."""
    if isinstance(options, Mapping):
        spec = options.get(SPEC)
        if isinstance(spec, Mapping):
            return spec
    return None


def is_scrubbed(options: Any) -> bool:
    return isinstance(options, Mapping) and bool(options.get(SCRUBBED))


def for_display(args: Any, kwargs: Any, options: Any) -> tuple[Any, Any]:
    """Stored arguments as the admin may show them: sensitive values of a live run masked (a
    scrubbed run's values are already ``REDACTED`` markers, shown as they are)."""
    spec = spec_of(options)
    if (
        spec is None
        or is_scrubbed(options)
        or not isinstance(args, list)
        or not isinstance(kwargs, Mapping)
    ):
        return args, kwargs
    return apply(args, kwargs, spec, MASKED)


def scrubbed_fields(args: Any, kwargs: Any, options: Any) -> dict[str, Any]:
    """The field values that scrub a run's row (``{}`` when it has nothing to scrub).

    Meant to be written by the UPDATE that ends the run, so scrubbing costs no extra statement.
    """
    spec = spec_of(options)
    if spec is None or is_scrubbed(options):
        return {}
    new_args, new_kwargs = apply(
        args if isinstance(args, list) else [],
        kwargs if isinstance(kwargs, Mapping) else {},
        spec,
        REDACTED,
    )
    return {"args": new_args, "kwargs": new_kwargs, "options": {**options, SCRUBBED: True}}


def secret_texts(args: Any, kwargs: Any, spec: Mapping[str, Any] | None) -> list[str]:
    """The text forms of the sensitive values (stored JSON form), longest first.

    Scalars inside the values count (strings, numbers, the value of tagged Decimals, UUIDs,
    dates, model pks); strings shorter than ``MIN_SECRET_CHARS`` are left out.
    """
    if not spec:
        return []
    found: set[str] = set()
    if isinstance(args, list):
        for i in spec.get("args", ()):
            if isinstance(i, int) and 0 <= i < len(args):
                _leaves(args[i], found)
    if isinstance(kwargs, Mapping):
        for key in spec.get("kwargs", ()):
            if key in kwargs:
                _leaves(kwargs[key], found)
    variants: set[str] = set()
    for text in found:
        if len(text) >= MIN_SECRET_CHARS:
            variants.add(text)
            escaped = repr(text)[1:-1]  # as it appears inside a repr()
            if escaped != text:
                variants.add(escaped)
    return sorted(variants, key=lambda s: (-len(s), s))


def _leaves(value: Any, found: set[str]) -> None:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, str | int | float):
        found.add(str(value))
    elif isinstance(value, list):
        for item in value:
            _leaves(item, found)
    elif isinstance(value, Mapping):
        if TAG in value:  # a tagged value: its payload, not the tag or the model label
            for name in ("value", "pk"):
                if name in value:
                    _leaves(value[name], found)
            return
        for item in value.values():
            _leaves(item, found)


def mask_text(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, TEXT_MASK)
    return text


def contains_secret(text: str, secrets: Iterable[str]) -> bool:
    return any(secret in text for secret in secrets)


def mask_error(error: Any, secrets: list[str]) -> Any:
    """A ``ledger.ErrorInfo`` with the secrets masked in its message and traceback."""
    if not secrets:
        return error
    return dataclasses.replace(
        error,
        message=mask_text(error.message, secrets),
        traceback=mask_text(error.traceback, secrets),
    )


def mask_exception(exc: BaseException, secrets: list[str]) -> BaseException:
    """``exc`` itself, or a ``RedactedError`` in its place when its text holds a secret.

    The text checked is every message of the chain (causes and contexts), as a traceback prints
    them. The stand-in keeps the class path (``original_type``) and the frames; its message is
    the original's, masked. Retry decisions are made on the original, never on the stand-in.
    """
    if not secrets:
        return exc
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    if not any(contains_secret(_safe_text(e, repr), secrets) for e in chain) and not any(
        contains_secret(_safe_text(e, str), secrets) for e in chain
    ):
        return exc
    kind = type(exc)
    original_type = f"{kind.__module__}.{kind.__qualname__}"
    message = mask_text(_safe_text(exc, str), secrets)
    redacted = RedactedError(f"{original_type}: {message}")
    redacted.original_type = original_type
    return redacted.with_traceback(exc.__traceback__)


def _safe_text(exc: BaseException, form: Any) -> str:
    try:
        return str(form(exc))
    except Exception:
        return ""


def check_key(task_name: str, key: str, secrets: list[str]) -> None:
    """Refuse an idempotency key that holds a sensitive value: keys are stored in clear."""
    if contains_secret(key, secrets):
        raise InvalidIdempotencyKey(
            f"{task_name}: the idempotency key contains the value of a sensitive argument; keys "
            "are stored in clear (the ledger, the admin, logs' context) and never scrubbed. "
            "Build the key from a non-secret identifier, e.g. f'charge:{order.pk}'."
        )


__all__ = [
    "MASKED",
    "REDACTED",
    "SCRUBBED",
    "SPEC",
    "apply",
    "check_key",
    "for_display",
    "is_scrubbed",
    "mask_error",
    "mask_exception",
    "mask_text",
    "scrubbed_fields",
    "secret_texts",
    "spec_for",
    "spec_of",
]
