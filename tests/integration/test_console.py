"""The on-call console through the admin client, on real rows: charts over time (live and from
the rollup), stuck work, the lists' search and filters, and their query counts."""

from __future__ import annotations

import datetime
import re
import uuid

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from taskkit.admin import stuck
from taskkit.core import buckets, rollup
from taskkit.models import (
    AttemptOutcome,
    AttemptRollup,
    RelayHeartbeat,
    RunState,
    TaskAttempt,
    TaskRun,
)
from tests.conftest import wait_for
from tests.testapp import tasks
from tests.testapp.models import Order

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(120)]

OVERVIEW = reverse("admin:taskkit_taskrun_overview")
LIST = reverse("admin:taskkit_taskrun_changelist")
FAILED_LIST = reverse("admin:taskkit_failedrun_changelist")


@pytest.fixture
def operator(client):
    user = User.objects.create_superuser("oncall", "oncall@example.com", "pw")
    client.force_login(user)
    return user


def run(**fields) -> TaskRun:
    defaults = {"task_name": "shop.charge", "state": RunState.SUCCEEDED, "queue": "celery"}
    defaults.update(fields)
    created_at = defaults.pop("created_at", None)
    made = TaskRun.objects.create(**defaults)
    if created_at is not None:
        TaskRun.objects.filter(pk=made.pk).update(created_at=created_at)
        made.refresh_from_db()
    return made


def attempt(
    of: TaskRun,
    number: int,
    outcome: str,
    at: datetime.datetime,
    retry: bool = False,
    started: datetime.datetime | None = None,
) -> TaskAttempt:
    return TaskAttempt.objects.create(
        run=of,
        number=number,
        outcome=outcome,
        started_at=started or at - datetime.timedelta(seconds=1),
        finished_at=at,
        duration=1.0,
        retry_delay=1.0 if retry else None,
        error_type="" if outcome == AttemptOutcome.SUCCEEDED else "x.Boom",
    )


def minute_ago(now: datetime.datetime, minutes: int) -> datetime.datetime:
    """Half a minute into the bucket ``minutes`` before the one ``now`` falls in."""
    return (
        buckets.floor(now, 60)
        - datetime.timedelta(minutes=minutes)
        + datetime.timedelta(seconds=30)
    )


def numbers(page: str) -> dict[str, tuple[int, int, int]]:
    """The numbers table: bucket start (ISO) -> (finished, retried, failed)."""
    found = {}
    for start, f, r, x in re.findall(
        r'<tr data-bucket="([^"]+)"><th scope="row">[^<]*</th><td>(\d+)</td><td>(\d+)</td>'
        r"<td>(\d+)</td>",
        page,
    ):
        found[start] = (int(f), int(r), int(x))
    return found


@pytest.fixture
def history():
    """Attempts of two tasks at known minutes and hours before now."""
    now = timezone.now()
    a = run(task_name="shop.charge")
    b = run(task_name="shop.ship", created_at=minute_ago(now, 3) - datetime.timedelta(seconds=9))
    attempt(a, 1, AttemptOutcome.FAILED, minute_ago(now, 5), retry=True)
    attempt(a, 2, AttemptOutcome.FAILED, minute_ago(now, 5))  # gave up
    attempt(b, 1, AttemptOutcome.SUCCEEDED, minute_ago(now, 3))
    c = run(task_name="shop.charge")
    attempt(c, 1, AttemptOutcome.SUCCEEDED, minute_ago(now, 3))
    old = run(task_name="shop.charge")
    attempt(old, 1, AttemptOutcome.SUCCEEDED, minute_ago(now, 60 * 5))  # 5 h ago
    ancient = run(task_name="shop.ship")
    attempt(ancient, 1, AttemptOutcome.FAILED, minute_ago(now, 60 * 24 * 3))  # 3 days ago
    return now


def _bucket_key(moment: datetime.datetime, width: int) -> str:
    return timezone.localtime(buckets.floor(moment, width)).isoformat()


