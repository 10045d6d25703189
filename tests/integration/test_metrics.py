"""Metrics view and taskkit_status: ledger figures after real runs, parsed by prometheus-client."""

import datetime
import io

import pytest
from django.core.management import call_command
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from taskkit.models import RelayHeartbeat, RunState, TaskRun
from tests.integration.test_execution import finished
from tests.testapp import tasks

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

RECORD = "tests.testapp.tasks.record"
ALWAYS_FAILS = "tests.testapp.tasks.always_fails"


TOKEN = "test-metrics-token"


@pytest.fixture(autouse=True)
def metrics_token(settings):
    """Scrapes in this module authenticate with a bearer token unless a test says otherwise."""
    settings.TASKKIT_METRICS_TOKEN = TOKEN


def scrape(client, **headers):
    headers.setdefault("HTTP_AUTHORIZATION", f"Bearer {TOKEN}")
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def ledger_with_history(worker):
    """Two successes, one failure after three attempts, one run left queued, one relay."""
    ok = [tasks.record.delay(f"m{i}") for i in range(2)]
    failed = tasks.always_fails.delay("m-fail")
    for result in [*ok, failed]:
        finished(result.id)
    parked = tasks.parked.delay("waits")  # its queue has no worker
    TaskRun.objects.filter(pk=parked.id).update(
        created_at=timezone.now() - datetime.timedelta(seconds=90)
    )
    now = timezone.now()
    RelayHeartbeat.objects.create(
        name="relay-host:1",
        started_at=now - datetime.timedelta(minutes=5),
        last_sweep_at=now - datetime.timedelta(seconds=12),
    )
    return parked


def test_metrics_view_reports_ledger_figures(client, ledger_with_history):
    """Runs by state, attempts, failures, waiting age, commit-to-start and relay age."""
    samples = scrape(client)
    assert value(samples, "taskkit_runs", task=RECORD, state="SUCCEEDED") == 2
    assert value(samples, "taskkit_runs", task=ALWAYS_FAILS, state="FAILED") == 1
    parked = "tests.testapp.tasks.parked"
    assert value(samples, "taskkit_runs", task=parked, state="QUEUED") == 1
    assert value(samples, "taskkit_attempts_total", task=RECORD) == 2
    assert value(samples, "taskkit_attempts_total", task=ALWAYS_FAILS) == 3
    failures = value(samples, "taskkit_attempt_failures_total", task=ALWAYS_FAILS, outcome="FAILED")
    assert failures == 3
    assert value(samples, "taskkit_attempt_failures_total", task=RECORD, outcome="FAILED") is None
    queued_age = value(samples, "taskkit_oldest_waiting_run_age_seconds", state="QUEUED")
    assert 89 <= queued_age < 150
    assert value(samples, "taskkit_oldest_waiting_run_age_seconds", state="PENDING") == 0
    assert value(samples, "taskkit_commit_to_start_sample_runs") == 3
    p50 = value(samples, "taskkit_commit_to_start_seconds", quantile="0.5")
    p99 = value(samples, "taskkit_commit_to_start_seconds", quantile="0.99")
    assert 0 <= p50 <= p99 < 30
    relay_age = value(samples, "taskkit_relay_heartbeat_age_seconds", relay="relay-host:1")
    assert 12 <= relay_age < 60


def test_metrics_agree_across_processes(client, ledger_with_history):
    """Figures come from the database: a second scrape (any process) reads the same counts."""
    first, second = scrape(client), scrape(client)
    key = ("taskkit_runs", (("state", "SUCCEEDED"), ("task", RECORD)))
    assert first[key] == second[key] == 2


def test_metrics_queries_are_few(client, django_assert_max_num_queries, ledger_with_history):
    """A scrape costs eight queries however many tasks and runs there are (the oldest waiting run
    of each waiting state is one index seek)."""
    with django_assert_max_num_queries(8):
        scrape(client)


