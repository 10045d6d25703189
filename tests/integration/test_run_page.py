"""The run page's operator buttons (Retry, Discard, Requeue now, Cancel, Pause / Resume task):
shown by permission and state, each behind a confirmation page and a CSRF-checked POST, each
written to the admin log and shown on the attempt timeline; the Cancel / Requeue list actions;
the pauses page."""

from __future__ import annotations

import datetime
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from taskkit.models import AttemptOutcome, RunState, TaskAttempt, TaskPause, TaskRun
from tests.integration.test_admin import operator as operator  # the fixture
from tests.integration.test_admin import staff

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(90)]

LIST = reverse("admin:taskkit_taskrun_changelist")
PAUSES = reverse("admin:taskkit_taskpause_changelist")
T0 = timezone.now() - datetime.timedelta(hours=1)


def make_run(state: str = RunState.FAILED, **fields) -> TaskRun:
    defaults = {"task_name": "shop.charge", "state": state, "queue": "celery"}
    return TaskRun.objects.create(**{**defaults, **fields})


def page(run: TaskRun) -> str:
    return reverse("admin:taskkit_taskrun_change", args=[run.pk])


def act(run: TaskRun, verb: str) -> str:
    return reverse("admin:taskkit_taskrun_act", args=[run.pk, verb])


def buttons(html: str) -> list[str]:
    return re.findall(r'class="taskkit-action taskkit-action-(\w+)"', html)


@pytest.mark.parametrize(
    ("state", "shown"),
    [
        (RunState.FAILED, ["retry", "discard", "pause"]),
        (RunState.QUEUED, ["discard", "requeue", "cancel", "pause"]),
        (RunState.RETRYING, ["discard", "requeue", "cancel", "pause"]),
        (RunState.RUNNING, ["cancel", "pause"]),
        (RunState.SUCCEEDED, ["pause"]),
        (RunState.CANCELLED, ["retry", "pause"]),
    ],
)
def test_the_buttons_follow_the_state(client, operator, state, shown):
    """Each state shows the buttons that can act on it."""
    assert buttons(client.get(page(make_run(state))).content.decode()) == shown


def test_buttons_follow_the_permissions(client):
    """A viewer sees no button and may not open or post any action; each permission adds its
    own buttons only."""
    run = make_run(RunState.QUEUED)
    staff(client, "view_taskrun")
    assert buttons(client.get(page(run)).content.decode()) == []
    for verb in ("retry", "discard", "requeue", "cancel", "pause", "resume"):
        assert client.get(act(run, verb)).status_code == 403
        assert client.post(act(run, verb), {"reason": "x"}).status_code == 403
    assert TaskRun.objects.get(pk=run.pk).state == RunState.QUEUED
    user = User.objects.get(username="staff")
    user.user_permissions.add(Permission.objects.get(codename="cancel_taskrun"))
    assert buttons(client.get(page(run)).content.decode()) == ["cancel"]
    assert client.post(act(run, "requeue")).status_code == 403
    assert client.post(act(run, "cancel")).status_code == 302
    assert TaskRun.objects.get(pk=run.pk).state == RunState.CANCELLED


def test_the_confirmation_page_changes_nothing_and_the_post_needs_csrf(operator):
    """GET shows the question and a CSRF-protected form; a POST without the token is refused."""
    run = make_run(RunState.QUEUED)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    response = browser.get(act(run, "cancel"))
    html = response.content.decode()
    assert response.status_code == 200 and "csrfmiddlewaretoken" in html and "Yes, cancel" in html
    assert TaskRun.objects.get(pk=run.pk).state == RunState.QUEUED
    assert browser.post(act(run, "cancel")).status_code == 403
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    assert browser.post(act(run, "cancel"), {"csrfmiddlewaretoken": token}).status_code == 302
    assert TaskRun.objects.get(pk=run.pk).state == RunState.CANCELLED


def test_retry_keeps_first_started_at_and_shows_on_the_timeline(client, operator):
    """An operator retry: PENDING, fresh budget, first_started_at kept; the LogEntry sits on the
    timeline between the attempt before and the attempt after."""
    run = make_run(RunState.FAILED, attempts=1, first_started_at=T0)
    TaskAttempt.objects.create(
        run=run, number=1, outcome=AttemptOutcome.FAILED, started_at=T0, finished_at=T0
    )
    response = client.post(act(run, "retry"))
    assert response.status_code == 302 and response.url == page(run)
    run.refresh_from_db()
    assert run.state == RunState.PENDING and run.attempt_base == 1 and run.first_started_at == T0
    entry = LogEntry.objects.get(object_id=str(run.pk))
    assert entry.user == operator and "Retried by an operator" in entry.change_message
    later = timezone.now() + datetime.timedelta(seconds=1)
    TaskAttempt.objects.create(
        run=run, number=2, outcome=AttemptOutcome.SUCCEEDED, started_at=later, finished_at=later
    )
    html = client.get(page(run)).content.decode()
    rows = re.findall(r'<tr class="(taskkit-attempt|taskkit-operator)"', html)
    assert rows == ["taskkit-attempt", "taskkit-operator", "taskkit-attempt"]
    assert "Retried by an operator" in html and "<strong>root</strong>" in html


def test_discard_needs_a_reason(client, operator):
    """Without a reason the page asks again; with one the run is DISCARDED and logged."""
    run = make_run(RunState.RETRYING)
    response = client.post(act(run, "discard"))
    assert response.status_code == 200 and "Give a reason" in response.content.decode()
    assert TaskRun.objects.get(pk=run.pk).state == RunState.RETRYING
    assert client.post(act(run, "discard"), {"reason": "duplicate order"}).status_code == 302
    run.refresh_from_db()
    assert run.state == RunState.DISCARDED and run.discard_reason == "duplicate order"
    assert "duplicate order" in LogEntry.objects.get(object_id=str(run.pk)).change_message


