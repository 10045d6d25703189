"""System checks (``manage.py check``) for Celery settings that break taskkit's promises.

Each check reads the project's Celery app configuration (``celery.current_app``) and Django
settings, and is split into a thin registered function and a pure one taking the values, so the
tests can run every check against deliberately bad settings. Only what can be computed is
flagged: a custom tenacity wait strategy whose bound cannot be read is not guessed at. The Redis
``maxmemory-policy`` check talks to the broker, so it is a deployment check (``check --deploy``)
with sub-second timeouts. Check ids are listed in docs/reference/checks.md.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import tenacity
from django.apps import apps
from django.core import checks

from .worker import broker

logger = logging.getLogger("taskkit.checks")

PICKLE = {"pickle", "application/x-python-serialize"}
#: A task with no time limit, or a limit at least this long, counts as long for prefetching.
LONG_TASK_SECONDS = 60.0
REDIS_PROBE_TIMEOUT = 0.4


def celery_app() -> Any:
    from celery import current_app

    return current_app._get_current_object()


def reliable_tasks(app: Any) -> list[Any]:
    """The app's reliable tasks, after importing each installed app's ``tasks`` module.

    Not ``app.loader.import_default_modules()``: Celery's Django fixup runs the system checks
    from there, which would run this check again.
    """
    names = [f"{config.name}.tasks" for config in apps.get_app_configs()]
    names += [*(app.conf.get("imports") or ()), *(app.conf.get("include") or ())]
    for name in names:
        try:
            if importlib.util.find_spec(name) is not None:
                importlib.import_module(name)
        except Exception:  # a broken task module is reported by whatever imports it next
            logger.debug("taskkit checks: could not import %s", name, exc_info=True)
    return [t for _, t in sorted(app.tasks.items()) if getattr(t, "is_reliable", False)]


def under_test_runner() -> bool:
    return "pytest" in sys.modules or sys.argv[1:2] == ["test"]


# -- taskkit.E001: pickle ----------------------------------------------------------------------


def check_pickle(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return pickle_messages(celery_app().conf)


def pickle_messages(conf: Mapping[str, Any]) -> list[checks.CheckMessage]:
    found = []
    accept = conf.get("accept_content") or ()
    if PICKLE & set(accept):
        found.append(f"accept_content={list(accept)!r}")
    for name in ("task_serializer", "result_serializer", "event_serializer"):
        if conf.get(name) in PICKLE:
            found.append(f"{name}={conf.get(name)!r}")
    if PICKLE & set(conf.get("result_accept_content") or ()):
        found.append(f"result_accept_content={list(conf['result_accept_content'])!r}")
    if not found:
        return []
    return [
        checks.Error(
            f"Celery is configured to use pickle ({', '.join(found)}): anyone who can write to "
            "the broker can run code in your workers.",
            hint="Set CELERY_ACCEPT_CONTENT = ['json'] and CELERY_TASK_SERIALIZER = "
            "CELERY_RESULT_SERIALIZER = 'json'. Reliable tasks only ever send JSON.",
            id="taskkit.E001",
        )
    ]


# -- taskkit.E002: INSTALLED_APPS --------------------------------------------------------------


def check_installed_apps(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return installed_apps_messages(
        celery_app().conf.get("result_backend"),
        taskkit_installed=apps.is_installed("taskkit"),
        results_installed=apps.is_installed("django_celery_results"),
    )


def installed_apps_messages(
    result_backend: Any, *, taskkit_installed: bool, results_installed: bool
) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    if not taskkit_installed:
        messages.append(
            checks.Error(
                "'taskkit' is not in INSTALLED_APPS: the run ledger has no tables.",
                hint="Add 'taskkit' to INSTALLED_APPS and run manage.py migrate.",
                id="taskkit.E002",
            )
        )
    backend = str(result_backend or "")
    if backend.startswith(("django-db", "django-cache")) and not results_installed:
        messages.append(
            checks.Error(
                f"CELERY_RESULT_BACKEND is {backend!r} but 'django_celery_results' is not in "
                "INSTALLED_APPS: storing a result fails in the worker.",
                hint="Add 'django_celery_results' to INSTALLED_APPS and run manage.py migrate.",
                id="taskkit.E002",
            )
        )
    return messages


# -- taskkit.W001: eager mode ------------------------------------------------------------------


def check_eager(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return eager_messages(celery_app().conf, under_tests=under_test_runner())


def eager_messages(conf: Mapping[str, Any], *, under_tests: bool) -> list[checks.CheckMessage]:
    if not conf.get("task_always_eager") or under_tests:
        return []
    return [
        checks.Warning(
            "task_always_eager is on: tasks run inside the web request, in its process, and "
            "their retries are skipped.",
            hint="Set CELERY_TASK_ALWAYS_EAGER only in test settings; for tests of reliable "
            "tasks prefer taskkit.testing.capture().",
            id="taskkit.W001",
        )
    ]


# -- taskkit.W002 / W003: visibility timeout ---------------------------------------------------


def visibility_timeout(conf: Mapping[str, Any]) -> float | None:
    """The broker's redelivery timeout, or ``None`` for a transport that has none (AMQP).

    Read from ``broker_transport_options`` whatever transport class serves the broker: an alias
    (``redis``, ``sqs``), kombu's class by URL scheme, or an import path to a subclass (taskkit's
    ``taskkit.transport:Transport``). See ``taskkit.worker.broker.visibility_timeout``.
    """
    return broker.visibility_timeout(conf)


def max_attempts(stop: Any) -> int | None:
    """The most attempts ``stop`` allows, if readable."""
    if isinstance(stop, tenacity.stop_after_attempt):
        return int(stop.max_attempt_number)
    if isinstance(stop, tenacity.stop_any):
        limits = [n for n in map(max_attempts, stop.stops) if n is not None]
        return min(limits) if limits else None
    return None


def max_delay(stop: Any) -> float | None:
    """The longest single wait ``stop`` lets through, if readable (``stop_before_delay`` only)."""
    if isinstance(stop, tenacity.stop_before_delay):
        return float(stop.max_delay)
    if isinstance(stop, tenacity.stop_any):
        limits = [d for d in map(max_delay, stop.stops) if d is not None]
        return min(limits) if limits else None
    return None


def _exponential(wait: Any, retries: int | None, extra: float = 0.0) -> float:
    """Bound of tenacity's exponential waits (attribute names as in tenacity 8.3 … 9.x)."""
    ceiling, floor = float(wait.max), float(getattr(wait, "min", 0) or 0)
    if retries is None:
        return max(floor, ceiling)
    multiplier = getattr(wait, "multiplier", None) or getattr(wait, "initial", 1)
    try:
        grown = multiplier * wait.exp_base ** (retries - 1) + extra
    except OverflowError:
        grown = ceiling
    return float(max(floor, min(grown, ceiling)))


