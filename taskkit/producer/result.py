"""The handle a dispatch returns: a Celery ``AsyncResult`` that also knows its ledger row."""

from __future__ import annotations

from typing import Any

from celery.result import AsyncResult

from ..models import TaskRun


class RunResult(AsyncResult):
    """``AsyncResult`` for a run. ``created`` is False when an idempotency key matched a run."""

    def __init__(self, id: str, created: bool = True, **kwargs: Any) -> None:
        super().__init__(id, **kwargs)
        self.created = created

    @property
    def run(self) -> TaskRun:
        """The ledger row, fetched now."""
        return TaskRun.objects.get(pk=self.id)