def test_each_chart_bucket_counts_the_attempts_that_ended_in_it(client, operator, history):
    """1h per minute, 24h and 7d per hour: each bucket holds exactly its attempts."""
    now = history
    page = client.get(OVERVIEW + "?window=1h").content.decode()
    rows = numbers(page)
    assert len(rows) == 60
    assert rows[_bucket_key(minute_ago(now, 5), 60)] == (0, 1, 1)
    assert rows[_bucket_key(minute_ago(now, 3), 60)] == (2, 0, 0)
    assert sum(sum(v) for v in rows.values()) == 4

    rows = numbers(client.get(OVERVIEW + "?window=24h").content.decode())
    assert len(rows) == 24
    assert sum(v[0] for v in rows.values()) == 3  # the 5 h old one counts
    assert sum(v[2] for v in rows.values()) == 1
    assert rows[_bucket_key(minute_ago(now, 300), 3600)] == (1, 0, 0)

    rows = numbers(client.get(OVERVIEW + "?window=7d").content.decode())
    assert len(rows) == 168
    assert sum(v[2] for v in rows.values()) == 2  # the 3-day-old failure too
    assert rows[_bucket_key(minute_ago(now, 60 * 24 * 3), 3600)] == (0, 0, 1)


def test_a_task_filter_narrows_the_chart_and_the_task_table_lists_every_task(
    client, operator, history
):
    """?task= charts one task's attempts; the by-task table still lists all tasks."""
    page = client.get(OVERVIEW + "?window=1h&task=shop.ship").content.decode()
    rows = numbers(page)
    assert sum(v[0] for v in rows.values()) == 1 and sum(v[2] for v in rows.values()) == 0
    assert 'data-task="shop.charge"' in page and 'data-task="shop.ship"' in page


def test_task_names_are_escaped(client, operator):
    """A task name is text wherever the overview shows it (table, links, tooltips)."""
    script = "<script>alert('x')</script>"
    attempt(run(task_name=script), 1, AttemptOutcome.SUCCEEDED, minute_ago(timezone.now(), 2))
    page = client.get(OVERVIEW).content.decode()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page


def test_the_rollup_gives_the_same_charts_as_the_live_count(history):
    """Filling the closed buckets changes no number; a second fill counts nothing again."""
    now = history
    before = {key: rollup.read(w, now=now) for key, w in buckets.WINDOWS.items()}
    filled = rollup.fill(now)
    assert filled[60] > 0 and filled[3600] > 0
    assert AttemptRollup.objects.filter(task_name="shop.charge").exists()
    assert rollup.fill(now) == {60: 0, 3600: 0}
    for key, w in buckets.WINDOWS.items():
        after = rollup.read(w, now=now)
        assert after.live_since > before[key].live_since
        assert [(c.finished, c.retried, c.failed, c.latency) for c in after.totals] == [
            (c.finished, c.retried, c.failed, c.latency) for c in before[key].totals
        ], key
        assert {t: c.total for t, c in after.by_task.items()} == {
            t: c.total for t, c in before[key].by_task.items()
        }


def test_a_later_fill_counts_only_the_new_buckets(history):
    """Attempts after the last fill come live, and are counted by the next fill once closed."""
    now = history
    rollup.fill(now)
    later = now + datetime.timedelta(minutes=3)
    late = run(task_name="shop.charge")
    attempt(late, 1, AttemptOutcome.SUCCEEDED, now + datetime.timedelta(seconds=20))
    chart = rollup.read(buckets.window("1h"), now=later)
    assert sum(c.finished for c in chart.totals) == 3
    assert rollup.fill(later)[60] >= 1
    chart = rollup.read(buckets.window("1h"), now=later)
    assert sum(c.finished for c in chart.totals) == 3


