"""The run page's operator buttons: Retry, Discard, Requeue now, Cancel, Pause / Resume task.

Each button is a link to a confirmation page (GET, changes nothing); its form POSTs back with
Django's CSRF token. Each verb is gated by a permission (``retry_taskrun`` for Retry and Requeue
now, ``discard_taskrun``, ``cancel_taskrun``, ``pause_taskrun``) on top of the admin's view
permission, and is applied together with its ``LogEntry`` in one transaction, so the run's
history (and its attempt timeline, which shows these entries between the attempts) names who did
what and when. Run transitions go through ``taskkit.core.ledger`` (via ``taskkit.producer.dispatch``
where a publish follows, and ``taskkit.core.control`` for cancel and pauses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.generic import View

from ..core import control, ledger
from ..core.db import db_alias
from ..models import RunState, TaskRun
from ..producer import dispatch
from . import views as admin_views


@dataclass(frozen=True)
class Verb:
    """One button: its label, the permission it needs (``has_<perm>_permission`` on the model
    admin), the states it applies to (empty: any), and what the confirmation page says."""

    name: str
    label: str
    permission: str
    states: tuple[str, ...]
    explains: str
    needs_reason: bool = False


VERBS: dict[str, Verb] = {
    verb.name: verb
    for verb in (
        Verb(
            "retry",
            "Retry",
            "retry",
            tuple(ledger.RETRYABLE_BY_OPERATOR),
            "The run goes back to the queue with a fresh attempt budget; its history and its "
            "first start time are kept.",
        ),
        Verb(
            "discard",
            "Discard",
            "discard",
            tuple(ledger.DISCARDABLE_BY_OPERATOR),
            "The run ends DISCARDED with your reason; it will not run again unless retried.",
            needs_reason=True,
        ),
        Verb(
            "requeue",
            "Requeue now",
            "retry",
            tuple(ledger.REQUEUEABLE_BY_OPERATOR),
            "The waiting run is due now and published again at once (a run of a paused task or "
            "queue still waits for the resume). Attempts and budget are kept.",
        ),
        Verb(
            "cancel",
            "Cancel",
            "cancel",
            (*ledger.CANCELLABLE_AT_ONCE, RunState.RUNNING),
            "A waiting run ends CANCELLED at once. A running run gets a cancel request: its task "
            "can read current_run().cancel_requested, and it is never retried.",
        ),
        Verb(
            "pause",
            "Pause task",
            "pause",
            (),
            "Every run of this task waits (it is not claimed, not published and not failed) "
            "until the task is resumed, on every worker and host.",
        ),
        Verb(
            "resume",
            "Resume task",
            "pause",
            (),
            "The task's waiting runs are published again by the next relay sweep.",
        ),
    )
}


def allowed(model_admin: Any, request: HttpRequest, verb: Verb) -> bool:
    return bool(getattr(model_admin, f"has_{verb.permission}_permission")(request))


def buttons(model_admin: Any, request: HttpRequest, run: TaskRun) -> list[dict[str, str]]:
    """The buttons the run page shows this user for this run (permitted, and of use now)."""
    paused = control.pause_of(run.task_name) is not None
    shown = []
    for verb in VERBS.values():
        if verb.states and run.state not in verb.states:
            continue
        if verb.name in ("pause", "resume") and paused != (verb.name == "resume"):
            continue  # Pause task when it is not paused, Resume task when it is
        if verb.name == "cancel" and run.state == RunState.RUNNING and run.cancel_requested_at:
            continue
        if allowed(model_admin, request, verb):
            shown.append(
                {"name": verb.name, "label": verb.label, "url": _url(model_admin, run, verb)}
            )
    return shown


def _url(model_admin: Any, run: TaskRun, verb: Verb) -> str:
    opts = model_admin.model._meta
    return reverse(
        f"{model_admin.admin_site.name}:{opts.app_label}_{opts.model_name}_act",
        args=[run.pk, verb.name],
    )


def _change_url(model_admin: Any, run: TaskRun) -> str:
    """The run's page in the list of all runs (a retried run leaves "Failed tasks")."""
    return reverse(f"{model_admin.admin_site.name}:taskkit_taskrun_change", args=[run.pk])


