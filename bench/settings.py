"""Django settings of the benchmark: its own database, its own Redis, worker options from env.

BENCH_DATABASE_URL   the database (SQLite file or PostgreSQL), set by ``bench.run``
BENCH_REDIS_URL      the benchmark's own embedded Redis, set by ``bench.run``
BENCH_RESULTS        "django-db" (django-celery-results, result_extended) or "none"
BENCH_DB_REUSE_MAX   sets CELERY_DB_REUSE_MAX (connection reuse in workers) when not empty
BENCH_PG_APPNAME     PostgreSQL ``application_name`` of this process's connections (the bench
                     sets it for workers, to find their server backends in pg_stat_activity)
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "taskkit-bench"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django_celery_results",
    "taskkit",
    "bench.benchapp",
]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{BASE_DIR / '.tmp' / 'bench.sqlite3'}"
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
elif os.environ.get("BENCH_PG_APPNAME"):
    DATABASES["default"]["OPTIONS"] = {"application_name": os.environ["BENCH_PG_APPNAME"]}

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = REDIS_URL
if os.environ.get("BENCH_RESULTS", "django-db") == "django-db":
    CELERY_RESULT_BACKEND = "django-db"
    CELERY_RESULT_EXTENDED = True
if os.environ.get("BENCH_DB_REUSE_MAX"):
    CELERY_DB_REUSE_MAX = int(os.environ["BENCH_DB_REUSE_MAX"])
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
# make bench BENCH_ARGS=--asynchronous-claims: taskkit's opt-in (PostgreSQL).
TASKKIT_ASYNCHRONOUS_CLAIMS = bool(os.environ.get("BENCH_ASYNCHRONOUS_CLAIMS"))
