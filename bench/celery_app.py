"""The benchmark's Celery app (workers start with ``-A bench.celery_app``), and its probes."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

app = Celery("bench")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["bench.benchapp"])


@signals.worker_ready.connect
def _ready(**kwargs: object) -> None:
    from bench.benchapp.tasks import redis_client

    redis_client().set("bench:ready", os.getpid())


@signals.worker_process_init.connect
def _child_started(**kwargs: object) -> None:
    from bench import probes

    probes.install_in_worker_child()
