"""The run lists' filters beyond the model's fields: recent, error class, stuck.

Each is one indexed condition: ``created_at`` / ``finished_at`` ranges (``taskkit_run_created``,
``taskkit_run_state_finished``), ``error_type`` (``taskkit_run_error_type``), and the stuck-work
conditions of ``taskkit.admin.stuck`` (``taskkit_run_state_created``, which holds the states off
the happy path, ``taskkit_run_state_queued``, ``taskkit_run_state_lease``).
"""

from __future__ import annotations

import datetime
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from . import stuck
from .distinct import distinct_values

#: Choices of the recent filters: key -> (label, seconds).
RECENT = {
    "15m": ("last 15 minutes", 15 * 60),
    "1h": ("last hour", 3600),
    "24h": ("last 24 hours", 86400),
}


class RecentFilter(admin.SimpleListFilter):
    """Runs created in the last 15 minutes / hour / 24 hours."""

    title = "created"
    parameter_name = "recent"
    field = "created_at"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _) in RECENT.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        choice = RECENT.get(self.value() or "")
        if choice is None:
            return queryset
        since = timezone.now() - datetime.timedelta(seconds=choice[1])
        return queryset.filter(**{f"{self.field}__gte": since})


class RecentlyFinishedFilter(RecentFilter):
    """Runs that ended (failed, for the failed list) in the last 15 minutes / hour / 24 hours."""

    title = "ended"
    parameter_name = "ended"
    field = "finished_at"


class ErrorClassFilter(admin.SimpleListFilter):
    """The last error's class (choices: the classes in the ledger, short names shown)."""

    title = "error class"
    parameter_name = "error_class"
    #: At most this many classes are offered (the search box finds any: ``class:Name``).
    LIMIT = 50

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = distinct_values(
            model_admin.get_queryset(request).exclude(error_type=""), "error_type", self.LIMIT
        )
        return [(name, name.rsplit(".", 1)[-1]) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(error_type=self.value())
        return queryset


class StuckFilter(admin.SimpleListFilter):
    """Runs the overview's stuck-work panel counts: PENDING past the relay grace, QUEUED past
    requeue, RUNNING past the lease."""

    title = "stuck"
    parameter_name = "stuck"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _) in stuck.LABELS.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        condition = stuck.conditions(timezone.now()).get(self.value() or "")
        if condition is None:
            return queryset
        return queryset.filter(condition)


class IndexedValuesFilter(admin.AllValuesFieldListFilter):
    """``AllValuesFieldListFilter`` whose choices come from the column's index
    (``taskkit.admin.distinct``): used for the task name and the queue."""

    def __init__(
        self,
        field: Any,
        request: HttpRequest,
        params: Any,
        model: Any,
        model_admin: Any,
        field_path: str,
    ) -> None:
        super().__init__(field, request, params, model, model_admin, field_path)
        values = distinct_values(model_admin.get_queryset(request), field.name)
        self.lookup_choices = values  # type: ignore[assignment]
        if field.name == "task_name":  # the search matches task names among these
            request.taskkit_task_names = values  # type: ignore[attr-defined]