def longest_wait(wait: Any, attempts: int | None) -> float | None:
    """An upper bound of any wait ``wait`` can return within ``attempts``; ``None`` if unknown.

    ``attempts`` is the number of attempts the stop strategy allows (waits happen after attempts
    1 … attempts-1), or ``None`` when unbounded or unreadable.
    """
    retries = None if attempts is None else max(attempts - 1, 0)
    if retries == 0:
        return 0.0
    if isinstance(wait, tenacity.wait_fixed):  # also wait_none
        return float(wait.wait_fixed)
    if isinstance(wait, tenacity.wait_random):
        return float(wait.wait_random_max)
    if isinstance(wait, tenacity.wait_exponential):  # also wait_random_exponential
        return _exponential(wait, retries)
    if isinstance(wait, tenacity.wait_exponential_jitter):
        return _exponential(wait, retries, extra=float(wait.jitter))
    if isinstance(wait, tenacity.wait_incrementing):
        if retries is None:
            return float(wait.max)
        return float(min(wait.start + wait.increment * (retries - 1), wait.max))
    if isinstance(wait, tenacity.wait_combine):
        parts = [longest_wait(w, attempts) for w in wait.wait_funcs]
        return None if None in parts else float(sum(p for p in parts if p is not None))
    if isinstance(wait, tenacity.wait_chain):
        parts = [longest_wait(w, attempts) for w in wait.strategies]
        return None if None in parts else float(max(p for p in parts if p is not None))
    return None


def policy_longest_wait(policy: Any) -> float | None:
    wait = longest_wait(policy.wait, max_attempts(policy.stop))
    cap = max_delay(policy.stop)
    if cap is not None:
        wait = cap if wait is None else min(wait, cap)
    return wait