@pytest.fixture
def users(django_user_model):
    """Users by role; view permission is the admin's 'Can view task run'."""
    from django.contrib.auth.models import Permission

    view = Permission.objects.get(content_type__app_label="taskkit", codename="view_taskrun")
    made = {
        "staff_viewer": django_user_model.objects.create_user("viewer", is_staff=True),
        "staff_without_permission": django_user_model.objects.create_user("blind", is_staff=True),
        "viewer_not_staff": django_user_model.objects.create_user("outsider"),
        "superuser": django_user_model.objects.create_superuser("root", password="x"),
    }
    made["staff_viewer"].user_permissions.add(view)
    made["viewer_not_staff"].user_permissions.add(view)
    return made


@pytest.mark.parametrize(
    ("token", "public", "user", "authorization", "status"),
    [
        # nothing configured: strangers are refused (the default)
        ("", False, None, None, 401),
        ("", False, None, "Bearer ", 401),
        # a token
        ("s3cret", False, None, None, 401),
        ("s3cret", False, None, "Bearer wrong", 401),
        ("s3cret", False, None, "Bearer s3cret-and-more", 401),
        ("s3cret", False, None, "Basic s3cret", 401),
        ("s3cret", False, None, "Bearer s3cret", 200),
        ("s3cret", False, None, "bearer  s3cret ", 200),  # the scheme is case-insensitive
        # logged-in users
        ("", False, "staff_viewer", None, 200),
        ("", False, "superuser", None, 200),
        ("", False, "staff_without_permission", None, 403),
        ("", False, "viewer_not_staff", None, 403),
        ("s3cret", False, "staff_without_permission", "Bearer s3cret", 200),
        ("s3cret", False, "staff_without_permission", "Bearer wrong", 401),
        # public on purpose
        ("", True, None, None, 200),
        ("s3cret", True, None, "Bearer wrong", 200),
    ],
)
def test_who_may_read_the_metrics(
    client, settings, users, token, public, user, authorization, status
):
    """Refused unless the bearer token matches, the user is staff with the view permission, or
    TASKKIT_METRICS_PUBLIC is on: 401 with a Bearer challenge, 403 for a user without it."""
    settings.TASKKIT_METRICS_TOKEN = token
    settings.TASKKIT_METRICS_PUBLIC = public
    if user:
        client.force_login(users[user])
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization is not None else {}
    response = client.get("/metrics", **headers)
    assert response.status_code == status, response.content
    if status == 200:
        assert b"taskkit_runs" in response.content
    else:
        assert b"taskkit_runs" not in response.content
        assert b"TASKKIT_METRICS_TOKEN" in response.content  # says how to get in
    if status == 401:
        assert response["WWW-Authenticate"].startswith('Bearer realm="taskkit metrics"')
        assert ('error="invalid_token"' in response["WWW-Authenticate"]) == (
            authorization is not None and authorization.lower().startswith("bearer")
        )
    else:
        assert not response.has_header("WWW-Authenticate")


def test_a_refused_scrape_runs_no_query(client, settings, django_assert_num_queries):
    """An anonymous scrape is refused before the ledger is read (no GROUP BY for strangers)."""
    settings.TASKKIT_METRICS_TOKEN = "s3cret"
    with django_assert_num_queries(0):
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope").status_code == 401
        assert client.get("/metrics").status_code == 401


def test_taskkit_status_prints_the_same_figures(ledger_with_history):
    """manage.py taskkit_status shows runs per task and state, waits, delays and relays."""
    out = io.StringIO()
    call_command("taskkit_status", stdout=out)
    text = out.getvalue()
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    states = [str(s) for s in RunState]
    record = dict(zip([*states, "attempts", "failed"], rows[RECORD], strict=True))
    assert record["SUCCEEDED"] == "2" and record["attempts"] == "2" and record["failed"] == "0"
    failing = dict(zip([*states, "attempts", "failed"], rows[ALWAYS_FAILS], strict=True))
    assert failing["FAILED"] == "1" and failing["attempts"] == "3" and failing["failed"] == "3"
    assert rows["QUEUED"][0].endswith("s") and float(rows["QUEUED"][0][:-1]) >= 89
    assert "Commit to start (last 3 started runs)" in text and "p50" in text
    assert "relay-host:1" in text


def test_taskkit_status_on_an_empty_ledger():
    """An empty ledger prints placeholders rather than failing."""
    out = io.StringIO()
    call_command("taskkit_status", stdout=out)
    assert "(no runs)" in out.getvalue() and "(no started runs)" in out.getvalue()
