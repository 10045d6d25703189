"""System checks: each against deliberately bad settings, and quiet on good ones."""

import socket
import time

import pytest
import tenacity
from django.core import checks as django_checks
from django.core.management import call_command
from tenacity import (
    stop_after_attempt,
    stop_after_delay,
    stop_any,
    stop_before_delay,
    wait_chain,
    wait_exponential,
    wait_exponential_jitter,
    wait_fixed,
    wait_incrementing,
    wait_random,
)

from devsupport.embedded_redis import EmbeddedRedis
from taskkit import checks
from taskkit.core.policy import make_policy
from taskkit.worker.transport import Transport as SafeTransport
from tests.celery_app import app

pytestmark = pytest.mark.timeout(30)

GOOD = {
    "broker_url": "redis://127.0.0.1:6379/0",
    "broker_transport_options": {
        "socket_connect_timeout": 0.5,
        "socket_timeout": 5,
        "visibility_timeout": 3600,
    },
    "accept_content": ["json"],
    "task_serializer": "json",
    "result_serializer": "json",
    "worker_prefetch_multiplier": 1,
    "task_always_eager": False,
    "task_acks_late": False,
}


class FakeTask:
    def __init__(self, name="app.tasks.t", time_limit=None, **policy):
        self.name = name
        self.time_limit = time_limit
        self.policy = make_policy(**policy)


def ids(messages):
    return [m.id for m in messages]


def conf(**changes):
    return {**GOOD, **changes}


@pytest.mark.parametrize(
    "bad",
    [
        {"accept_content": ["json", "pickle"]},
        {"accept_content": ["application/x-python-serialize"]},
        {"task_serializer": "pickle"},
        {"result_serializer": "pickle"},
        {"result_accept_content": ["pickle"]},
    ],
)
def test_pickle_is_an_error(bad):
    """Accepting or sending pickle is taskkit.E001, with the offending setting named."""
    (message,) = checks.pickle_messages(conf(**bad))
    assert message.id == "taskkit.E001" and message.level == django_checks.ERROR
    assert "CELERY_ACCEPT_CONTENT = ['json']" in message.hint
    assert next(iter(bad)) in message.msg


def test_json_only_passes():
    assert checks.pickle_messages(GOOD) == []


def test_missing_apps_are_errors():
    """taskkit missing, or django-db results without django_celery_results, is taskkit.E002."""
    messages = checks.installed_apps_messages(
        "django-db", taskkit_installed=False, results_installed=False
    )
    assert ids(messages) == ["taskkit.E002", "taskkit.E002"]
    assert "django_celery_results" in messages[1].hint
    assert (
        checks.installed_apps_messages("django-db", taskkit_installed=True, results_installed=True)
        == []
    )
    assert (
        checks.installed_apps_messages(None, taskkit_installed=True, results_installed=False) == []
    )


def test_eager_outside_tests_is_a_warning():
    """task_always_eager outside a test runner is taskkit.W001; under one it is expected."""
    eager = conf(task_always_eager=True)
    assert ids(checks.eager_messages(eager, under_tests=False)) == ["taskkit.W001"]
    assert checks.eager_messages(eager, under_tests=True) == []
    assert checks.eager_messages(GOOD, under_tests=False) == []


@pytest.mark.parametrize(
    ("wait", "attempts", "bound"),
    [
        (wait_fixed(5), 3, 5),
        (wait_fixed(5), 1, 0),  # one attempt never waits
        (wait_random(1, 9), None, 9),
        (wait_exponential(multiplier=1, max=100), 4, 4),  # waits 1, 2, 4
        (wait_exponential(multiplier=1, max=100), None, 100),
        (wait_exponential(multiplier=1, max=100, min=10), 2, 10),
        (wait_exponential_jitter(max=300), 5, 9),  # 8 + jitter 1
        (wait_exponential_jitter(max=300), 30, 300),
        (wait_incrementing(start=1, increment=10, max=50), 3, 11),
        (wait_fixed(1) + wait_random(0, 2), 3, 3),
        (wait_chain(wait_fixed(1), wait_fixed(7)), 5, 7),
        (lambda state: 1, 3, None),  # a custom strategy: not guessed at
        (wait_fixed(1) + (lambda state: 1), 3, None),
    ],
)
def test_longest_wait(wait, attempts, bound):
    """Bounds are computed for tenacity's built-in strategies and None for unreadable ones."""
    result = checks.longest_wait(wait, attempts)
    assert result == (pytest.approx(bound) if bound is not None else None)