def test_commit_to_start_percentiles_per_bucket(client, operator):
    """p50 and p99 of first attempts' commit-to-start, within the sketch's 5%."""
    now = timezone.now()
    at = minute_ago(now, 2)
    for delay in [1.0] * 98 + [30.0, 30.0]:
        r = run(created_at=at - datetime.timedelta(seconds=delay + 1))
        attempt(r, 1, AttemptOutcome.SUCCEEDED, at, started=at - datetime.timedelta(seconds=1))
    retry_only = run(created_at=at - datetime.timedelta(hours=1))
    attempt(retry_only, 2, AttemptOutcome.SUCCEEDED, at)  # not a first attempt: no latency
    chart = rollup.read(buckets.window("1h"), now=now)
    from taskkit.core import sketch

    bucket = chart.totals[-3]
    assert sketch.count(bucket.latency) == 100
    assert sketch.quantile(bucket.latency, 0.5) == pytest.approx(1.0, rel=0.05)
    assert sketch.quantile(bucket.latency, 0.99) == pytest.approx(30.0, rel=0.05)
    page = client.get(OVERVIEW).content.decode()
    assert 'class="taskkit-point" data-series="p99"' in page
    assert re.search(r"p99 (29|3[01])\.\d s", page)


@pytest.mark.django_db(transaction=True)
def test_an_operator_retry_does_not_shrink_past_failures(worker, client, operator):
    """Attempts are counted when they end: retrying a FAILED run adds attempts, removes none."""
    run_id = tasks.always_fails.delay("console").id
    wait_for(
        lambda: TaskRun.objects.filter(pk=run_id, state=RunState.FAILED).exists(),
        60,
        what="the run to fail",
    )
    chart = rollup.read(buckets.window("1h"))
    assert (sum(c.retried for c in chart.totals), sum(c.failed for c in chart.totals)) == (2, 1)
    client.post(
        FAILED_LIST, {"action": "retry_selected", "index": "0", "_selected_action": [run_id]}
    )
    wait_for(
        lambda: (
            TaskAttempt.objects.filter(run_id=run_id).count() == 6
            and TaskRun.objects.filter(pk=run_id, state=RunState.FAILED).exists()
        ),
        60,
        what="the retried run to fail again",
    )
    page = client.get(OVERVIEW).content.decode()
    rows = numbers(page)
    assert sum(v[1] for v in rows.values()) == 4  # retried
    assert sum(v[2] for v in rows.values()) == 2  # failed: the first give-up still counts


# -- stuck work --------------------------------------------------------------------------------


def test_the_stuck_panel_counts_each_kind_and_links_to_its_list(client, operator):
    """PENDING past the grace, QUEUED past requeue, RUNNING past the lease, no relay."""
    now = timezone.now()
    run(state=RunState.PENDING, created_at=now - datetime.timedelta(minutes=5))
    run(state=RunState.PENDING)  # fresh: not stuck
    q = run(state=RunState.QUEUED)
    TaskRun.objects.filter(pk=q.pk).update(queued_at=now - datetime.timedelta(hours=2))
    run(state=RunState.QUEUED, queued_at=now)
    run(
        state=RunState.RUNNING,
        started_at=now - datetime.timedelta(hours=3),
        lease_until=now - datetime.timedelta(minutes=1),
    )
    run(state=RunState.RUNNING, started_at=now, lease_until=now + datetime.timedelta(hours=1))
    page = client.get(OVERVIEW).content.decode()
    for key, age in (("pending", "5m"), ("queued", "2h"), ("running", "3h")):
        row = re.search(rf'<tr data-stuck="{key}"[^>]*>(.*?)</tr>', page, re.S).group(1)
        assert '<td class="taskkit-n">1</td>' in row and f"<td>{age}</td>" in row, (key, row)
        assert f"{LIST}?stuck={key}" in row
        listed = client.get(f"{LIST}?stuck={key}").content.decode()
        assert listed.count('class="action-select"') == 1, key
    assert 'data-stuck="relay"' in page and "no relay has ever swept" in page


def test_a_stale_relay_is_stuck_work(client, operator):
    now = timezone.now()
    RelayHeartbeat.objects.create(
        name="old:1", started_at=now, last_sweep_at=now - datetime.timedelta(minutes=30)
    )
    page = client.get(OVERVIEW).content.decode()
    row = re.search(r'<tr data-stuck="relay"[^>]*>(.*?)</tr>', page, re.S).group(1)
    assert "relay heartbeat stale" in row and "<td>30m</td>" in row


