"""What a run's message tells monitors (Flower, ``celery events``) about the run.

A taskkit message carries no arguments (the worker reads them from the ledger), so Celery would
describe every run as ``()`` / ``{}``, with no parent and no retries. ``MessageHeaders`` are the
Celery message headers monitors read instead, built from the run's row so that every publish of
a run (dispatch, bulk dispatch, a retry, the relay, an operator retry) says the same thing:

- ``argsrepr`` / ``kwargsrepr``: the stored call as text, sensitive values masked
  (``redaction.for_display``: ``<sensitive>`` while the run lives, ``<redacted>`` once scrubbed),
  model references as ``<shop.order #5>``, each capped at ``MAX_REPR`` characters;
- ``root_id`` / ``parent_id``: the run that dispatched this one (and the root of that run's tree)
  when dispatched from inside a run, else the run itself as root and no parent, as Celery does;
- ``retries``: the attempts already made, so the message of attempt 10 says 9 retries.

The dispatching run is kept in the run's options (``PARENT`` / ``ROOT``), so a re-publish long
after the parent ended still names it. Everything here is pure: no database, no Celery.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import redaction
from .serialization import TAG, stored_timedelta

#: Keys of ``TaskRun.options`` naming the run that dispatched this one, and the root of its tree.
PARENT = "parent_id"
ROOT = "root_id"
#: Longest ``argsrepr`` / ``kwargsrepr`` sent (Celery's own cap for them).
MAX_REPR = 1024
#: Deepest nesting shown; deeper values are shown as ``…``.
MAX_LEVELS = 4


@dataclass(frozen=True)
class MessageHeaders:
    """The monitor-facing headers of one run's message (see the module docstring)."""

    argsrepr: str
    kwargsrepr: str
    root_id: str | None
    parent_id: str | None
    retries: int

    def publish_options(self, run_id: Any) -> dict[str, Any]:
        """Celery ``apply_async`` / ``send_task`` options that put these headers on the message
        for ``run_id`` (its own id as root when it has none)."""
        return {
            "argsrepr": self.argsrepr,
            "kwargsrepr": self.kwargsrepr,
            "root_id": self.root_id or str(run_id),
            "parent_id": self.parent_id,
            "retries": self.retries,
        }


def for_run(args: Any, kwargs: Any, options: Any, attempts: int = 0) -> MessageHeaders:
    """The headers of a run's next message, from its stored call, options and attempts made."""
    if type(options) is dict and redaction.SPEC not in options:
        shown_args, shown_kwargs = args, kwargs  # nothing to mask (most runs): no copies
    else:
        shown_args, shown_kwargs = redaction.for_display(args, kwargs, options)
    origin = options if isinstance(options, Mapping) else {}
    parent = origin.get(PARENT)
    root = origin.get(ROOT)
    return MessageHeaders(
        argsrepr=call_repr(shown_args, "(", ")"),
        kwargsrepr=call_repr(shown_kwargs, "{", "}"),
        root_id=root if isinstance(root, str) else None,
        parent_id=parent if isinstance(parent, str) else None,
        retries=max(int(attempts or 0), 0),
    )


def origin_options(parent_id: uuid.UUID | str, root_id: uuid.UUID | str | None) -> dict[str, str]:
    """The options that record a dispatch from inside run ``parent_id`` (root ``root_id``)."""
    return {PARENT: str(parent_id), ROOT: str(root_id or parent_id)}


def call_repr(value: Any, opening: str, closing: str) -> str:
    """``value`` (stored args list, or kwargs dict) as a Python-looking call part, capped."""
    parts: list[str] = []
    budget = [MAX_REPR]
    if type(value) is list or isinstance(value, list):
        for item in value:
            parts.append(_repr(item, 0, budget))
            if budget[0] <= 0:
                break
        text = opening + ", ".join(parts) + ("," if len(value) == 1 else "") + closing
    elif isinstance(value, Mapping):
        for key, item in value.items():
            parts.append(f"{key!r}: {_repr(item, 0, budget)}")
            if budget[0] <= 0:
                break
        text = opening + ", ".join(parts) + closing
    else:
        text = _repr(value, 0, budget)
    if len(text) > MAX_REPR:
        text = text[: MAX_REPR - 1] + "…"
    return text


def _repr(value: Any, level: int, budget: list[int]) -> str:
    """One stored JSON value as text; ``budget`` (characters left) stops long walks early."""
    if budget[0] <= 0:
        return "…"
    if type(value) in _SCALARS:  # the common case, first
        text = repr(value)
        if len(text) > MAX_REPR:
            text = text[: MAX_REPR - 1] + "…"
        budget[0] -= len(text)
        return text
    if isinstance(value, dict) and isinstance(value.get(TAG), str):
        text = _tagged(value)
    elif isinstance(value, list | dict):
        if level >= MAX_LEVELS:
            text = "[…]" if isinstance(value, list) else "{…}"
        elif isinstance(value, list):
            text = "[" + ", ".join(_repr(item, level + 1, budget) for item in value) + "]"
        else:
            text = (
                "{"
                + ", ".join(f"{k!r}: {_repr(v, level + 1, budget)}" for k, v in value.items())
                + "}"
            )
        return text  # its items were counted
    else:
        text = repr(value)
        if len(text) > MAX_REPR:
            text = text[: MAX_REPR - 1] + "…"
    budget[0] -= len(text)
    return text


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _tagged(value: dict[str, Any]) -> str:
    tag = value[TAG]
    if tag in ("sensitive", "redacted", "omitted"):
        return f"<{tag}>"
    if tag == "model":
        pk = value.get("pk")
        if isinstance(pk, dict):
            pk = pk.get("value")
        return f"<{value.get('model')} #{pk}>"
    if tag == "timedelta":
        delta = stored_timedelta(value)
        return "timedelta(?)" if delta is None else f"timedelta({str(delta)!r})"
    return f"{tag}({value.get('value')!r})"


__all__ = ["MAX_REPR", "PARENT", "ROOT", "MessageHeaders", "call_repr", "for_run", "origin_options"]