class RunActionView(View):
    """GET: the confirmation page of one verb for one run; POST (CSRF-checked by the admin's
    view wrapper): the change, its LogEntry, a message, back to the run page."""

    model_admin: Any = None

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        verb = VERBS.get(kwargs["verb"])
        if verb is None:
            raise Http404(f"unknown action {kwargs['verb']!r}")
        if not self.model_admin.has_view_permission(request) or not allowed(
            self.model_admin, request, verb
        ):
            raise PermissionDenied
        run = get_object_or_404(TaskRun.objects.all(), pk=kwargs["object_id"])
        back = _change_url(self.model_admin, run)
        if verb.states and run.state not in verb.states:
            self.model_admin.message_user(
                request,
                f"{verb.label}: not possible for a {run.state} run (only "
                f"{', '.join(verb.states)}). Nothing was changed.",
                messages.WARNING,
            )
            return HttpResponseRedirect(back)
        reason = request.POST.get("reason", "").strip()[: admin_views.REASON_MAX]
        if request.method == "POST" and (reason or not verb.needs_reason):
            self.apply(request, verb, run, reason)
            return HttpResponseRedirect(back)
        opts = self.model_admin.model._meta
        return TemplateResponse(
            request,
            "admin/taskkit/run_action.html",
            {
                **self.model_admin.admin_site.each_context(request),
                "opts": opts,
                "title": f"{verb.label}: {run.task_name}",
                "run": run,
                "verb": verb,
                "back_url": back,
                "changelist_url": reverse(
                    f"{self.model_admin.admin_site.name}:{opts.app_label}_{opts.model_name}"
                    "_changelist"
                ),
                "missing_reason": request.method == "POST",
            },
        )

    def apply(self, request: HttpRequest, verb: Verb, run: TaskRun, reason: str) -> None:
        model_admin = self.model_admin
        one = TaskRun.objects.filter(pk=run.pk)
        user = str(request.user.get_username())
        if verb.name == "retry":
            admin_views.apply_retry(model_admin, request, one, scope="from the run page")
        elif verb.name == "discard":
            admin_views.apply_discard(model_admin, request, one, reason, scope="from the run page")
        elif verb.name == "requeue":
            requeue(model_admin, request, one, scope="from the run page")
        elif verb.name == "cancel":
            cancel(model_admin, request, [run.pk], scope="from the run page")
        else:
            pausing = verb.name == "pause"
            with transaction.atomic(using=db_alias()):
                if pausing:
                    changed = control.pause_task(run.task_name, by=user, reason=reason)
                else:
                    changed = control.resume_task(run.task_name)
                what = "Paused" if pausing else "Resumed"
                if changed:
                    admin_views.log_operator_action(
                        request, [run.pk], f"{what} task {run.task_name} by an operator"
                    )
            model_admin.message_user(
                request,
                f"{what} task {run.task_name}."
                if changed
                else f"Task {run.task_name} was {'already' if pausing else 'not'} paused.",
                messages.SUCCESS if changed else messages.WARNING,
            )


def requeue(model_admin: Any, request: HttpRequest, queryset: Any, scope: str) -> int:
    with transaction.atomic(using=db_alias()):
        ids = dispatch.requeue_runs(queryset)
        admin_views.log_operator_action(
            request, ids, f"Requeued now by an operator ({len(ids)} runs in this action; {scope})"
        )
    model_admin.message_user(
        request,
        f"Requeued {len(ids)} run(s) ({scope}): due now, published on commit. Only PENDING, "
        "QUEUED and RETRYING runs are requeued; others were left as they were.",
        messages.SUCCESS if ids else messages.WARNING,
    )
    return len(ids)


def cancel(model_admin: Any, request: HttpRequest, run_ids: list[Any], scope: str) -> int:
    with transaction.atomic(using=db_alias()):
        cancelled, requested = control.cancel_many(run_ids, by=str(request.user.get_username()))
        admin_views.log_operator_action(
            request, cancelled, f"Cancelled by an operator ({len(cancelled)} runs; {scope})"
        )
        admin_views.log_operator_action(
            request,
            requested,
            f"Cancel requested by an operator (running; {len(requested)} runs; {scope})",
        )
    model_admin.message_user(
        request,
        f"Cancelled {len(cancelled)} waiting run(s); requested cancelling of {len(requested)} "
        f"running run(s) ({scope}). Ended runs were left as they were.",
        messages.SUCCESS if cancelled or requested else messages.WARNING,
    )
    return len(cancelled) + len(requested)


def operator_entries(run: TaskRun) -> list[LogEntry]:
    """The admin log entries about ``run`` (retries, discards, cancels, pauses), oldest first."""
    content_type = ContentType.objects.get_for_model(TaskRun)
    return list(
        LogEntry.objects.filter(content_type_id=content_type.pk, object_id=str(run.pk))
        .select_related("user")
        .order_by("action_time")[:200]
    )