def test_providers_add_rows_to_the_panel(client, operator, monkeypatch):
    """A provider's rows appear after the built-in ones (how paused tasks are shown)."""

    def paused(context):
        yield stuck.StuckRow(key="paused", label="paused tasks", count=2, url="/x")

    monkeypatch.setattr(stuck, "PROVIDERS", [paused])
    page = client.get(OVERVIEW).content.decode()
    assert 'data-stuck="paused"' in page and "paused tasks" in page


def test_paused_tasks_and_queues_are_rows_of_the_panel_with_their_waiting_runs(client, operator):
    """Each pause is a row: the runs it holds back (ended runs and other tasks not counted), how
    long it has held them, a link to them and to the pauses page where it is resumed."""
    import taskkit

    for state in (RunState.QUEUED, RunState.QUEUED, RunState.RETRYING, RunState.SUCCEEDED):
        run(task_name="shop.charge", state=state)
    run(task_name="shop.invoice", state=RunState.QUEUED, queue="slow")
    taskkit.pause_task("shop.charge", by="oncall")
    taskkit.pause_queue("slow")
    taskkit.pause_queue("empty")
    page = client.get(OVERVIEW).content.decode()
    rows = re.findall(r'<tr data-stuck="paused"[^>]*>(.*?)</tr>', page, re.S)
    assert len(rows) == 3
    by_label = {re.search(r"<td>(.*?)</td>", r).group(1): r for r in rows}
    charge = by_label["task shop.charge paused by oncall"]
    assert '<td class="taskkit-n">3</td>' in charge
    assert f"{LIST}?task_name__exact=shop.charge" in charge
    assert reverse("admin:taskkit_taskpause_changelist") in charge
    assert '<td class="taskkit-n">1</td>' in by_label["queue slow paused"]
    assert '<td class="taskkit-n">0</td>' in by_label["queue empty paused"]
    listed_runs = client.get(f"{LIST}?task_name__exact=shop.charge").content.decode()
    assert listed_runs.count('class="action-select"') == 4  # the link lists the task's runs


def test_the_page_reloads_itself_when_asked(client, operator):
    page = client.get(OVERVIEW + "?refresh=2").content.decode()
    assert '<meta http-equiv="refresh" content="5">' in page  # at least 5 s
    assert "http-equiv" not in client.get(OVERVIEW).content.decode()


# -- lists: search and filters ---------------------------------------------------------------


def listed(client, url: str, **params) -> set[str]:
    response = client.get(url, params)
    assert response.status_code == 200
    return set(re.findall(r'name="_selected_action" value="([^"]+)"', response.content.decode()))


@pytest.fixture
def ledger_rows(db):
    order = Order.objects.create(reference="o-1")
    rows = {
        "card": run(
            task_name="shop.charge",
            state=RunState.FAILED,
            idempotency_key="charge:1001",
            args=[1001, "EUR"],
            kwargs={"customer": "acme"},
            error_type="shop.gateway.CardDeclined",
            error_message="card declined by issuer (code 51)\nsecond line",
        ),
        "ship": run(
            task_name="shop.ship",
            state=RunState.FAILED,
            kwargs={"order": {"__taskkit__": "model", "model": "testapp.order", "pk": order.pk}},
            error_type="builtins.TimeoutError",
            error_message="carrier timed out",
        ),
        "ok": run(task_name="shop.mail", kwargs={"order_id": 1001}, queue="mail"),
    }
    return rows, order


def test_search_finds_each_kind(client, operator, ledger_rows):
    """Id prefix, full id, key, error text, error class, argument values, task name."""
    rows, order = ledger_rows
    card, ship, ok = (str(rows[k].pk) for k in ("card", "ship", "ok"))
    for term, expected in [
        (card[:8], {card}),
        (card, {card}),
        (f"id:{card[:6]}", {card}),
        ("charge:1001", {card}),
        ("key:charge:1001", {card}),
        ("error:DECLINED by", {card}),
        ("declined", {card}),
        ("class:CardDeclined", {card}),
        ("class:builtins.TimeoutError", {ship}),
        ("arg:1001", {card}),
        ('arg:"EUR"', {card}),
        ("arg:EUR", {card}),
        ("arg:order_id=1001", {ok}),
        ("arg:customer=acme", {card}),
        (f"arg:order={order.pk}", {ship}),
        ("task:ship", {ship}),
        ("shop.", {card, ship, ok}),
        ("arg:999", set()),
    ]:
        assert listed(client, LIST, q=term) == expected, term


