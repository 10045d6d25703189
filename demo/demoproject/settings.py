"""Settings of the demo: SQLite (WAL) and the Redis `make demo` started, unless DATABASE_URL /
REDIS_URL are set (demoproject/state.py finds the running demo)."""

import os
from pathlib import Path

import dj_database_url

from . import state

BASE_DIR = Path(__file__).resolve().parent.parent

# The running demo (demo/var/demo.json, written by `make demo`): its Redis, database and ports,
# so a command run from a second terminal talks to the same ones. Environment variables win.
RUNNING_DEMO = state.read() or {}

# A development-only key; set DJANGO_SECRET_KEY for anything that is not a local demo.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-taskkit-demo-only")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",
    "taskkit",
    "shop",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # request ids on responses, runs and log lines
    "taskkit.observe.middleware.RequestIdMiddleware",
]
ROOT_URLCONF = "demoproject.urls"
WSGI_APPLICATION = "demoproject.wsgi.application"
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
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL")
        or RUNNING_DEMO.get("database_url")
        or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process and the worker processes read while one of them writes.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }

# $REDIS_URL, else the running demo's Redis (`make demo` starts one for all its processes), else
# a refused port: nothing is sent to a private Redis no worker reads (demo_traffic refuses to run).
REDIS_URL = (
    os.environ.get("REDIS_URL") or RUNNING_DEMO.get("redis_url") or state.NOT_RUNNING_REDIS_URL
)

CELERY_BROKER_URL = REDIS_URL
if __import__("django").VERSION >= (6, 0):  # Django's own task API, run by taskkit
    TASKS = {"default": {"BACKEND": "taskkit.backends.TaskkitBackend", "QUEUES": ["celery"]}}
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_DB_REUSE_MAX = 1000  # workers keep their database connection between tasks
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 1, "socket_timeout": 5}

# The confirmation e-mails are files in demo/var/mail (DEMO_MAIL_DIR overrides it).
EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = os.environ.get("DEMO_MAIL_DIR") or str(BASE_DIR / "var" / "mail")

# The admin links every run to Flower (demo/run.py sets FLOWER_PORT for all processes).
FLOWER_PORT = os.environ.get("FLOWER_PORT") or RUNNING_DEMO.get("flower_port") or 5555
TASKKIT_FLOWER_URL = f"http://127.0.0.1:{FLOWER_PORT}"

# The flaky gateway's default failure rate for orders placed on the page.
DEMO_FAILURE_RATE = float(os.environ.get("DEMO_FAILURE_RATE") or 0.2)

# Let Django's LOGGING below configure the worker's logging too, instead of Celery's own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# One JSON object per line, each with the run (task_name, run_id, attempt, idempotency_key,
# queue) and the request_id of the web request that dispatched it.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"run_context": {"()": "taskkit.observe.log_context.RunContextFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["run_context"],
        }
    },
    "root": {"handlers": ["console"], "level": "INFO"},
}
