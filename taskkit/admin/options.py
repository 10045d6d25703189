"""The operators' admin: runs, failed tasks, run detail, retry / discard actions, overview.

Runs are read-only here; the only writes are the retry and discard actions, which go through
``taskkit.core.ledger`` (the single owner of state transitions), are gated by the ``retry_taskrun``
/ ``discard_taskrun`` permissions and are written to Django's admin log. The list pages are built to
stay fast on large ledgers: indexed filters and ordering, no full-table count, no facets, large
columns deferred. The HTML of stored values is built in ``taskkit.admin.display``; the overview and
the confirmation pages are in ``taskkit.admin.views``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import ShowFacets
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..core.conf import settings
from ..core.exceptions import TaskNotRegistered
from ..models import FailedRun, RunState, TaskRun
from . import display as admin_display
from . import filters as admin_filters
from . import run_page
from . import search as admin_search
from . import views as admin_views
from .paginator import EstimatedCountPaginator

#: Columns the list pages never show; not fetched for 100 rows of tracebacks and payloads.
HEAVY_COLUMNS = ("args", "kwargs", "options", "result", "error_traceback")


class RunChangeList(ChangeList):
    def get_queryset(self, request: HttpRequest, *args: Any, **kwargs: Any) -> QuerySet[Any]:
        return super().get_queryset(request, *args, **kwargs).defer(*HEAVY_COLUMNS)

    def get_results(self, request: HttpRequest) -> None:
        """The page's runs, and each one's last error for the full-width row under it
        (``admin/taskkit/change_list_results.html``)."""
        super().get_results(request)
        self.taskkit_errors = [
            admin_display.error_summary(run.error_type, run.error_message) if run.error_type else ""
            for run in self.result_list
        ]


STATE_COLOURS = {
    "SUCCEEDED": "#2a7d2a",
    "FAILED": "#ba2121",
    "DISCARDED": "#777",
    "CANCELLED": "#777",
    "RETRYING": "#b36b00",
    "RUNNING": "#205f9e",
}


class UnregisteredTaskFilter(admin.SimpleListFilter):
    """Runs of tasks a relay found not registered (a rename or removal by a deploy): those still
    waiting out ``TASKKIT_UNKNOWN_TASK_GRACE_SECONDS``, and those FAILED for it. Indexed."""

    title = "task not registered"
    parameter_name = "unregistered"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("waiting", "waiting out the grace"),
            ("failed", "failed: task not registered"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "waiting":
            return queryset.filter(unregistered_since__isnull=False)
        if self.value() == "failed":
            return queryset.filter(state=RunState.FAILED, error_type=NOT_REGISTERED_ERROR)
        return queryset


#: ``error_type`` of runs FAILED because their task is not registered.
NOT_REGISTERED_ERROR = f"{TaskNotRegistered.__module__}.{TaskNotRegistered.__qualname__}"


class TaskRunAdmin(admin.ModelAdmin):
    list_display = [
        "run_link",
        "task_name",
        "state_badge",
        "queue",
        "attempts",
        "idempotency_key",
        "age",
    ]  # the last error: a full-width row under each run (RunChangeList.taskkit_errors)
    list_display_links = None
    list_filter = [
        "state",
        admin_filters.RecentFilter,
        admin_filters.StuckFilter,
        ("task_name", admin_filters.IndexedValuesFilter),
        ("queue", admin_filters.IndexedValuesFilter),
        admin_filters.ErrorClassFilter,
        ("created_at", admin.DateFieldListFilter),
        ("finished_at", admin.DateFieldListFilter),
        UnregisteredTaskFilter,
    ]
    search_fields = ["=idempotency_key", "task_name"]  # shows the box; the search is ours
    search_help_text = (
        "A run id or its first 8 characters; key:…, error:…, class:…, arg:42, arg:name=value, "
        "task:…; plain text looks in ids, keys, task names and error messages."
    )
    ordering = ["-created_at"]
    list_select_related = False  # no foreign keys on the list: one query for the page
    list_per_page = 50
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    actions = ["retry_selected", "discard_selected", "cancel_selected", "requeue_selected"]
    change_list_template = "admin/taskkit/change_list.html"
    change_form_template = "admin/taskkit/run_change_form.html"

    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "task_name",
                    "state_badge",
                    "queue",
                    "attempt_summary",
                    "idempotency_key",
                    "request_id",
                    "discard_reason",
                    "links",
                ]
            },
        ),
        ("Arguments", {"fields": ["arguments"]}),
        ("Result and last error", {"fields": ["result_display", "last_error_display"]}),
        (
            "Times",
            {
                "fields": [
                    "created_at",
                    "queued_at",
                    "first_started_at",
                    "started_at",
                    "finished_at",
                    "not_before",
                    "lease_until",
                    "claimed_by",
                    "unregistered_since",
                    "cancel_requested_at",
                ]
            },
        ),
        ("Attempts", {"fields": ["timeline"]}),
    ]

    # -- read-only ---------------------------------------------------------------------------

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return list(flatten_fieldsets(self.fieldsets))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("taskkit.retry_taskrun"))

    def has_discard_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("taskkit.discard_taskrun"))

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("taskkit.cancel_taskrun"))

    def has_pause_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("taskkit.pause_taskrun"))

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return RunChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        """The search box: run id (prefix), key, error text / class, arguments, task name
        (``taskkit.admin.search``); one indexed condition, never a duplicate row."""
        try:
            search = admin_search.parse(search_term)
            if search is None:
                return queryset, False
            names = getattr(request, "taskkit_task_names", None)  # the task filter's choices
            return queryset.filter(admin_search.filter_for(queryset, search, names)), False
        except admin_search.SearchError as error:
            messages.warning(request, f"Search: {error}")
            return queryset.none(), False

    # -- columns -------------------------------------------------------------------------------

    @admin.display(description="run", ordering="created_at")
    def run_link(self, obj: TaskRun) -> SafeString:
        opts = self.model._meta
        url = reverse(
            f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]
        )
        return format_html('<a href="{}" title="{}">{}</a>', url, obj.pk, str(obj.pk)[:8])

    @admin.display(description="state", ordering="state")
    def state_badge(self, obj: TaskRun) -> SafeString:
        colour = STATE_COLOURS.get(obj.state, "#333")
        return format_html(
            '<strong class="taskkit-state" data-state="{}" style="color:{}">{}</strong>',
            obj.state,
            colour,
            obj.state,
        )

    @admin.display(description="age", ordering="created_at")
    def age(self, obj: TaskRun) -> str:
        return admin_display.short_age(obj.created_at)

    @admin.display(description="last error")
    def last_error(self, obj: TaskRun) -> str:
        if not obj.error_type:
            return ""
        return admin_display.error_summary(obj.error_type, obj.error_message)

    # -- detail --------------------------------------------------------------------------------

    @admin.display(description="attempts")
    def attempt_summary(self, obj: TaskRun) -> str:
        if obj.attempt_base:
            return (
                f"{obj.attempts} ({obj.attempts - obj.attempt_base} since the operator retry; "
                f"{obj.attempt_base} before)"
            )
        return str(obj.attempts)

    @admin.display(description="arguments")
    def arguments(self, obj: TaskRun) -> SafeString:
        link = admin_display.admin_linker(self.admin_site)
        args, kwargs = admin_display.masked_arguments(obj.args, obj.kwargs, obj.options)
        return format_html(
            "<div>args</div>{}<div>kwargs</div>{}",
            admin_display.render_pre(args, link),
            admin_display.render_pre(kwargs, link),
        )

    @admin.display(description="result")
    def result_display(self, obj: TaskRun) -> SafeString:
        return admin_display.render_pre(obj.result, admin_display.admin_linker(self.admin_site))

    @admin.display(description="last error")
    def last_error_display(self, obj: TaskRun) -> SafeString:
        return admin_display.error_block(obj.error_type, obj.error_message, obj.error_traceback)

    @admin.display(description="attempt timeline")
    def timeline(self, obj: TaskRun) -> SafeString:
        return admin_display.attempt_timeline(
            obj.attempt_log.order_by("number"), run_page.operator_entries(obj)
        )

    @admin.display(description="elsewhere")
    def links(self, obj: TaskRun) -> SafeString:
        parts = []
        flower = settings.FLOWER_URL
        if flower:
            parts.append(
                format_html(
                    '<a class="taskkit-flower" href="{}/task/{}">Flower</a>', flower, obj.pk
                )
            )
        result_url = admin_views.task_result_url(self.admin_site, obj.pk)
        if result_url:
            parts.append(
                format_html(
                    '<a class="taskkit-result" href="{}">Celery task result</a>', result_url
                )
            )
        history = reverse(f"{self.admin_site.name}:taskkit_taskrun_history", args=[obj.pk])
        parts.append(format_html('<a href="{}">operator history</a>', history))
        return format_html_join_pipe(parts)

    # -- actions -------------------------------------------------------------------------------

    @admin.action(description="Retry selected runs (fresh attempt budget)", permissions=["retry"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        admin_views.apply_retry(self, request, queryset, scope="selected runs")

    @admin.action(description="Discard selected runs…", permissions=["discard"])
    def discard_selected(
        self, request: HttpRequest, queryset: QuerySet[Any]
    ) -> HttpResponse | None:
        return admin_views.discard_action(self, request, queryset)

    @admin.action(description="Cancel selected runs", permissions=["cancel"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        run_page.cancel(self, request, ids, scope="selected runs")

    @admin.action(description="Requeue selected runs now", permissions=["retry"])
    def requeue_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        run_page.requeue(self, request, queryset, scope="selected runs")

    # -- extra pages ---------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        opts = self.model._meta
        prefix = f"{opts.app_label}_{opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path(
                "overview/",
                wrap(admin_views.OverviewView.as_view(model_admin=self)),
                name=f"{prefix}_overview",
            ),
            path(
                "<path:object_id>/act/<str:verb>/",
                wrap(run_page.RunActionView.as_view(model_admin=self)),
                name=f"{prefix}_act",
            ),
            path(
                "matching/<str:verb>/",
                wrap(admin_views.MatchingActionView.as_view(model_admin=self)),
                name=f"{prefix}_matching",
            ),
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        opts = self.model._meta
        context = {
            "overview_url": reverse(f"{self.admin_site.name}:taskkit_taskrun_overview"),
            "can_retry": self.has_retry_permission(request),
            "can_discard": self.has_discard_permission(request),
            "matching_url_name": f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}"
            "_matching",
            **(extra_context or {}),
        }
        return super().changelist_view(request, context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        run = self.get_object(request, object_id)
        context = {
            "run_buttons": run_page.buttons(self, request, run) if run is not None else [],
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, context)


def format_html_join_pipe(parts: list[SafeString]) -> SafeString:
    return admin_display.join(
        part if i == 0 else format_html(" | {}", part) for i, part in enumerate(parts)
    )


class FailedRunAdmin(TaskRunAdmin):
    """FAILED runs only: the operators' landing page."""

    list_filter = [
        admin_filters.RecentlyFinishedFilter,
        *(
            f
            for f in TaskRunAdmin.list_filter
            if f not in ("state", admin_filters.RecentFilter, admin_filters.StuckFilter)
        ),
    ]


admin.site.register(TaskRun, TaskRunAdmin)
admin.site.register(FailedRun, FailedRunAdmin)
