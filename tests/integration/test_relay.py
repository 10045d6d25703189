"""The relay publishes what the broker never got or lost and recovers runs of dead workers."""

import datetime
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter

import pytest
import redis
from django.db import connection, connections
from django.utils import timezone

from taskkit.models import AttemptOutcome, RelayHeartbeat, RunState, TaskAttempt, TaskRun
from taskkit.relay import sweep as relay
from tests.conftest import ROOT, wait_for
from tests.integration.test_execution import finished
from tests.testapp import tasks
from tests.testapp.models import Effect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

AGO = datetime.timedelta(hours=1)


@pytest.fixture
def fast_relay(settings):
    settings.TASKKIT_RELAY_GRACE_SECONDS = 1
    settings.TASKKIT_REQUEUE_AFTER = 5
    settings.TASKKIT_ETA_MAX_SECONDS = 60
    return settings


def message_ids(redis_client, queue="inspect") -> list[str]:
    return [json.loads(m)["headers"]["id"] for m in redis_client.lrange(queue, 0, -1)]


def lost_publish(result) -> TaskRun:
    """Make a dispatched run look as if its publish never happened, an hour ago."""
    TaskRun.objects.filter(pk=result.id).update(
        state=RunState.PENDING, queued_at=None, created_at=timezone.now() - AGO
    )
    return TaskRun.objects.get(pk=result.id)


def test_a_pending_run_past_the_grace_period_is_published(clean_broker, fast_relay):
    """PENDING older than the grace period: published once, QUEUED; a fresh one is left alone."""
    old = lost_publish(tasks.parked.delay("old"))
    fresh = tasks.parked.delay("fresh")
    TaskRun.objects.filter(pk=fresh.id).update(state=RunState.PENDING, queued_at=None)
    clean_broker.delete("inspect")
    result = relay.sweep()
    assert result.counts["published_pending"] == 1
    assert message_ids(clean_broker) == [str(old.pk)]
    assert TaskRun.objects.get(pk=old.pk).state == RunState.QUEUED
    assert TaskRun.objects.get(pk=fresh.id).state == RunState.PENDING
    assert relay.sweep().counts["published_pending"] == 0  # not again in the next sweep


def test_long_countdowns_wait_in_the_ledger(clean_broker, fast_relay):
    """A countdown over TASKKIT_ETA_MAX_SECONDS sends no message until the relay, when due."""
    result = tasks.parked.apply_async(("later",), countdown=3600)
    assert clean_broker.llen("inspect") == 0
    assert TaskRun.objects.get(pk=result.id).state == RunState.PENDING
    relay.sweep()
    assert clean_broker.llen("inspect") == 0  # not due yet
    TaskRun.objects.filter(pk=result.id).update(
        not_before=timezone.now(), created_at=timezone.now() - AGO
    )
    relay.sweep()
    assert message_ids(clean_broker) == [result.id]


def test_a_due_retry_without_a_message_is_published(clean_broker, fast_relay):
    """RETRYING with no message in flight is published as soon as it is due."""
    result = tasks.parked.delay("retry")
    clean_broker.delete("inspect")
    TaskRun.objects.filter(pk=result.id).update(
        state=RunState.RETRYING, queued_at=None, not_before=timezone.now()
    )
    assert relay.sweep().counts["published_retrying"] == 1
    assert message_ids(clean_broker) == [result.id]


def test_a_message_the_broker_lost_is_published_again(clean_broker, fast_relay):
    """QUEUED and not claimed by its deadline (the grace after dispatch): published again,
    then every TASKKIT_REQUEUE_AFTER, doubled each time."""
    fast_relay.TASKKIT_RELAY_GRACE_SECONDS = 60  # the first sweep certainly comes before it
    result = tasks.parked.delay("lost")
    clean_broker.delete("inspect")  # the broker lost it
    relay.sweep()
    assert clean_broker.llen("inspect") == 0  # not yet: it may still be on its way
    run = TaskRun.objects.get(pk=result.id)
    assert run.publish_count == 1
    assert 59 < (run.requeue_at - run.queued_at).total_seconds() < 61  # the grace: a deadline
    TaskRun.objects.filter(pk=result.id).update(requeue_at=timezone.now() - AGO)
    assert relay.sweep().counts["published_queued"] == 1
    assert message_ids(clean_broker) == [result.id]
    run = TaskRun.objects.get(pk=result.id)
    assert run.publish_count == 2
    assert 9 < (run.requeue_at - run.queued_at).total_seconds() < 11  # doubled: a backlog is
    assert relay.sweep().counts["published_queued"] == 0  # not flooded with copies


