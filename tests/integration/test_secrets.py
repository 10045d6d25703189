"""Secrets: ``sensitive=`` arguments reach the task, and nothing else (ledger once ended, admin,
logs, signals, django-celery-results, Celery events); ``TASKKIT_MAX_RESULT_BYTES`` caps results.
A real worker runs the tasks (started with ``-E``, so it sends the events Flower reads)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone
from django_celery_results.models import TaskResult

from taskkit.core import ledger, signals
from taskkit.core.exceptions import InvalidIdempotencyKey, RedactedError
from taskkit.models import RunState, TaskAttempt, TaskRun
from taskkit.relay import sweep as relay
from tests.celery_app import app
from tests.conftest import wait_for
from tests.integration.test_execution import finished
from tests.testapp import tasks
from tests.testapp.models import Effect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

CARD = "4111111111111111"
REDACTED = {"__taskkit__": "redacted"}
LIST = reverse("admin:taskkit_taskrun_changelist")


def everything_stored_about(run_id) -> str:
    """The run's row, its attempts and Celery's result row, as one text to search."""
    row = TaskRun.objects.filter(pk=run_id).values().get()
    attempts = list(TaskAttempt.objects.filter(run_id=run_id).values())
    results = list(TaskResult.objects.filter(task_id=str(run_id)).values())
    return json.dumps([row, attempts, results], default=str)


def json_log_lines() -> str:
    with open(settings.JSON_LOG_FILE) as f:
        return f.read()


@pytest.fixture
def operator(client):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))


def _seen_within(events: list[dict], uuid: str, seconds: float) -> bool:
    """Whether an event about run ``uuid`` arrives in ``events`` within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if any(e.get("uuid") == uuid for e in list(events)):
            return True
        time.sleep(0.05)
    return False


