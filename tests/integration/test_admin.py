"""The operators' admin: lists, filters, query counts, the escaped run detail, actions, overview."""

from __future__ import annotations

import datetime
import uuid
from urllib.parse import urlencode

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_celery_results.models import TaskResult

from taskkit.models import AttemptOutcome, RelayHeartbeat, RunState, TaskAttempt, TaskRun

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(90)]

SCRIPT = "<script>alert('x')</script>"
LIST = reverse("admin:taskkit_taskrun_changelist")
FAILED_LIST = reverse("admin:taskkit_failedrun_changelist")


def make_runs(n: int, **fields) -> list[TaskRun]:
    defaults = {"task_name": "shop.charge", "state": RunState.FAILED, "queue": "celery"}
    defaults.update(fields)
    runs = TaskRun.objects.bulk_create([TaskRun(**defaults) for _ in range(n)], batch_size=1000)
    return runs


def detail_url(run: TaskRun, model: str = "taskrun") -> str:
    return reverse(f"admin:taskkit_{model}_change", args=[run.pk])


@pytest.fixture
def operator(client):
    """A superuser logged into the admin."""
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return user


def staff(client, *perms: str) -> User:
    user = User.objects.create_user("staff", "s@example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=perms))
    client.force_login(user)
    return user


def post_action(client, url: str, action: str, runs, **extra):
    data = {"action": action, "index": "0", "_selected_action": [str(r.pk) for r in runs]}
    data.update(extra)
    return client.post(url, data)


# -- lists -----------------------------------------------------------------------------------------


def test_list_shows_the_operator_columns(client, operator):
    """The runs list shows task, state, queue, attempts, key, age and the error's first line."""
    (run,) = make_runs(
        1,
        idempotency_key="charge:42",
        attempts=3,
        queue="payments",
        error_type="shop.gateway.GatewayDown",
        error_message="gateway down\nsecond line not shown",
    )
    page = client.get(LIST).content.decode()
    for text in ("shop.charge", 'data-state="FAILED"', "payments", "charge:42", "GatewayDown"):
        assert text in page
    # One line shown; the rest only inside <details> (tests/integration/test_console.py).
    line = page.split('class="taskkit-error-line"', 1)[1].split("</summary>", 1)[0]
    assert "gateway down" in line and "second line" not in line
    assert str(run.pk)[:8] in page


def _list_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


@pytest.mark.parametrize("url", [LIST, FAILED_LIST, LIST + "?state__exact=FAILED&q=charge"])
def test_list_query_count_does_not_grow_with_runs(client, operator, url):
    """A list page makes the same few queries for 3 runs as for 600 runs (no N+1)."""
    make_runs(3, error_type="x.Err", error_message="boom")
    few = _list_queries(client, url)
    make_runs(600, error_type="x.Err", error_message="boom")
    TaskAttempt.objects.bulk_create(
        [
            TaskAttempt(run=r, number=1, outcome="FAILED", finished_at=timezone.now())
            for r in TaskRun.objects.all()
        ]
    )
    many = _list_queries(client, url)
    assert few == many
    assert many <= 8, f"{many} queries"


def test_list_never_fetches_payloads_or_tracebacks(client, operator):
    """The list query defers args, kwargs, result and traceback columns."""
    make_runs(2, error_traceback="T" * 100_000, args=["A" * 10_000])
    with CaptureQueriesContext(connection) as queries:
        client.get(LIST)
    selects = [q["sql"] for q in queries if '"error_message"' in q["sql"]]
    assert selects and all('"error_traceback"' not in s and '"args"' not in s for s in selects)


def test_filters_by_state_task_queue_and_date(client, operator):
    """Each filter narrows the list to the matching runs."""
    make_runs(1, task_name="a.one", state=RunState.SUCCEEDED, queue="q1")
    make_runs(1, task_name="b.two", state=RunState.FAILED, queue="q2")
    old = make_runs(1, task_name="c.old", state=RunState.FAILED, queue="q2")[0]
    TaskRun.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - datetime.timedelta(days=40)
    )

    def names(query: str) -> set[str]:
        page = client.get(LIST + query).content.decode()
        return {n for n in ("a.one", "b.two", "c.old") if f'field-task_name">{n}<' in page}

    assert names("") == {"a.one", "b.two", "c.old"}
    assert names("?state__exact=SUCCEEDED") == {"a.one"}
    assert names("?task_name=b.two") == {"b.two"}
    assert names("?queue=q2") == {"b.two", "c.old"}
    since = timezone.now() - datetime.timedelta(days=7)
    assert names("?" + urlencode({"created_at__gte": str(since)})) == {"a.one", "b.two"}


