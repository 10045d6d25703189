"""The admin's operator actions and extra pages: retry, discard, "all matching", the overview.

Retry and discard call ``dispatch.retry_runs`` (the ledger's transition, then the publish on
commit) / ``ledger.discard_runs`` on a queryset (the selected
rows, or the whole changelist queryset of the current filter), inside one transaction together
with their admin log entries, so a retry is published only if the log is written and the log
never names runs that were not changed.

Admin log: one ``LogEntry`` per changed run, written with ``bulk_create`` in batches, rather than
one summary entry. Each run's own History page then shows who retried or discarded it and why, an
auditor can search by run id, and no single row holds a list of 10k ids. The cost is one INSERT
per 500 runs (10k runs: 20 statements), and every message says how many runs the action covered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.apps import apps
from django.contrib import messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db import connections, transaction
from django.db.models import Count, Min, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.generic import TemplateView

from ..core import buckets, ledger, rollup, sketch
from ..core.db import db_alias
from ..models import OFF_HAPPY_PATH, RelayHeartbeat, RunState, TaskRun
from ..producer import dispatch
from . import charts, stuck
from . import display as admin_display
from .paginator import EXACT_UP_TO, EstimatedCountPaginator

LOG_BATCH = 500
REASON_MAX = 2000


def log_operator_action(request: HttpRequest, run_ids: list[Any], message: str) -> int:
    """One admin LogEntry per run (bulk inserted); returns how many were written."""
    content_type = ContentType.objects.get_for_model(TaskRun)
    user_id: Any = request.user.pk
    written = 0
    for i in range(0, len(run_ids), LOG_BATCH):
        chunk = run_ids[i : i + LOG_BATCH]
        names = dict(TaskRun.objects.filter(pk__in=chunk).values_list("pk", "task_name"))
        entries = [
            LogEntry(
                user_id=user_id,
                content_type_id=content_type.pk,
                object_id=str(pk),
                object_repr=f"{names.get(pk, '?')}[{pk}]"[:200],
                action_flag=CHANGE,
                change_message=message,
            )
            for pk in chunk
        ]
        LogEntry.objects.bulk_create(entries, batch_size=LOG_BATCH)
        written += len(entries)
    return written


def _apply(
    model_admin: Any,
    request: HttpRequest,
    change: Callable[[], list[Any]],
    log: Callable[[int], str],
    report: Callable[[int], str],
) -> int:
    """Run a ledger change and its admin log in one transaction, then tell the operator."""
    with transaction.atomic(using=db_alias()):
        run_ids = change()
        log_operator_action(request, run_ids, log(len(run_ids)))
    level = messages.SUCCESS if run_ids else messages.WARNING
    model_admin.message_user(request, report(len(run_ids)), level)
    return len(run_ids)


def apply_retry(model_admin: Any, request: HttpRequest, queryset: QuerySet[Any], scope: str) -> int:
    refused = ledger.count_scrubbed(queryset)
    if refused:
        model_admin.message_user(
            request,
            f"{refused} run(s) ({scope}) were not retried: their sensitive arguments were "
            "scrubbed from the ledger when they ended, so they cannot run again. Dispatch the "
            "task anew with its arguments.",
            messages.WARNING,
        )
    return _apply(
        model_admin,
        request,
        lambda: dispatch.retry_runs(queryset),
        lambda n: f"Retried by an operator ({n} runs in this action; {scope})",
        lambda n: (
            f"Retried {n} run(s) ({scope}) with a fresh attempt budget. Only FAILED and "
            "DISCARDED runs are retried; others were left as they were."
        ),
    )


def apply_discard(
    model_admin: Any, request: HttpRequest, queryset: QuerySet[Any], reason: str, scope: str
) -> int:
    return _apply(
        model_admin,
        request,
        lambda: ledger.discard_runs(queryset, reason=reason),
        lambda n: f"Discarded by an operator ({n} runs in this action; {scope}): {reason}",
        lambda n: (
            f"Discarded {n} run(s) ({scope}). Running and finished runs cannot be "
            "discarded and were left as they were."
        ),
    )


def _reason(request: HttpRequest) -> str:
    return request.POST.get("reason", "").strip()[:REASON_MAX]


def _confirm_page(model_admin: Any, request: HttpRequest, **context: Any) -> TemplateResponse:
    return TemplateResponse(
        request,
        "admin/taskkit/confirm_action.html",
        {
            **model_admin.admin_site.each_context(request),
            "opts": model_admin.model._meta,
            "changelist_url": reverse(
                f"{model_admin.admin_site.name}:{model_admin.model._meta.app_label}_"
                f"{model_admin.model._meta.model_name}_changelist"
            ),
            **context,
        },
    )


def discard_action(
    model_admin: Any, request: HttpRequest, queryset: QuerySet[Any]
) -> HttpResponse | None:
    """The discard action: first an intermediate page asking for a reason, then the discard."""
    select_across = request.POST.get("select_across") == "1"
    scope = "all runs matching the filter" if select_across else "selected runs"
    reason = _reason(request)
    if request.POST.get("post") == "yes" and reason:
        apply_discard(model_admin, request, queryset, reason, scope)
        return None
    hidden = [
        ("action", request.POST.get("action", "discard_selected")),
        ("select_across", "1" if select_across else "0"),
        ("index", "0"),
        ("post", "yes"),
        *(("_selected_action", pk) for pk in request.POST.getlist("_selected_action")),
    ]
    return _confirm_page(
        model_admin,
        request,
        title="Discard runs",
        verb="discard",
        count=queryset.count(),
        scope=scope,
        hidden=hidden,
        form_url=request.get_full_path(),
        needs_reason=True,
        missing_reason=request.POST.get("post") == "yes",
    )


class MatchingActionView(TemplateView):
    """Retry or discard every run matching the changelist's current filter, not just one page.

    Needs the admin's view permission (as the changelist does) and the verb's own permission.
    """

    model_admin: Any = None
    verbs = {"retry": "has_retry_permission", "discard": "has_discard_permission"}

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        verb = kwargs["verb"]
        if verb not in self.verbs:
            raise Http404(f"unknown action {verb!r}")
        # The page counts the runs matching any filter or search: without the view permission
        # it would tell a user who may not see runs whether a key or task exists.
        if not self.model_admin.has_view_permission(request):
            raise PermissionDenied
        if not getattr(self.model_admin, self.verbs[verb])(request):
            raise PermissionDenied
        try:
            changelist = self.model_admin.get_changelist_instance(request)
        except IncorrectLookupParameters:
            raise Http404("bad filter") from None
        queryset = changelist.get_queryset(request)
        back = reverse(
            f"{self.model_admin.admin_site.name}:{self.model_admin.model._meta.app_label}_"
            f"{self.model_admin.model._meta.model_name}_changelist"
        )
        query = request.GET.urlencode()
        scope = f"all runs matching {query or 'no filter'}"
        if request.method == "POST":
            if verb == "retry":
                apply_retry(self.model_admin, request, queryset, scope)
                return HttpResponseRedirect(f"{back}?{query}" if query else back)
            reason = _reason(request)
            if reason:
                apply_discard(self.model_admin, request, queryset, reason, scope)
                return HttpResponseRedirect(f"{back}?{query}" if query else back)
        return _confirm_page(
            self.model_admin,
            request,
            title=f"{verb.capitalize()} all matching runs",
            verb=verb,
            count=changelist.result_count,
            scope=scope,
            hidden=[],
            form_url=request.get_full_path(),
            needs_reason=verb == "discard",
            missing_reason=request.method == "POST",
        )


def task_result_url(admin_site: Any, run_id: Any) -> str | None:
    """The admin page of django-celery-results' TaskResult for this run, if there is one."""
    if not apps.is_installed("django_celery_results"):
        return None
    from django_celery_results.models import TaskResult

    if not admin_site.is_registered(TaskResult):
        return None
    pk = TaskResult.objects.filter(task_id=str(run_id)).values_list("pk", flat=True).first()
    if pk is None:
        return None
    try:
        return reverse(f"{admin_site.name}:django_celery_results_taskresult_change", args=[pk])
    except NoReverseMatch:
        return None