def check_visibility_timeout(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from .core.conf import settings

    app = celery_app()
    return visibility_timeout_messages(
        app.conf, reliable_tasks(app), eta_max=settings.ETA_MAX_SECONDS
    )


def _some(names: list[str]) -> str:
    more = len(names) - 3
    return ", ".join(names[:3]) + (f" and {more} more" if more > 0 else "")


def visibility_timeout_messages(
    conf: Mapping[str, Any], tasks: Iterable[Any], *, eta_max: float
) -> list[checks.CheckMessage]:
    """W002: delays that travel as ETA messages outlive the visibility timeout; W003: attempts do.

    A countdown or retry wait longer than ``eta_max`` (``TASKKIT_ETA_MAX_SECONDS``) waits in the
    ledger and the relay publishes it when due, so only waits in (``timeout``, ``eta_max``] are
    held by the broker long enough to be delivered again: none when ``eta_max <= timeout``.
    """
    timeout = visibility_timeout(conf)
    if timeout is None:
        return []
    tasks = list(tasks)
    messages: list[checks.CheckMessage] = []
    if eta_max > timeout:
        exposed = []
        for task in tasks:
            wait = policy_longest_wait(task.policy)
            if wait is not None and wait > timeout:
                exposed.append(task.name)
        retries = f" Retry waits of {_some(exposed)} can fall there." if exposed else ""
        messages.append(
            checks.Warning(
                f"TASKKIT_ETA_MAX_SECONDS ({eta_max:.0f} s) is longer than the broker's "
                f"visibility_timeout ({timeout:.0f} s): a countdown or retry wait between the two "
                "travels as an ETA message, which the broker delivers again every "
                f"visibility_timeout until it is due.{retries}",
                hint="Lower TASKKIT_ETA_MAX_SECONDS below the timeout (longer waits then wait in "
                "the ledger and the relay publishes them when due), or raise "
                "CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'].",
                id="taskkit.W002",
            )
        )
    for task in tasks:
        limit = task.time_limit or conf.get("task_time_limit")
        if limit and float(limit) > timeout:
            messages.append(
                checks.Warning(
                    f"{task.name}: its hard time limit ({float(limit):.0f} s) is longer than the "
                    f"broker's visibility_timeout ({timeout:.0f} s): a long attempt's message is "
                    "redelivered to another worker while it still runs.",
                    hint="Lower time_limit below the timeout or raise "
                    "CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'].",
                    obj=task.name,
                    id="taskkit.W003",
                )
            )
    return messages


# -- taskkit.W004: prefetching -----------------------------------------------------------------


def check_prefetch(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    app = celery_app()
    return prefetch_messages(app.conf, reliable_tasks(app))


def prefetch_messages(conf: Mapping[str, Any], tasks: Iterable[Any]) -> list[checks.CheckMessage]:
    multiplier = conf.get("worker_prefetch_multiplier")
    if multiplier is None or int(multiplier) == 1:
        return []
    default_limit = conf.get("task_time_limit")
    long_tasks = []
    for task in tasks:
        limit = task.time_limit or default_limit
        if not limit or float(limit) >= LONG_TASK_SECONDS:
            long_tasks.append(task.name)
    if not long_tasks:
        return []
    more = len(long_tasks) - 3
    shown = ", ".join(long_tasks[:3]) + (f" and {more} more" if more > 0 else "")
    return [
        checks.Warning(
            f"worker_prefetch_multiplier is {multiplier}: each worker process reserves "
            f"{'unlimited' if int(multiplier) == 0 else multiplier} message(s) while it runs a "
            f"long task ({shown}), so those messages wait although other workers are idle.",
            hint="Set CELERY_WORKER_PREFETCH_MULTIPLIER = 1 (reliable tasks acknowledge late).",
            id="taskkit.W004",
        )
    ]


# -- taskkit.W005: Redis eviction (deploy) -----------------------------------------------------


def check_redis_eviction(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    conf = celery_app().conf
    return redis_eviction_messages(str(conf.get("broker_url") or ""))


def redis_eviction_messages(
    broker_url: str, timeout: float = REDIS_PROBE_TIMEOUT
) -> list[checks.CheckMessage]:
    policy = read_maxmemory_policy(broker_url, timeout)
    if policy is None or policy == "noeviction":
        return []
    return [
        checks.Warning(
            f"The Redis broker's maxmemory-policy is {policy!r}: under memory pressure Redis "
            "silently deletes queued messages.",
            hint="Run the broker with maxmemory-policy noeviction (a full Redis then refuses "
            "publishes, which taskkit survives: the run stays PENDING for the relay).",
            id="taskkit.W005",
        )
    ]


def read_maxmemory_policy(broker_url: str, timeout: float = REDIS_PROBE_TIMEOUT) -> str | None:
    """The broker's ``maxmemory-policy``, or ``None`` if it is not Redis or cannot be read fast."""
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    import redis

    try:
        client = redis.Redis.from_url(
            broker_url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=None
        )
        try:
            value = client.config_get("maxmemory-policy").get("maxmemory-policy")
        finally:
            client.close()
    except Exception as exc:  # down, slow, or CONFIG disabled (managed Redis)
        logger.debug("taskkit checks: could not read maxmemory-policy: %r", exc)
        return None
    return value.decode() if isinstance(value, bytes) else value


# -- taskkit.W006: result backend --------------------------------------------------------------


def check_result_backend(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return result_backend_messages(
        celery_app().conf.get("result_backend"),
        results_installed=apps.is_installed("django_celery_results"),
    )


def result_backend_messages(
    result_backend: Any, *, results_installed: bool
) -> list[checks.CheckMessage]:
    backend = str(result_backend or "")
    if not results_installed or backend.startswith("django-db"):
        return []
    return [
        checks.Warning(
            f"django_celery_results is installed but the result backend is "
            f"{backend or 'not set'!r}: no TaskResult rows are written, so its admin and Flower "
            "do not see the runs under their ids.",
            hint="Set CELERY_RESULT_BACKEND = 'django-db' and CELERY_RESULT_EXTENDED = True.",
            id="taskkit.W006",
        )
    ]


# -- taskkit.W007: publish timeouts ------------------------------------------------------------


def check_publish_timeouts(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return publish_timeout_messages(celery_app().conf)


def publish_timeout_messages(conf: Mapping[str, Any]) -> list[checks.CheckMessage]:
    url = str(conf.get("broker_url") or "")
    if not url.startswith(("redis://", "rediss://", "sentinel://")):
        return []
    options = conf.get("broker_transport_options") or {}
    missing = [k for k in ("socket_connect_timeout", "socket_timeout") if k not in options]
    if not missing:
        return []
    return [
        checks.Warning(
            f"CELERY_BROKER_TRANSPORT_OPTIONS has no {' / '.join(missing)}: a publish to a "
            "blackholed broker hangs for more than 40 s in whatever process sends it.",
            hint="Set CELERY_BROKER_TRANSPORT_OPTIONS = {'socket_connect_timeout': 0.5, "
            "'socket_timeout': 5, ...}. taskkit adds them to its own publishes only.",
            id="taskkit.W007",
        )
    ]


# -- taskkit.W008: acks_late without reject_on_worker_lost -------------------------------------


def check_acks_late(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return acks_late_messages(celery_app().conf)


def acks_late_messages(conf: Mapping[str, Any]) -> list[checks.CheckMessage]:
    if not conf.get("task_acks_late") or conf.get("task_reject_on_worker_lost"):
        return []
    return [
        checks.Warning(
            "task_acks_late is on without task_reject_on_worker_lost: a plain Celery task whose "
            "worker process is killed (OOM, SIGKILL) is acknowledged and lost.",
            hint="Set CELERY_TASK_REJECT_ON_WORKER_LOST = True, or make the task a "
            "@reliable_task (taskkit records the lost attempt and retries it within its stop).",
            id="taskkit.W008",
        )
    ]


# -- taskkit.W009: no database connection reuse in workers -------------------------------------


def check_db_reuse(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from django.db import connections

    from .core.db import db_alias

    return db_reuse_messages(celery_app().conf, connections[db_alias()].vendor)


def db_reuse_messages(conf: Mapping[str, Any], vendor: str) -> list[checks.CheckMessage]:
    if vendor == "sqlite" or conf.get("CELERY_DB_REUSE_MAX") or conf.get("db_reuse_max"):
        return []
    return [
        checks.Warning(
            "Celery workers open a new database connection for every task (the Django fixup "
            "closes it after each one since Celery 5.6, whatever CONN_MAX_AGE says); every run "
            "then pays a connection set-up on top of its ledger writes.",
            hint="Set CELERY_DB_REUSE_MAX = 1000 (or another number of tasks per connection).",
            id="taskkit.W009",
        )
    ]


# -- taskkit.W010: kombu's own Redis transport --------------------------------------------------


def check_redis_transport(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    return redis_transport_messages(celery_app().conf)


def redis_transport_messages(conf: Mapping[str, Any]) -> list[checks.CheckMessage]:
    if not broker.runs_stock_redis_transport(conf):
        return []
    chosen = conf.get("broker_transport")
    if chosen:
        how = f"CELERY_BROKER_TRANSPORT = {chosen!r}"
        fix = (
            f"Remove CELERY_BROKER_TRANSPORT (taskkit then uses {broker.SAFE_TRANSPORT} for "
            "redis:// and rediss:// brokers) or set it to that"
        )
    else:  # taskkit re-points kombu's redis/rediss aliases in its AppConfig.ready()
        how = "the broker URL's scheme; kombu's 'redis' alias was not re-pointed at taskkit's"
        fix = f"Set CELERY_BROKER_TRANSPORT = {broker.SAFE_TRANSPORT!r}"
    return [
        checks.Warning(
            f"The Redis broker runs kombu's own transport (chosen by {how}): one queue entry "
            "that is not JSON stops every worker that pops it ('Unrecoverable error: "
            "JSONDecodeError'), and anything that can write to Redis can push one.",
            hint=f"{fix}: it logs and drops such an entry and the worker goes on.",
            id="taskkit.W010",
        )
    ]


def register() -> None:
    """Register the checks (called by ``TaskkitConfig.ready()``)."""
    for check in (
        check_pickle,
        check_installed_apps,
        check_eager,
        check_visibility_timeout,
        check_redis_transport,
        check_prefetch,
        check_result_backend,
        check_publish_timeouts,
        check_acks_late,
        check_db_reuse,
    ):
        checks.register(check, "taskkit")
    checks.register(check_redis_eviction, "taskkit", deploy=True)


__all__ = ["register"]


# -- taskkit.W011: SQLite transactions begun DEFERRED ------------------------------------------

#: SQLite transaction modes that take the write lock when the transaction begins.
SQLITE_WRITE_MODES = ("IMMEDIATE", "EXCLUSIVE")


def check_sqlite_transaction_mode(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    from django.db import connections

    from .core.db import db_alias

    connection = connections[db_alias()]
    return sqlite_transaction_messages(
        connection.vendor, connection.settings_dict.get("OPTIONS") or {}, db_alias()
    )


def sqlite_transaction_messages(
    vendor: str, options: Mapping[str, Any], alias: str = "default"
) -> list[checks.CheckMessage]:
    """W011: on SQLite, transactions that read and then write must begin IMMEDIATE."""
    if vendor != "sqlite":
        return []
    mode = str(options.get("transaction_mode") or "DEFERRED").upper()
    if mode in SQLITE_WRITE_MODES:
        return []
    return [
        checks.Warning(
            f"DATABASES[{alias!r}] is SQLite with transaction_mode {mode}: a transaction that "
            "reads and then writes (an atomic task's body, a view that reads before it "
            "dispatches) fails at once with 'database is locked' whenever another process "
            "writes; SQLite does not wait out the busy timeout for it. taskkit's relay and "
            "claims do not need it, your atomic tasks and dispatching transactions do.",
            hint=(
                f'Add to DATABASES[{alias!r}]["OPTIONS"]: "transaction_mode": "IMMEDIATE", '
                '"timeout": 20, and "init_command": "PRAGMA journal_mode=WAL;" (readers then '
                "never wait for writers). SQLite runs one writer at a time; use PostgreSQL "
                "for many workers."
            ),
            id="taskkit.W011",
        )
    ]


checks.register(check_sqlite_transaction_mode, "taskkit")


# -- taskkit.E101: Django's TASKS names taskkit's backend on a Django without django.tasks ------

BACKEND_PATH = "taskkit.backends.TaskkitBackend"


def check_tasks_setting(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """On Django 6 the backend checks itself (``TaskkitBackend.check``: taskkit.E102, E103)."""
    import django
    from django.conf import settings

    return tasks_setting_messages(getattr(settings, "TASKS", None), django.VERSION)


def tasks_setting_messages(tasks: Any, version: tuple[Any, ...]) -> list[checks.CheckMessage]:
    if version[:2] >= (6, 0) or not isinstance(tasks, Mapping):
        return []
    aliases = [
        alias
        for alias, params in tasks.items()
        if isinstance(params, Mapping) and params.get("BACKEND") == BACKEND_PATH
    ]
    if not aliases:
        return []
    return [
        checks.Error(
            f"TASKS[{aliases[0]!r}] uses {BACKEND_PATH}, which needs Django's task framework "
            f"(django.tasks, Django >= 6.0); this is Django {'.'.join(map(str, version[:3]))}, "
            "which ignores TASKS.",
            hint="Upgrade to Django >= 6.0 (Python >= 3.12), or remove TASKS and declare tasks "
            "with taskkit.reliable_task.",
            id="taskkit.E101",
        )
    ]


checks.register(check_tasks_setting, "taskkit")