def test_search_by_run_id_key_and_task_name(client, operator):
    """Search finds a run by its full id, by its idempotency key and by task name."""
    (a,) = make_runs(1, task_name="shop.refund", idempotency_key="refund:7")
    (b,) = make_runs(1, task_name="shop.charge", idempotency_key="charge:9")

    def found(term: str) -> set[str]:
        page = client.get(LIST, {"q": term}).content.decode()
        return {str(r.pk) for r in (a, b) if str(r.pk) in page}

    assert found(str(a.pk)) == {str(a.pk)}
    assert found("charge:9") == {str(b.pk)}
    assert found("refund") == {str(a.pk)}


def test_failed_tasks_lists_only_failed_runs(client, operator):
    """The Failed tasks entry lists FAILED runs and nothing else."""
    make_runs(1, task_name="x.failed")
    make_runs(1, task_name="x.done", state=RunState.SUCCEEDED)
    page = client.get(FAILED_LIST).content.decode()
    assert "x.failed" in page and "x.done" not in page
    assert (
        "Failed tasks" in client.get(reverse("admin:app_list", args=["taskkit"])).content.decode()
    )


# -- detail ----------------------------------------------------------------------------------------


def test_detail_escapes_stored_html_everywhere(client, operator):
    """A <script> in args, kwargs, result, error or an attempt's traceback is shown escaped."""
    (run,) = make_runs(
        1,
        args=[SCRIPT, {"note": SCRIPT}],
        kwargs={SCRIPT: SCRIPT},
        result={"html": SCRIPT},
        error_type=SCRIPT,
        error_message=SCRIPT,
        error_traceback=SCRIPT,
        idempotency_key=SCRIPT,
        task_name=SCRIPT,
    )
    TaskAttempt.objects.create(
        run=run,
        number=1,
        outcome=AttemptOutcome.FAILED,
        worker=SCRIPT,
        finished_at=timezone.now(),
        error_type=SCRIPT,
        error_message=SCRIPT,
        traceback=SCRIPT,
    )
    for url in (detail_url(run), detail_url(run, "failedrun"), LIST, FAILED_LIST):
        page = client.get(url).content.decode()
        assert "<script>alert" not in page, url
        assert "&lt;script&gt;alert" in page, url


def test_detail_links_model_references_to_their_admin_page(client, operator):
    """A model argument links to the object's change page when its model is in the admin."""
    (run,) = make_runs(
        1,
        args=[
            {"__taskkit__": "model", "model": "auth.User", "pk": operator.pk},
            {"__taskkit__": "model", "model": "testapp.Order", "pk": 5},
            {"__taskkit__": "decimal", "value": "9.99"},
        ],
    )
    page = client.get(detail_url(run)).content.decode()
    user_url = reverse("admin:auth_user_change", args=[operator.pk])
    assert f'<a class="taskkit-ref" href="{user_url}">auth.User #{operator.pk}</a>' in page
    assert '<span class="taskkit-ref">testapp.Order #5</span>' in page  # not in this admin
    assert "decimal(&quot;9.99&quot;)" in page