class EventTap:
    """Collects the Celery events the worker sends (what Flower receives), in a thread."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self._connection = app.connection_for_read()
        self._receiver = app.events.Receiver(self._connection, handlers={"*": self.events.append})
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # the connection closed under it at stop()
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def start(self) -> EventTap:
        self._thread.start()
        # the receiver must be subscribed before the events of interest are sent. Its queue is
        # bound only once capture() is consuming, so a warm-up run's events can go out before it
        # exists and be lost for good (a busy machine): send warm-up runs until one is seen
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            warm = tasks.record.delay("event-tap-warm-up")
            if _seen_within(self.events, warm.id, 10.0):
                return self
        pytest.fail("timed out after 90s waiting for the event receiver to see a warm-up run")

    def of(self, run_id) -> list[dict]:
        return [e for e in list(self.events) if e.get("uuid") == str(run_id)]

    def stop(self) -> None:
        self._receiver.should_stop = True
        self._connection.release()
        self._thread.join(10)


@pytest.fixture
def event_tap(worker):
    tap = EventTap().start()
    yield tap
    tap.stop()


def test_the_task_gets_the_value_and_the_ended_run_keeps_none_of_it(worker, event_tap):
    """Success: the worker got the real card; the SUCCEEDED row, Celery's result row and the
    events hold no trace of it; the stored argument is a "redacted" marker."""
    result = tasks.charges_card.delay("o-1", card=CARD)
    run = finished(result.id)
    assert run.state == RunState.SUCCEEDED and run.result == {"order": "o-1"}
    effect = Effect.objects.get(run_id=result.id)
    assert effect.payload["digest"] == tasks.card_digest(CARD)  # the exact value arrived
    assert run.args == ["o-1"] and run.kwargs == {"card": REDACTED}
    stored = wait_for(lambda: TaskResult.objects.filter(task_id=result.id).first())
    assert stored.status == "SUCCESS"
    assert CARD not in everything_stored_about(result.id)
    wait_for(lambda: any(e["type"] == "task-succeeded" for e in event_tap.of(result.id)))
    assert CARD not in json.dumps(event_tap.of(result.id), default=str)


def test_a_failure_whose_message_holds_the_value_is_masked_everywhere(worker, event_tap):
    """The task raises with the card in the message, twice (retry, then FAILED): the attempts,
    the run's last error, the logs, Celery's result row, the events and the worker's output say
    "[sensitive]" where the card was; the positional argument is scrubbed."""
    result = tasks.charges_card.delay("o-2", CARD, fail="echo")
    run = finished(result.id)
    assert run.state == RunState.FAILED and run.attempts == 2
    assert run.args == ["o-2", REDACTED] and run.kwargs == {"fail": "echo"}
    assert run.error_type == "builtins.ValueError"  # the real class is kept in the ledger
    assert run.error_message == "card [sensitive] declined for o-2"
    assert "[sensitive]" in run.error_traceback
    assert Effect.objects.filter(run_id=result.id).count() == 2
    stored = wait_for(
        lambda: TaskResult.objects.filter(task_id=result.id, status="FAILURE").first()
    )
    assert "RedactedError" in stored.result and "[sensitive]" in stored.result
    assert CARD not in everything_stored_about(result.id)
    wait_for(lambda: any(e["type"] == "task-failed" for e in event_tap.of(result.id)))
    run_events = event_tap.of(result.id)
    assert {"task-retried", "task-failed"} <= {e["type"] for e in run_events}
    leaky = [e for e in run_events if CARD in json.dumps(e, default=str)]
    assert not leaky, json.dumps(leaky, default=str)
    wait_for(lambda: f"{result.id}" in json_log_lines() and "failed after 2" in json_log_lines())
    assert CARD not in json_log_lines()
    assert CARD not in worker.log()


def test_a_retry_then_success_keeps_the_value_out_of_the_retry_records(worker):
    """Attempt 1 raises with the card; attempt 2 (which needs the real value) succeeds."""
    result = tasks.charges_card.delay("o-3", CARD, fail="once")
    run = finished(result.id)
    assert run.state == RunState.SUCCEEDED and run.attempts == 2
    digests = Effect.objects.filter(run_id=result.id).values_list("payload__digest", flat=True)
    assert list(digests) == [tasks.card_digest(CARD)] * 2
    failed = TaskAttempt.objects.get(run_id=result.id, number=1)
    assert failed.error_message == "card [sensitive] declined for o-3"
    assert CARD not in everything_stored_about(result.id)
    assert CARD not in worker.log()


def test_admin_masks_a_live_run_and_shows_an_ended_one_as_redacted(operator, client, clean_broker):
    """A queued run's detail page shows "sensitive", a discarded one "redacted"; never the value
    (nor on the list pages)."""
    live = tasks.parked_card.delay("o-4", card=CARD, note="kept", pin="98765")
    run = TaskRun.objects.get(pk=live.id)
    assert run.kwargs["card"] == CARD and run.kwargs["pin"] == "98765"  # kept until it ends
    assert run.kwargs["note"] == "kept"  # **extra is sensitive: every extra key is masked
    page = client.get(reverse("admin:taskkit_taskrun_change", args=[live.id])).content.decode()
    assert CARD not in page and "98765" not in page and "kept" not in page
    assert 'class="taskkit-hidden">sensitive<' in page and "o-4" in page
    assert CARD not in client.get(LIST).content.decode()

    assert ledger.discard_runs(TaskRun.objects.filter(pk=live.id), reason="test") == [run.pk]
    run.refresh_from_db()
    assert run.state == RunState.DISCARDED
    assert run.args == ["o-4"]
    assert run.kwargs == {"card": REDACTED, "note": REDACTED, "pin": REDACTED}
    page = client.get(reverse("admin:taskkit_taskrun_change", args=[live.id])).content.decode()
    assert CARD not in page and 'class="taskkit-hidden">redacted<' in page
    assert CARD not in everything_stored_about(live.id)


def test_an_operator_retry_of_a_scrubbed_run_is_refused_saying_why(operator, client, clean_broker):
    """Retrying a scrubbed run leaves it as it was and says why; other runs retry normally."""
    scrubbed = tasks.parked_card.delay("o-5", CARD)
    plain = tasks.parked_card.delay("o-6")  # no sensitive value passed: nothing to scrub
    ledger.discard_runs(TaskRun.objects.filter(pk__in=[scrubbed.id, plain.id]), reason="x")
    assert TaskRun.objects.get(pk=scrubbed.id).args == ["o-5", REDACTED]
    response = client.post(
        LIST,
        {
            "action": "retry_selected",
            "index": "0",
            "_selected_action": [scrubbed.id, plain.id],
        },
        follow=True,
    )
    text = response.content.decode()
    assert "1 run(s) (selected runs) were not retried: their sensitive arguments were scrubbed" in (
        text
    )
    assert "Retried 1 run(s)" in text
    assert TaskRun.objects.get(pk=scrubbed.id).state == RunState.DISCARDED
    assert TaskRun.objects.get(pk=plain.id).state in (RunState.PENDING, RunState.QUEUED)
    assert ledger.retry_runs(TaskRun.objects.filter(pk=scrubbed.id)) == []


def test_the_relay_scrubs_a_run_it_fails_after_a_lost_lease(clean_broker):
    """A RUNNING run whose worker vanished, failed by the relay, is scrubbed too (the relay needs
    only the row)."""
    result = tasks.parked_card.delay("o-7", card=CARD)
    run = TaskRun.objects.get(pk=result.id)
    claim = ledger.claim(run, "gone:1", lease_seconds=60)
    assert claim is not None
    TaskRun.objects.filter(pk=run.pk).update(
        lease_until=timezone.now() - timezone.timedelta(seconds=1)
    )
    counts: Counter[str] = Counter()
    relay.recover_expired_leases(10, counts)
    assert counts["recovered_to_failed"] == 1
    run.refresh_from_db()
    assert run.state == RunState.FAILED and run.kwargs == {"card": REDACTED}
    assert ledger.scrub_sensitive([run.pk]) == 0  # idempotent: already scrubbed


def test_a_key_holding_a_sensitive_value_is_refused(clean_broker):
    """Idempotency keys are stored in clear: a key containing the card is refused at dispatch."""
    with pytest.raises(InvalidIdempotencyKey, match="contains the value of a sensitive argument"):
        tasks.parked_card.apply_async(("o-8", CARD), idempotency_key=f"charge:{CARD}")
    assert not TaskRun.objects.filter(task_name=tasks.parked_card.name).exists()
    ok = tasks.parked_card.apply_async(("o-8", CARD), idempotency_key="charge:o-8")
    assert TaskRun.objects.get(pk=ok.id).idempotency_key == "charge:o-8"


def test_signals_get_the_masked_exception_in_eager_mode(clean_broker):
    """Receivers of run_retrying / run_failed get a RedactedError naming the original class."""
    seen: list[BaseException] = []

    def receiver(sender, exception, **kwargs):
        seen.append(exception)

    signals.run_retrying.connect(receiver, dispatch_uid="test-secrets-retrying")
    signals.run_failed.connect(receiver, dispatch_uid="test-secrets-failed")
    app.conf.task_always_eager = True
    try:
        result = tasks.charges_card.delay("o-9", CARD, fail="echo")
    finally:
        app.conf.task_always_eager = False
        signals.run_retrying.disconnect(dispatch_uid="test-secrets-retrying")
        signals.run_failed.disconnect(dispatch_uid="test-secrets-failed")
    assert seen, "no signal received"
    for exc in seen:
        assert isinstance(exc, RedactedError)
        assert exc.original_type == "builtins.ValueError"
        assert CARD not in str(exc) and "[sensitive]" in str(exc)
    run = TaskRun.objects.get(pk=result.id)  # RETRYING: its arguments are kept until it ends
    assert run.state == RunState.RETRYING and CARD in json.dumps(run.args)
    errors = list(TaskAttempt.objects.filter(run=run).values("error_message", "traceback"))
    assert errors and CARD not in json.dumps(errors) and CARD not in run.error_traceback


def test_a_result_over_the_cap_succeeds_with_a_marker_and_a_warning(worker):
    """The run SUCCEEDS once (no retry: its work is done); the stored and the Celery result are
    a marker with the size; a WARNING names the run and the setting."""
    size = 2 * 1024 * 1024
    result = tasks.big_result.delay(size)
    run = finished(result.id)
    assert run.state == RunState.SUCCEEDED and run.attempts == 1
    limit = 1024 * 1024
    assert run.result == {"__taskkit__": "omitted", "bytes": size + 2, "limit": limit}
    assert Effect.objects.filter(run_id=result.id).count() == 1
    stored = wait_for(lambda: TaskResult.objects.filter(task_id=result.id).first())
    assert len(stored.result) < 200 and "omitted" in stored.result

    def warning():
        for line in json_log_lines().splitlines():
            record = json.loads(line)
            if record.get("run_id") == str(result.id) and "TASKKIT_MAX_RESULT_BYTES" in record.get(
                "message", ""
            ):
                return record
        return None

    record = wait_for(warning, what="the result-cap warning")
    assert record["levelname"] == "WARNING" and str(size + 2) in record["message"]


def test_a_result_under_the_cap_is_stored_as_is(worker):
    result = tasks.big_result.delay(1000)
    assert finished(result.id).result == "x" * 1000


def test_an_adopted_run_is_scrubbed_when_it_ends(worker):
    """A message sent without taskkit (``send_task``) is adopted with its scrub spec; the message
    itself carried the card (the sender's doing), but the ledger keeps none of it once ended."""
    sent = app.send_task(tasks.charges_card.name, args=["o-10", CARD])
    run = finished(sent.id)
    assert run.state == RunState.SUCCEEDED
    assert Effect.objects.get(run_id=sent.id).payload["digest"] == tasks.card_digest(CARD)
    assert run.args == ["o-10", REDACTED]
