"""Stuck work: runs that waited past a deadline, and relays that stopped sweeping.

One row per kind, each with a count, the age of the oldest, a link to the run list filtered to
exactly those runs (``?stuck=<key>``, the ``StuckFilter``) and what to do about them:

- **PENDING past the relay grace**: written, never published; the relay publishes these
  (``TASKKIT_RELAY_GRACE_SECONDS`` plus two relay intervals, so a sweep in progress is not news);
- **QUEUED past requeue**: published ``TASKKIT_REQUEUE_AFTER`` ago and still not claimed (no worker
  consumes the queue, or the broker lost the message: the relay publishes it again);
- **RUNNING past the lease**: the worker holding it died or froze; the relay records the attempt
  LOST and retries or fails the run;
- **relay heartbeat stale**: no relay swept in ``RELAY_STALE_SECONDS`` (or none ever did).

The run rows come from the one grouped statement the overview makes anyway (``aggregates``).
More rows come from ``PROVIDERS``: callables given a ``StuckContext`` that return ``StuckRow``s
(one statement each at most), shown after the built-in ones.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Min, Q
from django.http import HttpRequest

from ..core.conf import settings
from ..models import RunState
from . import display

#: A relay whose last sweep is older than this is stale (seconds).
RELAY_STALE_SECONDS = 120


@dataclass(frozen=True)
class StuckRow:
    key: str
    label: str
    count: int
    #: Age of the oldest (e.g. "7m"), or "-".
    oldest: str = "-"
    #: The filtered list, if there is one.
    url: str | None = None
    #: What to do: a sentence, and optionally a link to do it.
    action: str = ""
    action_url: str | None = None

    @property
    def stuck(self) -> bool:
        return self.count > 0


@dataclass(frozen=True)
class StuckContext:
    """What a provider may use: the request, the time, the admin's URLs."""

    request: HttpRequest
    now: datetime.datetime
    changelist_url: str
    extra: dict[str, Any] = field(default_factory=dict)


#: Extra rows for the panel: ``provider(context) -> iterable of StuckRow``. Append to add some.
PROVIDERS: list[Callable[[StuckContext], Iterable[StuckRow]]] = []


def conditions(now: datetime.datetime) -> dict[str, Q]:
    """The filter of each kind of stuck run at ``now`` (shared by the panel and the list)."""
    grace = settings.RELAY_GRACE_SECONDS + 2 * settings.RELAY_INTERVAL
    return {
        "pending": Q(state=RunState.PENDING, created_at__lt=now - datetime.timedelta(seconds=grace))
        & (Q(not_before__isnull=True) | Q(not_before__lt=now)),
        "queued": Q(
            state=RunState.QUEUED,
            queued_at__lt=now - datetime.timedelta(seconds=settings.REQUEUE_AFTER),
        ),
        "running": Q(state=RunState.RUNNING, lease_until__lt=now),
    }


#: Which column's oldest value gives each kind's age.
AGE_FIELD = {"pending": "created_at", "queued": "queued_at", "running": "started_at"}
LABELS = {
    "pending": ("PENDING past the relay grace", "The relay publishes them; is one running?"),
    "queued": (
        "QUEUED past requeue (not claimed)",
        "Is a worker consuming their queue? The relay publishes them again.",
    ),
    "running": (
        "RUNNING past the lease",
        "Their worker died or froze; the relay records the attempt LOST and moves them on.",
    ),
}


def aggregates(now: datetime.datetime) -> dict[str, Any]:
    """Aggregates to add to a per-state ``values("state").annotate(...)``: per kind, how many
    and the oldest (each row of the grouped statement holds its own state's kind)."""
    out: dict[str, Any] = {}
    for key, condition in conditions(now).items():
        out[f"stuck_{key}"] = Count("pk", filter=condition)
        out[f"stuck_{key}_oldest"] = Min(AGE_FIELD[key], filter=condition)
    return out


def rows(
    context: StuckContext, by_state: dict[str, dict[str, Any]], relays: list[dict[str, Any]]
) -> list[StuckRow]:
    """The panel: the built-in rows from the grouped per-state statement and the relay
    heartbeats, then the providers' rows."""
    state_of = {"pending": RunState.PENDING, "queued": RunState.QUEUED, "running": RunState.RUNNING}
    out = []
    for key, state in state_of.items():
        row = by_state.get(state.value, {})
        count = int(row.get(f"stuck_{key}") or 0)
        label, action = LABELS[key]
        out.append(
            StuckRow(
                key=key,
                label=label,
                count=count,
                oldest=display.short_age(row.get(f"stuck_{key}_oldest"), context.now)
                if count
                else "-",
                url=f"{context.changelist_url}?stuck={key}",
                action=action,
            )
        )
    stale = [r for r in relays if r["stale"]]
    fresh = [r for r in relays if not r["stale"]]
    out.append(
        StuckRow(
            key="relay",
            label="relay heartbeat stale" if relays else "no relay has ever swept",
            count=len(stale) if relays else 1,
            oldest=max((r["age"] for r in stale), key=_age_seconds) if stale else "-",
            action=(
                "Start one: manage.py taskkit_relay (any number may run)."
                if not fresh
                else f"{len(fresh)} other relay(s) are sweeping; the stale ones stopped."
            ),
        )
    )
    for provider in PROVIDERS:
        out.extend(provider(context))
    return out


def _age_seconds(age: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return int(age[:-1]) * units.get(age[-1], 1)
    except (ValueError, IndexError):
        return 0