@pytest.mark.parametrize(
    ("stop", "attempts", "delay"),
    [
        (stop_after_attempt(4), 4, None),
        (stop_any(stop_after_attempt(9), stop_after_attempt(3)), 3, None),
        (stop_after_delay(60), None, None),  # stops after the fact: any wait gets through
        (stop_before_delay(60), None, 60),
        (stop_any(stop_after_attempt(3), stop_before_delay(60)), 3, 60),
        (tenacity.stop_all(stop_after_attempt(3), stop_before_delay(60)), None, None),
    ],
)
def test_stop_bounds(stop, attempts, delay):
    assert checks.max_attempts(stop) == attempts
    assert checks.max_delay(stop) == delay


SLOW_RETRY = FakeTask("slow.retry", wait=wait_exponential(multiplier=60, max=7200), stop=10)
SHORT_RETRY = FakeTask("short.retry", wait=wait_fixed(30), stop=3)
CUSTOM_RETRY = FakeTask("custom.retry", wait=lambda state: 10_000)
SAFE = "taskkit.transport:Transport"


@pytest.mark.parametrize(
    ("settings", "timeout"),
    [
        ({}, 3600),  # redis:// by URL scheme, kombu's default
        ({"broker_url": "rediss://h:6380/0"}, 3600),
        ({"broker_transport": SAFE}, 3600),  # taskkit's transport, chosen by import path
        ({"broker_transport": SAFE, "broker_transport_options": {"visibility_timeout": 90}}, 90),
        ({"broker_transport": "redis", "broker_transport_options": {"visibility_timeout": 5}}, 5),
        ({"broker_transport": "tests.unit.test_checks:SubclassOfSafe"}, 3600),
        ({"broker_url": "sentinel://h:26379"}, 3600),
        ({"broker_url": "sqs://", "broker_transport_options": {}}, 1800),  # kombu's SQS default
        ({"broker_url": "amqp://h//"}, None),
        (
            {"broker_url": "pyamqp://h//", "broker_transport_options": {"visibility_timeout": 9}},
            None,
        ),
        ({"broker_url": "redis://h/0", "broker_transport": "pyamqp"}, None),  # transport wins
        ({"broker_transport": "no.such.module:Transport"}, None),  # cannot be imported
        ({"broker_url": "memory://"}, None),
    ],
)
def test_visibility_timeout_whatever_the_transport_class(settings, timeout):
    """The timeout comes from broker_transport_options for every Redis-like transport class,
    however it is chosen (URL scheme, alias, import path, subclass); AMQP has none."""
    assert checks.visibility_timeout(conf(**settings)) == timeout


class SubclassOfSafe(SafeTransport):
    """A project's own subclass of taskkit's transport (resolved by import path in a test)."""


@pytest.mark.parametrize(
    ("settings", "eta_max", "tasks", "expected", "named"),
    [
        # default ETA max (60 s) below the timeout: long waits wait in the ledger, nothing at risk
        ({}, 60, [SLOW_RETRY, CUSTOM_RETRY], [], []),
        # the same with taskkit's transport chosen by import path
        ({"broker_transport": SAFE}, 60, [SLOW_RETRY], [], []),
        # ETA max above the timeout: countdowns are at risk, and the slow task's retries
        ({}, 7200, [SLOW_RETRY, SHORT_RETRY], ["taskkit.W002"], ["slow.retry"]),
        ({"broker_transport": SAFE}, 7200, [SLOW_RETRY], ["taskkit.W002"], ["slow.retry"]),
        # ... with no task that waits that long, still one warning (countdowns)
        ({}, 7200, [SHORT_RETRY], ["taskkit.W002"], []),
        # a short timeout, read from the options of taskkit's transport
        (
            {"broker_transport": SAFE, "broker_transport_options": {"visibility_timeout": 20}},
            60,
            [SLOW_RETRY, SHORT_RETRY],
            ["taskkit.W002"],
            ["slow.retry", "short.retry"],
        ),
        # ETA max equal to the timeout: a wait of exactly the timeout is not redelivered
        ({}, 3600, [SLOW_RETRY], [], []),
        # AMQP: no visibility timeout at all
        ({"broker_url": "amqp://h//"}, 99_999, [SLOW_RETRY], [], []),
    ],
)
def test_eta_waits_beyond_the_visibility_timeout(settings, eta_max, tasks, expected, named):
    """W002 judges only what travels as an ETA message: waits up to TASKKIT_ETA_MAX_SECONDS."""
    messages = checks.visibility_timeout_messages(conf(**settings), tasks, eta_max=eta_max)
    assert ids(messages) == expected
    for message in messages:
        assert f"{eta_max:.0f} s" in message.msg and "TASKKIT_ETA_MAX_SECONDS" in message.hint
        for name in named:
            assert name in message.msg
        assert "custom.retry" not in message.msg  # an unreadable strategy is not guessed at


