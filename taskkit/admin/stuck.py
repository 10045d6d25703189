"""Stuck work: runs that waited past a deadline, and relays that stopped sweeping.

One row per kind, each with a count, the age of the oldest, a link to the run list filtered to
exactly those runs (``?stuck=<key>``, the ``StuckFilter``) and what to do about them:

- **PENDING past the relay grace**: written, never published; the relay publishes these
  (``TASKKIT_RELAY_GRACE_SECONDS`` plus two relay intervals, so a sweep in progress is not news);
- **QUEUED past requeue**: published ``TASKKIT_REQUEUE_AFTER`` ago and still not claimed (no worker
  consumes the queue, or the broker lost the message: the relay publishes it again);
- **RUNNING past the lease**: the worker holding it died or froze; the relay records the attempt
  LOST and retries or fails the run;
- **relay heartbeat stale**: no relay swept in ``RELAY_STALE_SECONDS`` (or none ever did);
- **paused** tasks and queues (``taskkit.pause_task`` / ``pause_queue``): one row per pause, with
  the runs waiting for it and how long it has held them (``paused_rows``, one statement).

The run rows come from the one grouped statement the overview makes anyway (``aggregates``).
More rows come from ``PROVIDERS``: callables given a ``StuckContext`` that return ``StuckRow``s
(one statement each at most), shown after the built-in ones.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, IntegerField, Min, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import reverse
from django.utils.http import urlencode

from ..core.conf import settings
from ..models import PauseKind, RunState, TaskPause, TaskRun
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


#: States of a run that a pause holds back (the claim refuses it, the relay does not publish it).
WAITING_STATES = (RunState.PENDING, RunState.QUEUED, RunState.RETRYING)


def paused_rows(context: StuckContext) -> list[StuckRow]:
    """One row per pause: the runs waiting for it (counted in the same statement), since when,
    a link to them and to the pauses page, where an operator resumes it."""
    waiting = TaskRun.objects.filter(state__in=WAITING_STATES)
    per_task = waiting.filter(task_name=OuterRef("name")).values("task_name")
    per_queue = waiting.filter(queue=OuterRef("name")).values("queue")
    pauses = TaskPause.objects.annotate(
        waiting_task=Coalesce(
            Subquery(per_task.annotate(n=Count("pk")).values("n")[:1]),
            0,
            output_field=IntegerField(),
        ),
        waiting_queue=Coalesce(
            Subquery(per_queue.annotate(n=Count("pk")).values("n")[:1]),
            0,
            output_field=IntegerField(),
        ),
    ).order_by("paused_at")
    site = context.extra.get("site", "admin")
    pauses_url = reverse(f"{site}:taskkit_taskpause_changelist")
    out = []
    for pause in pauses:
        is_task = pause.kind == PauseKind.TASK
        field_name = "task_name" if is_task else "queue"
        out.append(
            StuckRow(
                key="paused",
                label=f"{'task' if is_task else 'queue'} {pause.name} paused"
                + (f" by {pause.paused_by}" if pause.paused_by else ""),
                count=pause.waiting_task if is_task else pause.waiting_queue,
                oldest=display.short_age(pause.paused_at, context.now),
                url=f"{context.changelist_url}?{urlencode({f'{field_name}__exact': pause.name})}",
                action="Its runs wait (not failed); resume it on the pauses page.",
                action_url=pauses_url,
            )
        )
    return out


#: Extra rows for the panel: ``provider(context) -> iterable of StuckRow``. Append to add some.
PROVIDERS: list[Callable[[StuckContext], Iterable[StuckRow]]] = [paused_rows]


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
