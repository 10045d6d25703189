"""django-celery-results' ``TaskResult`` row of a reliable task, written with the ledger's outcome.

With ``CELERY_RESULT_BACKEND = "django-db"``, Celery's backend writes a ``TaskResult`` row after
every attempt through the ORM (a SELECT and an INSERT or UPDATE), after taskkit has recorded the
outcome. For a reliable task taskkit writes that row itself, in the statement that records the
outcome (``taskkit.core.ledger.succeed`` / ``fail``): ``row_for`` builds it with the backend's
own methods — the same encoding (``content_type`` / ``content_encoding``), ``meta`` (children),
``result_extended`` fields (``task_name``, ``task_args`` / ``task_kwargs`` from the message's
``argsrepr`` / ``kwargsrepr``, ``worker``) — and the ledger upserts it on ``task_id`` as
django-celery-results' manager does (``date_created`` kept, ``date_done`` now, ``date_started``
left as it is).

Celery still calls its backend after the attempt (``mark_as_done`` / ``mark_as_failure`` /
``mark_as_retry``, in the child or, for a lost child or a hard time limit, in the main process):
``ReliableTask.backend`` is ``ledger_backend(app.backend)``, the same backend object seen
through a subclass whose ``store_result`` skips the one write taskkit has made already for that
task id in this process (``wrote``). Everything else — chords, errbacks, reads, STARTED with
``track_started``, any write taskkit did not make (an error before the claim) — is Celery's, as
before. With another result backend (or none), nothing here applies.
"""

from __future__ import annotations

from typing import Any

from celery import states
from celery.app.task import get_actual_ignore_result
from celery.utils.serialization import get_pickleable_exception
from django.db import router
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

from ..core.db import db_alias
from ..core.ledger import ResultRow
from ..core.spec import TaskSpec

#: The states whose write taskkit makes for a reliable task.
WRITTEN_STATES = frozenset({states.SUCCESS, states.FAILURE, states.RETRY})

#: Task ids whose row taskkit wrote in this process and whose write by Celery is still to come
#: (insertion order; trimmed, as a lost child's requeued message never reaches Celery's write).
_written: dict[str, None] = {}
_MAX_PENDING = 10_000


def row_for(
    spec: TaskSpec,
    request: Any,
    state: str,
    value: Any,
    traceback: str | None = None,
) -> ResultRow | None:
    """The ``TaskResult`` row Celery's django-db backend would write for ``request`` ending in
    ``state`` with ``value`` (the return value, or the exception Celery will be given), or
    ``None`` where taskkit leaves the write to Celery: another backend, an eager call, a task
    whose results are ignored, a result table on another database than the ledger."""
    backend = spec.app.backend
    if not isinstance(backend, DatabaseBackend) or request is None or not request.id:
        return None
    if getattr(request, "is_eager", False):
        return None
    task = spec.app.tasks.get(spec.name)
    ignored = task is not None and get_actual_ignore_result(task, request)
    if ignored and (state == states.SUCCESS or not task.store_errors_even_if_ignored):
        return None
    if router.db_for_write(TaskResult) != db_alias():
        return None
    if state == states.FAILURE and isinstance(value, BaseException):
        value = get_pickleable_exception(value)  # as celery.app.trace hands it to the backend
    # What DatabaseBackend.store_result + _store_result compute, without the write:
    encoded = backend.encode_result(value, state)
    content_type, content_encoding, result = backend.encode_content(encoded)
    meta = {
        **backend._get_meta_from_request(request),
        "children": backend.current_task_children(request),
    }
    _, _, encoded_meta = backend.encode_content(meta)
    fields = {
        "content_encoding": content_encoding,
        "content_type": content_type,
        "meta": encoded_meta,
        "result": result,
        "status": state,
        "task_id": request.id,
        "traceback": traceback,
    }
    fields.update(backend._get_extended_properties(request, traceback))
    return ResultRow(model=TaskResult, fields=fields)


def wrote(row: ResultRow | None) -> None:
    """The ledger wrote ``row``: Celery's coming write of the same outcome is skipped."""
    if row is None:
        return
    _written[row.fields["task_id"]] = None
    while len(_written) > _MAX_PENDING:
        del _written[next(iter(_written))]


class _SkipsWhatTaskkitWrote:
    """Mixed into the backend's class: ``store_result`` skips a write taskkit made already."""

    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        if state in WRITTEN_STATES and task_id in _written:
            del _written[task_id]
            return self.encode_result(result, state)  # type: ignore[attr-defined]
        return super().store_result(  # type: ignore[misc]
            task_id, result, state, traceback=traceback, request=request, **kwargs
        )


_classes: dict[type[Any], type[Any]] = {}


def ledger_backend(backend: Any) -> Any:
    """``backend`` as a reliable task uses it: a django-db backend seen through
    ``_SkipsWhatTaskkitWrote`` (the same object state: one connection, one cache); any other
    backend as it is."""
    if not isinstance(backend, DatabaseBackend):
        return backend
    view = backend.__dict__.get("_taskkit_view")
    if view is None:
        cls = type(backend)
        sub = _classes.get(cls)
        if sub is None:
            sub = _classes[cls] = type(cls.__name__, (_SkipsWhatTaskkitWrote, cls), {})
        view = object.__new__(sub)
        view.__dict__ = backend.__dict__  # shares every attribute with the app's backend
        backend.__dict__["_taskkit_view"] = view
    return view


__all__ = ["WRITTEN_STATES", "ledger_backend", "row_for", "wrote"]
