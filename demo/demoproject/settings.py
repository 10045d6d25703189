"""Settings of the demo: SQLite (WAL) + embedded Redis unless DATABASE_URL / REDIS_URL are set."""

import os
import sys
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

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
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process and the worker processes read while one of them writes.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }



def _embedded_redis_url() -> str:
    """An embedded redis-server started now, from the checkout's devsupport/ (not in the wheel)."""
    sys.path.insert(0, str(BASE_DIR.parent))  # the checkout's root, where devsupport/ lives
    from devsupport.embedded_redis import redis_url_from_env

    return redis_url_from_env()


# $REDIS_URL, or an embedded redis-server started now (demo/run.py starts one for all processes).
REDIS_URL = os.environ.get("REDIS_URL") or _embedded_redis_url()

CELERY_BROKER_URL = REDIS_URL
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
TASKKIT_FLOWER_URL = f"http://127.0.0.1:{os.environ.get('FLOWER_PORT') or 5555}"

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
