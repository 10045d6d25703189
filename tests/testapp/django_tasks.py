"""Tasks written with Django's task API (``django.tasks``, Django 6.0+), run by taskkit's
backend (``TASKS`` in tests/settings.py). Imported by the Celery app on Django 6 only."""

import asyncio
import os

from django.tasks import task

from taskkit.backends import task_options

from .models import Effect


def _effect(kind, context=None, **payload):
    return Effect.objects.create(
        kind=kind,
        run_id=context.task_result.id if context else "",
        attempt=context.attempt if context else 0,
        payload=payload,
        pid=os.getpid(),
    )


@task
def add(a, b):
    return a + b


@task(takes_context=True)
@task_options(stop=3, wait=0.3)
def flaky(context, kind, failures):
    """Fails its first ``failures`` attempts, then returns the attempt number."""
    _effect(kind, context)
    if context.attempt <= failures:
        raise ConnectionError(f"failure {context.attempt} of {failures}")
    return {"attempt": context.attempt, "id": context.task_result.id}


@task
@task_options(stop=2, wait=0.1)
def always_fails(kind):
    raise ValueError(f"{kind} always fails")


@task
async def add_async(a, b):
    await asyncio.sleep(0.05)
    return {"sum": a + b}


@task(takes_context=True)
def describe_context(context):
    """Returns what the context says of the run, as seen from inside the attempt."""
    result = context.task_result
    return {
        "id": result.id,
        "attempt": context.attempt,
        "status": str(result.status),
        "worker_ids": result.worker_ids,
        "started": result.started_at is not None,
    }


@task
def record(kind):
    _effect(kind)
    return kind


@task(takes_context=True)
@task_options(atomic=True, stop=20, wait=0.2, time_limit=6)
def witness(context, n, sleep=0.0):
    """The fault suite's task through Django's API: its witness row commits with SUCCEEDED, or
    not at all."""
    import time

    _effect("witness", context, n=n)
    if sleep:
        time.sleep(sleep)
    return n
