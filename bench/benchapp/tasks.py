"""The same no-op task, reliable and plain.

Executions are counted in Redis (``DONE``) by the worker child's ``task_postrun`` probe
(``bench.probes``), with the finish time, in one round trip per run: after the outcome is stored.
"""

import os
from functools import cache

import redis
from celery import shared_task

from taskkit import reliable_task

#: Dispatches land on a queue no worker reads; the bench renames it to ``bench`` to start a drain.
HOLD = "bench_hold"
DONE = "bench:done"


@cache
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])


@reliable_task(queue=HOLD)
def reliable_noop(i):
    return i


@shared_task(queue=HOLD)
def plain_noop(i):
    return i