def test_detail_shows_the_attempt_timeline(client, operator):
    """Each attempt shows its number, outcome, start, duration, worker, error and traceback."""
    (run,) = make_runs(1, attempts=2)
    started = timezone.now() - datetime.timedelta(seconds=5)
    for number, outcome in ((1, AttemptOutcome.LOST), (2, AttemptOutcome.FAILED)):
        TaskAttempt.objects.create(
            run=run,
            number=number,
            outcome=outcome,
            worker=f"host:{100 + number}",
            started_at=started,
            finished_at=started + datetime.timedelta(seconds=1.5),
            duration=1.5,
            error_type="builtins.ValueError",
            error_message=f"bad {number}",
            traceback=f"Traceback {number}",
            retry_delay=2.0 if number == 1 else None,
        )
    page = client.get(detail_url(run)).content.decode()
    assert page.count('class="taskkit-attempt"') == 2
    for text in ("host:101", "host:102", "1.500 s", "bad 2", "Traceback 1", "worker lost", "2.0 s"):
        assert text in page


def test_detail_links_to_flower_and_the_task_result(client, operator, settings):
    """With TASKKIT_FLOWER_URL set the run links to Flower; a TaskResult row is linked too."""
    (run,) = make_runs(1)
    assert "taskkit-flower" not in client.get(detail_url(run)).content.decode()
    result = TaskResult.objects.create(task_id=str(run.pk), status="FAILURE")
    settings.TASKKIT_FLOWER_URL = "http://flower.example:5555/"
    page = client.get(detail_url(run)).content.decode()
    assert f'href="http://flower.example:5555/task/{run.pk}"' in page
    result_url = reverse("admin:django_celery_results_taskresult_change", args=[result.pk])
    assert f'href="{result_url}"' in page


def test_runs_are_read_only(client, operator):
    """No add, change or delete: the pages refuse and a POST to the detail changes nothing."""
    (run,) = make_runs(1, task_name="ro.task")
    assert client.get(reverse("admin:taskkit_taskrun_add")).status_code == 403
    assert client.get(reverse("admin:taskkit_taskrun_delete", args=[run.pk])).status_code == 403
    client.post(detail_url(run), {"task_name": "changed", "state": "SUCCEEDED"})
    run.refresh_from_db()
    assert (run.task_name, run.state) == ("ro.task", RunState.FAILED)
    assert 'name="task_name"' not in client.get(detail_url(run)).content.decode()


# -- actions ---------------------------------------------------------------------------------------


def test_retry_action_retries_through_the_ledger_and_logs(
    client, django_capture_on_commit_callbacks
):
    """Retry (with permission) moves FAILED runs to PENDING, publishes on commit and logs each."""
    user = staff(client, "view_taskrun", "retry_taskrun")
    runs = make_runs(3, attempts=5)
    done = make_runs(1, state=RunState.SUCCEEDED)
    with django_capture_on_commit_callbacks() as callbacks:
        response = post_action(client, LIST, "retry_selected", [*runs, *done])
    assert response.status_code == 302
    assert len(callbacks) == 1  # the ledger's publish of the retried runs
    states = dict(TaskRun.objects.values_list("pk", "state"))
    assert {states[r.pk] for r in runs} == {RunState.PENDING}
    assert states[done[0].pk] == RunState.SUCCEEDED
    assert TaskRun.objects.get(pk=runs[0].pk).attempt_base == 5
    entries = LogEntry.objects.filter(user=user)
    assert sorted(e.object_id for e in entries) == sorted(str(r.pk) for r in runs)
    assert all("Retried" in e.change_message and "3 runs" in e.change_message for e in entries)


def test_actions_need_their_permission(client):
    """Without retry/discard permissions no action is offered and a forged POST does nothing."""
    staff(client, "view_taskrun")
    runs = make_runs(2)
    page = client.get(LIST).content.decode()
    assert "retry_selected" not in page and "discard_selected" not in page
    assert "Retry all matching" not in page
    post_action(client, LIST, "retry_selected", runs)
    post_action(client, LIST, "discard_selected", runs, post="yes", reason="no")
    assert set(TaskRun.objects.values_list("state", flat=True)) == {RunState.FAILED}
    assert not LogEntry.objects.exists()
    matching = reverse("admin:taskkit_taskrun_matching", args=["retry"])
    assert client.post(matching).status_code == 403
    assert (
        client.get(reverse("admin:taskkit_taskrun_matching", args=["discard"])).status_code == 403
    )