#: Bounds of the overview's ``?refresh=N`` (seconds).
REFRESH_MIN, REFRESH_MAX = 5, 3600


def _refresh(value: str | None) -> int | None:
    try:
        seconds = int(value or "")
    except ValueError:
        return None
    return min(max(seconds, REFRESH_MIN), REFRESH_MAX) if seconds > 0 else None


class OverviewView(TemplateView):
    """Attempts over time (finished, retried, failed; commit-to-start p50/p99) for the last
    hour, 24 hours or 7 days, all tasks or one; stuck work; runs by state; relays.

    Statements, whatever the ledger's size: the rollup's closed buckets and the open part of the
    window (``taskkit.core.rollup.read``: two), runs by state with the stuck-work counts (one
    grouped statement), relay heartbeats (one), plus one per stuck-work provider. Query string:
    ``window`` (1h, 24h, 7d), ``task``, ``refresh`` (seconds; the page reloads itself).
    """

    model_admin: Any = None
    template_name = "admin/taskkit/overview.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not self.model_admin.has_view_permission(request):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        now = timezone.now()
        site = self.model_admin.admin_site.name
        changelist_url = reverse(f"{site}:taskkit_taskrun_changelist")
        window = buckets.window(self.request.GET.get("window"))
        task = self.request.GET.get("task") or None
        chart = rollup.read(window, task, now)
        data = charts.rows(chart)

        by_state, succeeded_estimated = runs_by_state(now)
        states = [
            {
                "state": state.value,
                "count": by_state.get(state.value, {}).get("n", 0),
                "oldest": admin_display.short_age(by_state[state.value]["oldest"], now)
                if state.value in by_state and by_state[state.value].get("oldest")
                else "-",
                "estimated": state == RunState.SUCCEEDED and succeeded_estimated,
            }
            for state in RunState
        ]
        waiting = {
            state: admin_display.short_age(by_state[state]["oldest"], now)
            if state in by_state
            else None
            for state in (RunState.PENDING, RunState.QUEUED)
        }
        relays = [
            {
                "name": beat.name,
                "age": admin_display.short_age(beat.last_sweep_at, now),
                "stale": (now - beat.last_sweep_at).total_seconds() > stuck.RELAY_STALE_SECONDS,
                "sweeps": beat.sweeps,
                "counts": beat.last_counts,
                "started": beat.started_at,
            }
            for beat in RelayHeartbeat.objects.order_by("-last_sweep_at")[:20]
        ]
        stuck_rows = stuck.rows(
            stuck.StuckContext(
                request=self.request,
                now=now,
                changelist_url=changelist_url,
                extra={"site": site},
            ),
            by_state,
            relays,
        )
        tasks = [
            {
                "name": name,
                "finished": c.finished,
                "retried": c.retried,
                "failed": c.failed,
                "p50": charts.seconds_text(sketch.quantile(c.latency, 0.5)),
                "p99": charts.seconds_text(sketch.quantile(c.latency, 0.99)),
                "query": urlencode({"window": window.key, "task": name}),
            }
            for name, c in sorted(
                chart.by_task.items(), key=lambda item: (-item[1].failed, -item[1].total, item[0])
            )
        ]
        refresh = _refresh(self.request.GET.get("refresh"))
        title = window.label + (f", task {task}" if task else ", all tasks")
        opts = self.model_admin.model._meta
        return {
            **super().get_context_data(**kwargs),
            **self.model_admin.admin_site.each_context(self.request),
            "title": "Reliable tasks: overview",
            "opts": opts,
            "window": window,
            "windows": [
                {"key": w.key, "label": w.label, "query": _query(w.key, task, refresh)}
                for w in buckets.WINDOWS.values()
            ],
            "task": task,
            "all_tasks_query": _query(window.key, None, refresh),
            "refresh": refresh,
            "refresh_query": _query(window.key, task, None if refresh else 30),
            "chart_title": title,
            "attempts_svg": charts.attempts_chart(data, f"attempts, {title}"),
            "latency_svg": charts.latency_chart(data, f"commit-to-start, {title}"),
            "rows": data,
            "totals": {
                "finished": sum(r.finished for r in data),
                "retried": sum(r.retried for r in data),
                "failed": sum(r.failed for r in data),
            },
            "tasks": tasks,
            "live_since": chart.live_since,
            "stuck": stuck_rows,
            "states": states,
            "total": sum(s["count"] for s in states),
            "total_estimated": succeeded_estimated,
            "oldest_pending": waiting[RunState.PENDING],
            "oldest_queued": waiting[RunState.QUEUED],
            "relays": relays,
            "changelist_url": changelist_url,
            "failed_url": reverse(f"{site}:taskkit_failedrun_changelist"),
        }