def test_requeue_now_makes_a_waiting_run_due(client, operator, django_capture_on_commit_callbacks):
    """Requeue now: a run waiting for its retry is due now and published on commit."""
    run = make_run(RunState.RETRYING, not_before=timezone.now() + datetime.timedelta(hours=1))
    with django_capture_on_commit_callbacks() as callbacks:
        assert client.post(act(run, "requeue")).status_code == 302
    run.refresh_from_db()
    assert run.state == RunState.PENDING and run.not_before is None
    assert len(callbacks) == 1  # the publish
    assert "Requeued now" in LogEntry.objects.get(object_id=str(run.pk)).change_message


def test_cancel_a_running_run_requests_it(client, operator):
    """Cancel on a RUNNING run records the request; the button then goes away."""
    run = make_run(RunState.RUNNING, attempts=1)
    assert client.post(act(run, "cancel")).status_code == 302
    run.refresh_from_db()
    assert run.state == RunState.RUNNING and run.cancel_requested_at is not None
    assert run.discard_reason == "cancelled by root"
    assert "Cancel requested" in LogEntry.objects.get(object_id=str(run.pk)).change_message
    assert "cancel" not in buttons(client.get(page(run)).content.decode())


def test_a_button_for_a_state_that_changed_meanwhile_changes_nothing(client, operator):
    """The run ended between the page and the click: a warning, no change, no log."""
    run = make_run(RunState.SUCCEEDED)
    response = client.post(act(run, "cancel"), follow=True)
    assert "not possible for a SUCCEEDED run" in response.content.decode()
    assert not LogEntry.objects.exists()


def test_pause_and_resume_the_task(client, operator):
    """Pause task stores who and why; Resume task removes it; both are logged on the run."""
    run = make_run(RunState.QUEUED)
    assert client.post(act(run, "pause"), {"reason": "supplier down"}).status_code == 302
    pause = TaskPause.objects.get(kind="task", name="shop.charge")
    assert pause.paused_by == "root" and pause.reason == "supplier down"
    assert "resume" in buttons(client.get(page(run)).content.decode())
    assert client.post(act(run, "resume")).status_code == 302
    assert not TaskPause.objects.exists()
    messages = list(
        LogEntry.objects.filter(object_id=str(run.pk))
        .order_by("action_time")
        .values_list("change_message", flat=True)
    )
    assert messages == [
        "Paused task shop.charge by an operator",
        "Resumed task shop.charge by an operator",
    ]


def test_list_actions_cancel_and_requeue(client, operator):
    """The list's Cancel and Requeue actions act on the selected runs only, each logged."""
    waiting, running, done = (
        make_run(RunState.QUEUED),
        make_run(RunState.RUNNING),
        make_run(RunState.SUCCEEDED),
    )
    data = {"action": "cancel_selected", "index": "0"}
    data["_selected_action"] = [str(r.pk) for r in (waiting, running, done)]
    assert client.post(LIST, data).status_code == 302
    states = dict(TaskRun.objects.values_list("pk", "state"))
    assert states[waiting.pk] == RunState.CANCELLED and states[done.pk] == RunState.SUCCEEDED
    assert TaskRun.objects.get(pk=running.pk).cancel_requested_at is not None
    assert LogEntry.objects.count() == 2
    later = make_run(RunState.QUEUED, requeue_at=timezone.now() + datetime.timedelta(hours=1))
    data = {"action": "requeue_selected", "index": "0", "_selected_action": [str(later.pk)]}
    assert client.post(LIST, data).status_code == 302
    assert TaskRun.objects.get(pk=later.pk).state == RunState.PENDING


def test_the_pauses_page_lists_adds_and_resumes(client, operator):
    """Pauses: the add form pauses a queue; the list shows it; the action resumes it, logged."""
    response = client.post(
        reverse("admin:taskkit_taskpause_add"), {"kind": "queue", "name": "emails", "reason": "x"}
    )
    assert response.status_code == 302
    pause = TaskPause.objects.get(kind="queue", name="emails")
    assert pause.paused_by == "root"
    assert "emails" in client.get(PAUSES).content.decode()
    data = {"action": "resume_selected", "index": "0", "_selected_action": [str(pause.pk)]}
    assert client.post(PAUSES, data).status_code == 302
    assert not TaskPause.objects.exists()
    assert LogEntry.objects.filter(change_message__contains="Resumed queue emails").exists()


def test_the_pauses_page_needs_the_permission_to_change_anything(client):
    """A viewer of runs sees the pauses but can neither add nor resume."""
    TaskPause.objects.create(kind="task", name="a.b", paused_at=timezone.now())
    staff(client, "view_taskrun")
    assert client.get(PAUSES).status_code == 200
    assert client.get(reverse("admin:taskkit_taskpause_add")).status_code == 403
    pk = TaskPause.objects.get().pk
    data = {"action": "resume_selected", "index": "0", "_selected_action": [str(pk)]}
    client.post(PAUSES, data)
    assert TaskPause.objects.exists()


def test_the_failed_tasks_page_has_the_buttons_and_leads_back_to_the_run(client, operator):
    """On "Failed tasks" the buttons work too; after a retry the run's own page follows."""
    run = make_run(RunState.FAILED)
    html = client.get(reverse("admin:taskkit_failedrun_change", args=[run.pk])).content.decode()
    assert buttons(html) == ["retry", "discard", "pause"]
    response = client.post(reverse("admin:taskkit_failedrun_act", args=[run.pk, "retry"]))
    assert response.status_code == 302 and response.url == page(run)
    assert TaskRun.objects.get(pk=run.pk).state == RunState.PENDING
