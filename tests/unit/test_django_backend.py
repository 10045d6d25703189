"""The django.tasks backend's pure parts: the status mapping, the priority mapping, options and
validation; and, on Django 5.2, the clear error its import raises."""

from __future__ import annotations

import datetime

import django
import pytest

pytestmark = pytest.mark.timeout(60)

DJANGO_6 = django.VERSION >= (6, 0)
needs_django_6 = pytest.mark.skipif(
    not DJANGO_6,
    reason=f"Django's task API (django.tasks) needs Django >= 6.0; this is {django.get_version()}",
)


@pytest.mark.skipif(DJANGO_6, reason="Django 6 has django.tasks: the import succeeds")
def test_on_django_5_the_import_says_what_to_do():
    """Importing the backend on Django 5.2 raises an ImportError (ImproperlyConfigured too)
    that names the version needed and the alternative."""
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImportError, match=r"needs Django's task framework .*Django >= 6\.0") as e:
        import taskkit.backends  # noqa: F401
    assert isinstance(e.value, ImproperlyConfigured)
    assert "reliable_task" in str(e.value)


@needs_django_6
def test_every_ledger_state_has_a_django_status():
    """STATUS maps every RunState (a state added to the ledger must be mapped here)."""
    from django.tasks import TaskResultStatus

    from taskkit.backends import STATUS
    from taskkit.models import RunState

    assert set(STATUS) == set(RunState)
    assert set(STATUS.values()) == set(TaskResultStatus)


@needs_django_6
@pytest.mark.parametrize(
    ("django_priority", "redis", "amqp_10"),
    [(100, 0, 10), (50, 2, 8), (1, 4, 5), (0, 5, 5), (-50, 7, 3), (-100, 9, 0)],
)
def test_priority_mapping_table(django_priority, redis, amqp_10):
    """Django's -100..100 onto Redis (0 first) and AMQP (max first), as documented."""
    from taskkit.backends import priority

    assert priority.to_redis(django_priority) == redis
    assert priority.to_amqp(django_priority, 10) == amqp_10


@needs_django_6
def test_priority_mapping_keeps_djangos_order():
    """Higher Django priority never maps to a later place, in either direction."""
    from taskkit.backends import priority

    values = range(-100, 101)
    redis = [priority.to_redis(p) for p in values]
    amqp = [priority.to_amqp(p, 255) for p in values]
    assert redis == sorted(redis, reverse=True) and amqp == sorted(amqp)
    assert (min(redis), max(redis), min(amqp), max(amqp)) == (0, 9, 0, 255)


@needs_django_6
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stpo": 3}, "did you mean 'stop'"),
        ({"atomic": "yes"}, "pass True or False"),
        ({"time_limit": -1}, "seconds > 0"),
        ({"wait": "soon"}, "not a tenacity wait strategy"),
        ({"stop": 0}, "at least 1 attempt"),
    ],
)
def test_bad_task_options_are_refused_with_the_fix(options, message):
    """@task_options checks its options at decoration time."""
    from taskkit import ConfigurationError
    from taskkit.backends import task_options

    with pytest.raises(ConfigurationError, match=message):
        task_options(**options)


@needs_django_6
def test_task_options_above_task_is_refused():
    """@task_options goes under @task; above it, it says so."""
    from django.tasks import task

    from taskkit import ConfigurationError
    from taskkit.backends import task_options

    with pytest.raises(ConfigurationError, match="under @task"):
        task_options(stop=2)(task(_module_level))


def _module_level():
    return 1


@needs_django_6
def test_a_misconfigured_backend_is_reported_by_the_check(settings):
    """Bad OPTIONS and QUEUES give taskkit.E102 / E103 from Django's check framework, and
    using the backend raises InvalidTaskBackend with the same message."""
    from django.tasks import task_backends
    from django.tasks.checks import check_tasks
    from django.tasks.exceptions import InvalidTaskBackend

    settings.TASKS = {
        "default": {
            "BACKEND": "taskkit.backends.TaskkitBackend",
            "QUEUES": "default",
            "OPTIONS": {"stpo": 3},
        }
    }
    ids = sorted(message.id for message in check_tasks())
    assert ids == ["taskkit.E102", "taskkit.E103"]
    with pytest.raises(InvalidTaskBackend, match="not a list of queue names"):
        task_backends["default"].validate_task(None)


@needs_django_6
def test_the_configured_backend_passes_the_check():
    from django.tasks.checks import check_tasks

    assert list(check_tasks()) == []


@needs_django_6
@pytest.mark.parametrize(
    ("using", "message"),
    [
        ({"priority": 101}, "priority must be a whole number"),
        ({"queue_name": "nowhere"}, "Queue 'nowhere' is not valid"),
        ({"run_after": datetime.datetime(2030, 1, 1)}, "run_after must be an aware datetime"),
    ],
)
def test_validate_task_refuses_with_djangos_exception(using, message):
    """What the backend cannot honour raises Django's InvalidTask."""
    from django.tasks.exceptions import InvalidTask

    from tests.testapp import django_tasks

    with pytest.raises(InvalidTask, match=message):
        django_tasks.add.using(**using)


@needs_django_6
def test_a_priority_the_broker_cannot_honour_is_refused(monkeypatch):
    """On a broker without priorities, only Django's default priority is accepted."""
    from django.tasks.exceptions import InvalidTask

    from taskkit.backends import priority
    from tests.testapp import django_tasks

    monkeypatch.setattr(priority, "driver_type", lambda app: "sqs")
    assert django_tasks.add.using(priority=0).priority == 0
    with pytest.raises(InvalidTask, match="no message priorities"):
        django_tasks.add.using(priority=10)


@pytest.mark.parametrize(
    ("version", "ids"),
    [((5, 2, 19, "final", 0), ["taskkit.E101"]), ((6, 1, 3, "final", 0), [])],
)
def test_tasks_naming_the_backend_on_django_5_is_an_error(version, ids):
    """taskkit.E101: Django 5.2 ignores TASKS, so a TaskkitBackend entry there is a mistake."""
    from taskkit.checks import tasks_setting_messages

    tasks = {"default": {"BACKEND": "taskkit.backends.TaskkitBackend"}}
    assert [m.id for m in tasks_setting_messages(tasks, version)] == ids
    other = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
    assert tasks_setting_messages(other, version) == []