def runs_by_state(now: Any) -> tuple[dict[str, dict[str, Any]], bool]:
    """Runs per state (count, oldest) with the stuck-work counts: one grouped statement.

    On PostgreSQL the SUCCEEDED runs (most of a large ledger) are not read: past
    ``EXACT_UP_TO`` rows their number is the planner's estimate of the table's rows less the
    other states' exact counts (the flag says so); below it they are counted exactly, in the
    same statement. Elsewhere every state is counted exactly.
    """
    queryset = TaskRun.objects.all()
    vendor = connections[queryset.db].vendor
    aggregates: dict[str, Any] = {
        "n": Count("pk"),
        "oldest": Min("created_at"),
        **stuck.aggregates(now),
    }
    if vendor != "postgresql":
        exact: list[dict[str, Any]] = list(
            queryset.values("state").annotate(**aggregates).order_by()  # type: ignore[arg-type]
        )
        return {row["state"]: dict(row) for row in exact}, False
    table = connections[queryset.db].ops.quote_name(TaskRun._meta.db_table)
    rows_sql = f"(SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass('{table}'))"
    # every state but SUCCEEDED, read through the two partial indexes that hold them: the runs
    # off the happy path (taskkit_run_state_created) and the RUNNING ones (taskkit_run_state_lease)
    others = Q(state__in=OFF_HAPPY_PATH) | Q(state=RunState.RUNNING)
    grouped: Any = (
        queryset.filter(others)
        .values("state")
        .annotate(
            **aggregates,
            table_rows=RawSQL(rows_sql, []),
            succeeded=RawSQL(
                f"(SELECT COUNT(*) FROM {table} WHERE state = %s AND {rows_sql} < %s)",
                [RunState.SUCCEEDED.value, EXACT_UP_TO],
            ),
        )
        .order_by()
    )
    rows: list[dict[str, Any]] = list(grouped)
    by_state = {row["state"]: dict(row) for row in rows}
    if not rows:  # no run but SUCCEEDED ones (or none): count them, the estimate decides how
        estimate = EstimatedCountPaginator(TaskRun.objects.order_by("pk"), 1).count
        return {RunState.SUCCEEDED.value: {"n": estimate}}, estimate > EXACT_UP_TO
    table_rows = int(rows[0]["table_rows"] or 0)
    if table_rows < EXACT_UP_TO:
        by_state[RunState.SUCCEEDED.value] = {"n": int(rows[0]["succeeded"] or 0)}
        return by_state, False
    others_total = sum(int(row["n"]) for row in rows)
    by_state[RunState.SUCCEEDED.value] = {"n": max(0, table_rows - others_total)}
    return by_state, True


def _query(window: str, task: str | None, refresh: int | None) -> str:
    params: dict[str, Any] = {"window": window}
    if task:
        params["task"] = task
    if refresh:
        params["refresh"] = refresh
    return urlencode(params)