def test_retry_permission_does_not_grant_discard(client):
    """A user who may retry but not discard sees only the retry action."""
    staff(client, "view_taskrun", "retry_taskrun")
    runs = make_runs(1)
    page = client.get(LIST).content.decode()
    assert "retry_selected" in page and "discard_selected" not in page
    post_action(client, LIST, "discard_selected", runs, post="yes", reason="no")
    assert TaskRun.objects.get().state == RunState.FAILED


def test_discard_asks_for_a_reason_then_discards(client):
    """Discard shows an intermediate form; with a reason the runs are DISCARDED and logged."""
    user = staff(client, "view_taskrun", "discard_taskrun")
    runs = make_runs(2)
    form = post_action(client, LIST, "discard_selected", runs)
    assert form.status_code == 200 and 'name="reason"' in form.content.decode()
    assert set(TaskRun.objects.values_list("state", flat=True)) == {RunState.FAILED}
    no_reason = post_action(client, LIST, "discard_selected", runs, post="yes", reason=" ")
    assert "Give a reason" in no_reason.content.decode()
    done = post_action(client, LIST, "discard_selected", runs, post="yes", reason="card expired")
    assert done.status_code == 302
    assert set(TaskRun.objects.values_list("state", "discard_reason")) == {
        (RunState.DISCARDED, "card expired")
    }
    assert LogEntry.objects.filter(user=user, change_message__contains="card expired").count() == 2


def test_retry_everything_matching_the_filter(client, operator, django_capture_on_commit_callbacks):
    """Retry all matching a filter covers 2000 runs beyond the page and leaves others alone."""
    make_runs(2000, task_name="bulk.target")
    others = make_runs(5, task_name="bulk.other")
    url = reverse("admin:taskkit_taskrun_matching", args=["retry"]) + "?task_name=bulk.target"
    confirm = client.get(url)
    assert '<strong class="taskkit-count">2000</strong>' in confirm.content.decode()
    with (
        django_capture_on_commit_callbacks() as callbacks,
        CaptureQueriesContext(connection) as queries,
    ):
        response = client.post(url)
    assert response.status_code == 302 and len(callbacks) == 1
    assert TaskRun.objects.filter(task_name="bulk.target", state=RunState.PENDING).count() == 2000
    assert set(
        TaskRun.objects.filter(pk__in=[r.pk for r in others]).values_list("state", flat=True)
    ) == {RunState.FAILED}
    assert LogEntry.objects.count() == 2000
    assert len(queries) < 40, f"{len(queries)} queries for 2000 runs"


def test_discard_everything_matching_via_select_across(client, operator):
    """The discard action with "select all" applies to the whole filtered queryset, not the page."""
    runs = make_runs(120, task_name="across.target")
    make_runs(3, task_name="across.other")
    url = LIST + "?task_name=across.target"
    response = post_action(
        client, url, "discard_selected", runs[:1], select_across="1", post="yes", reason="bulk"
    )
    assert response.status_code == 302
    assert TaskRun.objects.filter(state=RunState.DISCARDED).count() == 120
    assert TaskRun.objects.filter(task_name="across.other", state=RunState.FAILED).count() == 3


def test_discard_matching_needs_a_reason(client, operator):
    """The "discard all matching" page refuses to discard without a reason."""
    make_runs(4)
    url = reverse("admin:taskkit_taskrun_matching", args=["discard"])
    assert "Give a reason" in client.post(url, {"reason": ""}).content.decode()
    assert not TaskRun.objects.filter(state=RunState.DISCARDED).exists()
    client.post(url, {"reason": "obsolete"})
    assert TaskRun.objects.filter(state=RunState.DISCARDED).count() == 4


# -- overview --------------------------------------------------------------------------------------


