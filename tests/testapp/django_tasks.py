"""Tasks written with Django's task API (``django.tasks``, Django 6.0+), run by taskkit's
backend (``TASKS`` in tests/settings.py). Imported by the Celery app on Django 6 only."""

import asyncio
import os

from django.tasks import task
from django.tasks.signals import task_finished, task_started

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


@task(takes_context=True)
@task_options(stop=3, wait=0.3)
def slow_flaky(context, seconds, failures):
    """Sleeps ``seconds`` in every attempt; fails the first ``failures``."""
    import time

    time.sleep(seconds)
    if context.attempt <= failures:
        raise ConnectionError(f"failure {context.attempt} of {failures}")
    return {"attempt": context.attempt}


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


@task(takes_context=True)
def sleeps(context, seconds):
    """Sleeps while RUNNING (so a test can look at the run mid-attempt)."""
    import time

    time.sleep(seconds)
    return context.attempt


# -- Django's task signals, as a worker sends them: recorded as Effect rows ---------------------

SIGNALLED = {"flaky", "always_fails", "record"}


def _record_signal(signal_name):
    def receiver(sender, task_result, **kwargs):
        if task_result.task.name not in SIGNALLED:
            return
        Effect.objects.create(
            kind=f"signal:{signal_name}",
            run_id=task_result.id,
            attempt=task_result.attempts,
            payload={"sender": sender.__name__, "status": str(task_result.status)},
            pid=os.getpid(),
        )

    return receiver


_started = _record_signal("task_started")
_finished = _record_signal("task_finished")
task_started.connect(_started, dispatch_uid="tests.django_tasks.started")
task_finished.connect(_finished, dispatch_uid="tests.django_tasks.finished")