@pytest.mark.parametrize(
    ("settings", "tasks", "flagged"),
    [
        ({}, [FakeTask("long", time_limit=7200), FakeTask("short", time_limit=60)], ["long"]),
        ({"broker_transport": SAFE}, [FakeTask("long", time_limit=7200)], ["long"]),
        ({"task_time_limit": 5000}, [FakeTask("x")], ["x"]),
        (
            {"broker_transport": SAFE, "broker_transport_options": {"visibility_timeout": 30}},
            [FakeTask("a", time_limit=60), FakeTask("b", time_limit=20)],
            ["a"],
        ),
        ({"broker_url": "amqp://h//"}, [FakeTask("long", time_limit=99999)], []),
    ],
)
def test_a_time_limit_beyond_the_visibility_timeout_is_flagged(settings, tasks, flagged):
    """A hard time limit (task or global) longer than visibility_timeout is taskkit.W003."""
    messages = checks.visibility_timeout_messages(conf(**settings), tasks, eta_max=10)
    assert ids(messages) == ["taskkit.W003"] * len(flagged)
    assert [m.obj for m in messages] == flagged


STOCK = "kombu.transport.redis:Transport"


@pytest.mark.parametrize(
    ("settings", "expected", "in_hint"),
    [
        # taskkit re-pointed kombu's redis/rediss aliases when Django started (see test_broker)
        ({}, [], None),
        ({"broker_url": "rediss://h:6380/0"}, [], None),
        ({"broker_transport": "redis"}, [], None),
        ({"broker_transport": SAFE}, [], None),
        ({"broker_transport": "tests.unit.test_checks:SubclassOfSafe"}, [], None),
        # kombu's own, by import path
        ({"broker_transport": STOCK}, ["taskkit.W010"], "Remove CELERY_BROKER_TRANSPORT"),
        ({"broker_url": "rediss://h/0", "broker_transport": STOCK}, ["taskkit.W010"], SAFE),
        # not (only) Redis: nothing to say
        ({"broker_url": "amqp://h//"}, [], None),
        ({"broker_url": "sentinel://h:26379"}, [], None),  # taskkit has no Sentinel transport
        ({"broker_url": "redis://a/0;amqp://b//", "broker_transport": STOCK}, [], None),
    ],
)
def test_kombus_own_redis_transport_is_flagged(settings, expected, in_hint):
    """W010: a Redis broker served by kombu's own transport, which dies on a non-JSON entry."""
    messages = checks.redis_transport_messages(conf(**settings))
    assert ids(messages) == expected
    for message in messages:
        assert "not JSON" in message.msg and in_hint in message.hint


def test_prefetching_long_tasks_is_flagged():
    """A prefetch multiplier other than 1 with long (or unlimited) tasks is taskkit.W004."""
    long_tasks = [FakeTask("a"), FakeTask("b", time_limit=600)]
    (message,) = checks.prefetch_messages(conf(worker_prefetch_multiplier=4), long_tasks)
    assert message.id == "taskkit.W004" and "a, b" in message.msg
    assert (
        "unlimited"
        in checks.prefetch_messages(conf(worker_prefetch_multiplier=0), long_tasks)[0].msg
    )
    assert checks.prefetch_messages(GOOD, long_tasks) == []
    short = [FakeTask("quick", time_limit=5)]
    assert checks.prefetch_messages(conf(worker_prefetch_multiplier=4), short) == []