def test_overview_shows_states_waiting_age_failures_and_no_relay(client, operator):
    """The overview counts runs by state and ages the oldest PENDING run.

    (Charts over time count attempts, and escape task names: tests/integration/test_console.py.)"""
    make_runs(3, task_name=SCRIPT, finished_at=timezone.now())
    make_runs(1, task_name="old.failure", finished_at=timezone.now() - datetime.timedelta(days=2))
    (pending,) = make_runs(1, state=RunState.PENDING)
    TaskRun.objects.filter(pk=pending.pk).update(
        created_at=timezone.now() - datetime.timedelta(hours=2)
    )
    page = client.get(reverse("admin:taskkit_taskrun_overview")).content.decode()
    assert '<tr data-state="FAILED">' in page and '<td class="taskkit-n">4</td>' in page
    assert "Oldest PENDING: <strong>2h</strong>" in page
    assert "oldest QUEUED: <strong>none</strong>" in page
    assert '<svg class="taskkit-chart"' in page and "<script>alert" not in page
    assert "No relay seen" in page


def test_overview_shows_relay_heartbeats(client, operator):
    """A relay heartbeat row is shown with its age; an old one is marked stale."""
    now = timezone.now()
    RelayHeartbeat.objects.create(
        name="relay-host:42", started_at=now, last_sweep_at=now - datetime.timedelta(minutes=10)
    )
    page = client.get(reverse("admin:taskkit_taskrun_overview")).content.decode()
    assert "relay-host:42" in page and "10m ago (stale)" in page
    assert "No relay seen" not in page


def test_app_index_and_lists_link_to_the_overview(client, operator):
    """The taskkit app index and the run lists link to the overview page."""
    overview = reverse("admin:taskkit_taskrun_overview")
    assert overview in client.get(reverse("admin:app_list", args=["taskkit"])).content.decode()
    assert overview in client.get(FAILED_LIST).content.decode()


def test_unknown_run_id_search_finds_nothing(client, operator):
    """Searching a well-formed but unknown run id shows no runs (primary-key lookup)."""
    make_runs(2)
    page = client.get(LIST, {"q": str(uuid.uuid4())}).content.decode()
    assert 'class="taskkit-state"' not in page


@pytest.mark.parametrize(
    ("perms", "model", "verb", "status"),
    [
        # the verb's permission alone is not enough: the page would count runs for a non-viewer
        (("retry_taskrun",), "taskrun", "retry", 403),
        (("discard_taskrun",), "taskrun", "discard", 403),
        (("retry_taskrun", "discard_taskrun"), "failedrun", "retry", 403),
        (("view_taskrun",), "taskrun", "retry", 403),
        (("view_taskrun",), "taskrun", "discard", 403),
        (("view_taskrun", "retry_taskrun"), "taskrun", "discard", 403),
        # the failed-runs list needs its own view permission, like its changelist
        (("view_taskrun", "retry_taskrun"), "failedrun", "retry", 403),
        (("view_taskrun", "retry_taskrun"), "taskrun", "retry", 200),
        (("view_taskrun", "discard_taskrun"), "taskrun", "discard", 200),
        (("view_failedrun", "retry_taskrun"), "failedrun", "retry", 200),
    ],
)
def test_matching_views_need_the_view_permission(client, perms, model, verb, status):
    """The "all matching" pages need view permission and the verb's; a refused user learns
    nothing about which runs exist and changes nothing."""
    staff(client, *perms)
    make_runs(1, idempotency_key="secret-key")
    make_runs(2, task_name="shop.other")  # not matched by the search: never touched
    url = reverse(f"admin:taskkit_{model}_matching", args=[verb]) + "?q=secret-key"
    page = client.get(url)
    assert page.status_code == status
    assert ('<strong class="taskkit-count">' in page.content.decode()) == (status == 200)
    posted = client.post(url, {"reason": "because"})
    assert posted.status_code == (302 if status == 200 else 403)
    changed = TaskRun.objects.exclude(state=RunState.FAILED).count()
    assert changed == (1 if status == 200 else 0)
    assert LogEntry.objects.count() == changed