def test_search_never_matches_a_sensitive_argument(
    client, operator, django_capture_on_commit_callbacks
):
    """A live run's sensitive values are not searchable; its other arguments are."""
    with django_capture_on_commit_callbacks(execute=False):
        secret = tasks.parked_card.delay("ref-77", card="4242424242424242", note="hello")
        positional = tasks.parked_card.delay("ref-78", "5555444433332222")
    assert TaskRun.objects.get(pk=secret.id).options["sensitive"]
    assert listed(client, LIST, q="arg:card=4242424242424242") == set()
    assert listed(client, LIST, q="arg:4242424242424242") == set()
    assert listed(client, LIST, q="arg:5555444433332222") == set()
    assert listed(client, LIST, q="arg:note=hello") == set()  # **extra is sensitive too
    assert listed(client, LIST, q="arg:ref-77") == {secret.id}
    assert listed(client, LIST, q="arg:ref-78") == {positional.id}


def test_a_bad_search_says_how_to_write_it(client, operator):
    page = client.get(LIST, {"q": "id:xyz"}).content.decode()
    assert "is not the start of a run id" in page


def test_filters_recent_error_class_queue_task(client, operator, ledger_rows):
    rows, _ = ledger_rows
    old = run(task_name="shop.charge", created_at=timezone.now() - datetime.timedelta(hours=3))
    every = {str(r.pk) for r in rows.values()}
    assert listed(client, LIST, recent="15m") == every
    assert listed(client, LIST, recent="24h") == every | {str(old.pk)}
    assert listed(client, LIST, error_class="shop.gateway.CardDeclined") == {str(rows["card"].pk)}
    assert listed(client, LIST, queue="mail") == {str(rows["ok"].pk)}
    assert listed(client, LIST, task_name="shop.ship") == {str(rows["ship"].pk)}
    page = client.get(FAILED_LIST).content.decode()
    assert "CardDeclined" in page and "TimeoutError" in page  # error class choices
    TaskRun.objects.filter(pk=rows["card"].pk).update(finished_at=timezone.now())
    assert listed(client, FAILED_LIST, ended="1h") == {str(rows["card"].pk)}


def test_the_last_error_is_one_line_with_the_rest_on_demand(client, operator, ledger_rows):
    page = client.get(FAILED_LIST).content.decode()
    assert '<details class="taskkit-error"><summary class="taskkit-error-line"' in page
    assert "CardDeclined: card declined by issuer (code 51)</summary>" in page
    assert "second line</pre>" in page


# -- query counts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        OVERVIEW + "?window=1h",
        OVERVIEW + "?window=24h",
        OVERVIEW + "?window=7d&task=shop.charge",
        LIST,
        FAILED_LIST,
        LIST + "?q=charge:1001",
        LIST + "?q=error:declined",
        LIST + "?q=class:CardDeclined",
        LIST + "?q=arg:1001",
        LIST + "?q=arg:order_id=1001",
        LIST + "?stuck=queued",
        LIST + "?recent=1h&error_class=x.Boom",
    ],
)
def test_every_console_page_makes_at_most_8_queries(
    client, operator, ledger_rows, history, url, django_assert_max_num_queries
):
    rollup.fill(history)
    run_id = str(ledger_rows[0]["card"].pk)
    with django_assert_max_num_queries(8):
        assert client.get(url).status_code == 200
    with django_assert_max_num_queries(8):
        assert client.get(LIST, {"q": run_id[:8]}).status_code == 200


def test_uuid_prefix_range_is_exact(ledger_rows):
    """The id prefix range holds exactly the ids that start with it."""
    rows, _ = ledger_rows
    some = str(rows["card"].pk)
    low, high = uuid.UUID(some[:8] + "0" * 24), uuid.UUID(some[:8] + "f" * 24)
    assert set(TaskRun.objects.filter(pk__gte=low, pk__lte=high).values_list("pk", flat=True)) == {
        rows["card"].pk
    }