def test_a_failed_publish_puts_the_run_back(clean_broker, fast_relay, monkeypatch):
    """If the broker refuses, the run stays PENDING for the next sweep."""
    run = lost_publish(tasks.parked.delay("down"))

    def refuse(self, name, *values):
        raise redis.ConnectionError("broker down")

    with monkeypatch.context() as patch:
        patch.setattr(redis.Redis, "lpush", refuse)  # kombu's and the templates' push
        counts = relay.sweep().counts
    assert counts["publish_failed"] == 1
    assert TaskRun.objects.get(pk=run.pk).state == RunState.PENDING
    assert relay.sweep().counts["published_pending"] == 1


def test_an_expired_lease_is_recovered_and_the_run_completes(worker, fast_relay):
    """RUNNING with an expired lease (its worker died): a LOST attempt, then a new attempt."""
    result = tasks.record.apply_async(("recovered",), countdown=3600)  # waits in the ledger
    TaskRun.objects.filter(pk=result.id).update(
        state=RunState.RUNNING,
        attempts=1,
        started_at=timezone.now() - AGO,
        first_started_at=timezone.now() - AGO,
        lease_until=timezone.now() - AGO,
        claimed_by="dead-host:4242",
        not_before=None,
    )
    counts = relay.sweep().counts
    assert counts["recovered_to_retrying"] == 1
    lost = TaskAttempt.objects.get(run_id=result.id, number=1)
    assert lost.outcome == AttemptOutcome.LOST and "dead-host:4242" in lost.error_message
    for _ in range(50):  # short waits are ETA messages; longer ones need another sweep
        if TaskRun.objects.get(pk=result.id).state == RunState.SUCCEEDED:
            break
        relay.sweep()
        wait_for(lambda: True)
    run = finished(result.id)
    assert run.state == RunState.SUCCEEDED and run.attempts == 2
    assert Effect.objects.filter(kind="recovered").count() == 1


def test_concurrent_relays_never_double_publish(clean_broker, fast_relay):
    """Three relays sweeping 1500 lost runs at once publish each exactly once."""
    fast_relay.TASKKIT_REQUEUE_AFTER = 600  # however slow the machine, no run looks lost again
    for i in range(1500):
        tasks.parked.delay(f"bulk-{i}")
    TaskRun.objects.update(state=RunState.PENDING, queued_at=None, created_at=timezone.now() - AGO)
    clean_broker.delete("inspect")
    errors: list[BaseException] = []
    counts: list[Counter[str]] = []

    def sweeper() -> None:
        try:
            counts.append(relay.sweep(batch_size=100).counts)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=sweeper) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    ids = message_ids(clean_broker)
    assert len(ids) == 1500 and max(Counter(ids).values()) == 1, counts
    assert not TaskRun.objects.exclude(state=RunState.QUEUED).exists()


def test_the_heartbeat_records_each_sweep(clean_broker, fast_relay):
    """Every sweep updates the relay's heartbeat row."""
    relay.sweep(name="relay-a")
    relay.sweep(name="relay-a")
    beat = RelayHeartbeat.objects.get(name="relay-a")
    assert beat.sweeps == 2 and beat.last_sweep_at >= beat.started_at


def test_the_command_sweeps_once_and_stops_cleanly_on_sigterm(clean_broker):
    """manage.py taskkit_relay --once reports its counts; the long-running form exits on SIGTERM."""
    lost_publish(tasks.parked.delay("cmd"))
    env = dict(os.environ, TASKKIT_TEST_DATABASE_NAME=str(connection.settings_dict["NAME"]))
    base = [sys.executable, "-m", "django", "taskkit_relay", "--settings", "tests.settings"]
    once = subprocess.run(
        [*base, "--once"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert once.returncode == 0, once.stderr
    assert "published_pending=1" in once.stdout
    forever = subprocess.Popen(
        [*base, "--interval", "0.2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: RelayHeartbeat.objects.filter(sweeps__gte=2).exists(),
            30,
            what="the relay to sweep",
        )
        forever.send_signal(signal.SIGTERM)
        assert forever.wait(10) == 0
    finally:
        if forever.poll() is None:
            forever.kill()
            forever.wait()