def test_result_backend_other_than_django_db_is_flagged():
    """django_celery_results installed with another or no backend is taskkit.W006."""
    for backend in (None, "redis://x"):
        messages = checks.result_backend_messages(backend, results_installed=True)
        assert ids(messages) == ["taskkit.W006"]
    assert checks.result_backend_messages("django-db", results_installed=True) == []
    assert checks.result_backend_messages(None, results_installed=False) == []


def test_missing_publish_timeouts_are_flagged():
    """A Redis broker without socket timeouts is taskkit.W007."""
    (message,) = checks.publish_timeout_messages(conf(broker_transport_options={}))
    assert message.id == "taskkit.W007" and "socket_connect_timeout" in message.msg
    assert checks.publish_timeout_messages(GOOD) == []


def test_acks_late_without_reject_on_worker_lost_is_flagged():
    """Global acks_late without reject_on_worker_lost is taskkit.W008."""
    assert ids(checks.acks_late_messages(conf(task_acks_late=True))) == ["taskkit.W008"]
    both = conf(task_acks_late=True, task_reject_on_worker_lost=True)
    assert checks.acks_late_messages(both) == []


@pytest.fixture
def redis_server():
    """A dedicated real redis-server, so changing its config disturbs no other test."""
    server = EmbeddedRedis().start()
    yield server
    server.stop()


def test_an_evicting_redis_is_flagged(redis_server):
    """A real Redis with maxmemory-policy allkeys-lru is taskkit.W005; noeviction passes."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    assert checks.redis_eviction_messages(redis_server.url) == []
    client.config_set("maxmemory-policy", "allkeys-lru")
    (message,) = checks.redis_eviction_messages(redis_server.url)
    assert message.id == "taskkit.W005" and "allkeys-lru" in message.msg
    client.close()


def test_an_unreachable_redis_is_skipped_quickly():
    """A refused port and a silent one are skipped, each well within a second."""
    with socket.socket() as refused:
        refused.bind(("127.0.0.1", 0))
        refused_port = refused.getsockname()[1]
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        for port in (refused_port, silent.getsockname()[1]):
            started = time.monotonic()
            assert checks.redis_eviction_messages(f"redis://127.0.0.1:{port}/0") == []
            assert time.monotonic() - started < 1.0


@pytest.fixture
def app_conf():
    """Change the test Celery app's configuration for one test."""
    saved = {}

    def change(**values):
        for key, value in values.items():
            saved.setdefault(key, app.conf.get(key))
            app.conf[key] = value

    yield change
    for key, value in saved.items():
        app.conf[key] = value


def test_registered_checks_are_quiet_on_the_test_settings():
    """The test project's settings pass every taskkit check, including the deploy one."""
    assert django_checks.run_checks(tags=["taskkit"], include_deployment_checks=True) == []


def test_the_test_app_runs_taskkits_transport_without_being_asked():
    """tests/settings.py sets no CELERY_BROKER_TRANSPORT: taskkit's transport serves Redis."""
    assert app.conf.broker_url.startswith("redis")
    assert not app.conf.broker_transport
    with app.connection_for_read() as connection:
        assert type(connection.transport).__module__ == "taskkit.worker.transport"


def test_registered_checks_read_the_celery_app(app_conf):
    """manage.py check reports the project's Celery app's bad settings by id."""
    app_conf(
        accept_content=["pickle", "json"],
        worker_prefetch_multiplier=8,
        task_acks_late=True,
        broker_transport=STOCK,
    )
    found = sorted(ids(django_checks.run_checks(tags=["taskkit"])))
    assert found == ["taskkit.E001", "taskkit.W004", "taskkit.W008", "taskkit.W010"]


def test_check_deploy_does_not_hang_on_a_silent_broker(app_conf):
    """check --deploy with a broker that never answers returns within about a second."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        app_conf(broker_url=f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        started = time.monotonic()
        call_command("check", "--deploy", "--tag", "taskkit")
        assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("settings", "vendor", "expected"),
    [
        ({}, "postgresql", ["taskkit.W009"]),
        ({"CELERY_DB_REUSE_MAX": 1000}, "postgresql", []),
        ({}, "sqlite", []),
    ],
)
def test_no_connection_reuse_on_a_server_database_is_flagged(settings, vendor, expected):
    """Without CELERY_DB_REUSE_MAX, a worker on PostgreSQL reconnects for every task."""
    assert ids(checks.db_reuse_messages(conf(**settings), vendor)) == expected
