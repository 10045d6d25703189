"""Settings of the test project: SQLite + embedded Redis unless DATABASE_URL / REDIS_URL are set."""

import os
from pathlib import Path

import dj_database_url
import django

from devsupport.embedded_redis import redis_url_from_env

BASE_DIR = Path(__file__).resolve().parent.parent
TMP_DIR = BASE_DIR / ".tmp"
TMP_DIR.mkdir(exist_ok=True)

SECRET_KEY = "taskkit-tests"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",
    "taskkit",
    "tests.testapp",
]
if os.environ.get("TASKKIT_TEST_DECODE_RELEASE", "old") == "old":  # see tests/deployapp
    INSTALLED_APPS.append("tests.deployapp")
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
STATIC_URL = "static/"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{TMP_DIR / 'taskkit.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not :memory:, so that worker subprocesses share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(TMP_DIR / f"test-{os.getpid()}.sqlite3")}
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
else:
    # One test database per test process, so several checkouts can run the suite at once.
    DATABASES["default"]["TEST"] = {"NAME": f"test_taskkit_{os.getpid()}"}
# A worker subprocess started by the tests uses the test database the tests created.
if os.environ.get("TASKKIT_TEST_DATABASE_NAME"):
    DATABASES["default"]["NAME"] = os.environ["TASKKIT_TEST_DATABASE_NAME"]

REDIS_URL = redis_url_from_env()

if django.VERSION >= (6, 0):  # Django's task API on taskkit: tests/integration/test_django_tasks.py
    TASKS = {
        "default": {
            "BACKEND": "taskkit.backends.TaskkitBackend",
            "QUEUES": ["default", "celery", "parked"],
            "OPTIONS": {"stop": 3, "wait": 0.3},
        }
    }

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_DB_REUSE_MAX = 1000
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": 0.5,
    "socket_timeout": 5,
    "visibility_timeout": 3600,
}

# The fault suite's profile: recovery in seconds instead of minutes (see docs/reliability.md).
if os.environ.get("TASKKIT_FAULT_PROFILE"):
    TASKKIT_RELAY_GRACE_SECONDS = 1
    TASKKIT_REQUEUE_AFTER = 4
    TASKKIT_RELAY_INTERVAL = 0.3
    TASKKIT_LEASE_MARGIN_SECONDS = 2
    CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] = 30

# Every process of a test run (the tests and their worker subprocesses, which inherit the
# environment) writes JSON records to one file, so tests can read what a real worker logged.
os.environ.setdefault("TASKKIT_TEST_LOG_FILE", str(TMP_DIR / f"records-{os.getpid()}.jsonl"))
JSON_LOG_FILE = os.environ["TASKKIT_TEST_LOG_FILE"]

# Hooks for single fault scenarios (set in the environment of the workers and relays they start).
if os.environ.get("TASKKIT_TEST_VISIBILITY_TIMEOUT"):
    # A short visibility timeout, and restores of unacked messages checked every second, so a
    # message held past the timeout really is delivered again during the scenario.
    CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] = float(
        os.environ["TASKKIT_TEST_VISIBILITY_TIMEOUT"]
    )
    CELERY_BROKER_TRANSPORT_OPTIONS["unacked_restore_interval"] = 1
    CELERY_BROKER_TRANSPORT_OPTIONS["unacked_restore_throttle"] = 1
if os.environ.get("TASKKIT_TEST_REQUEUE_AFTER"):
    TASKKIT_REQUEUE_AFTER = float(os.environ["TASKKIT_TEST_REQUEUE_AFTER"])
if os.environ.get("TASKKIT_TEST_ETA_MAX_SECONDS"):
    TASKKIT_ETA_MAX_SECONDS = float(os.environ["TASKKIT_TEST_ETA_MAX_SECONDS"])
if os.environ.get("TASKKIT_TEST_BROKER_TRANSPORT") and REDIS_URL.startswith("redis"):
    CELERY_BROKER_TRANSPORT = os.environ["TASKKIT_TEST_BROKER_TRANSPORT"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"run_context": {"()": "taskkit.observe.log_context.RunContextFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(process)d",
        }
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "level": "INFO",
            "filters": ["run_context"],
        },
        "json_file": {
            "class": "logging.FileHandler",
            "filename": JSON_LOG_FILE,
            "formatter": "json",
            "filters": ["run_context"],
        },
    },
    "loggers": {
        "taskkit": {"handlers": ["console", "json_file"], "level": "DEBUG"},
        "tests": {"handlers": ["json_file"], "level": "INFO"},
        "celery.app.trace": {"handlers": ["json_file"], "level": "INFO"},
    },
}
if os.environ.get("TASKKIT_TEST_ADOPT"):  # "0": a worker that refuses messages sent without taskkit
    TASKKIT_ADOPT = os.environ["TASKKIT_TEST_ADOPT"] == "1"

# Hooks of the relay/deploy tests (set in the environment of the subprocesses they start).
if os.environ.get("TASKKIT_TEST_SQLITE_DEFERRED") and "OPTIONS" in DATABASES["default"]:
    # SQLite as a user who never set transaction_mode gets it: transactions begin DEFERRED.
    DATABASES["default"]["OPTIONS"].pop("transaction_mode", None)
if os.environ.get("TASKKIT_TEST_UNKNOWN_TASK_GRACE_SECONDS"):
    TASKKIT_UNKNOWN_TASK_GRACE_SECONDS = float(
        os.environ["TASKKIT_TEST_UNKNOWN_TASK_GRACE_SECONDS"]
    )
if os.environ.get("TASKKIT_TEST_RELAY_BATCH_SIZE"):
    TASKKIT_RELAY_BATCH_SIZE = int(os.environ["TASKKIT_TEST_RELAY_BATCH_SIZE"])
