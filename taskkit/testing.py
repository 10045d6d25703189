"""Test helpers for projects using taskkit: capture dispatches, run them in-process, inject faults.

``capture()`` swaps the broker for a list: dispatches go through the real path (signature check,
JSON encoding, ledger row, on-commit publish), so an argument that cannot travel fails the test
where it is passed, and only committed dispatches are captured. ``Captured.run_all()`` then
delivers the captured messages in-process through the real execution path (claim, retry policy,
``on_missing``, atomic transactions), skipping retry waits. Faults: ``deliver_again(run)`` (a
duplicate message), ``fail_on(task, attempts=…)`` (an exception on chosen attempts), and deleting
a referenced row before ``run_all()`` (a missing object)::

    with taskkit.testing.capture() as captured:
        place_order(...)                        # calls charge.delay(order, 10)
        captured.assert_dispatched(charge, args=(order, 10))
        captured.fail_on(charge, attempts={1}, exc=GatewayError("timeout"))
        captured.run_all()
    assert charge_run.state == "SUCCEEDED"

Django ``TestCase`` (pytest ``db``) tests never commit: there, ``commit()`` (called by
``run_all()`` and the assertions) runs the on-commit callbacks of the transactions that would have
committed, as ``TestCase.captureOnCommitCallbacks(execute=True)`` does.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any
from unittest import mock

from celery.exceptions import Ignore, Retry
from django.db import connections

from .core import ledger
from .core.conf import settings
from .core.context import current_run
from .core.db import db_alias
from .core.serialization import encode_call
from .core.spec import RUN_HEADER, TaskSpec
from .models import TaskRun
from .producer import publisher
from .worker.execution import execute

if TYPE_CHECKING:
    from .task import ReliableTask


@dataclass(frozen=True)
class Message:
    """A message taskkit would have published: "look at run ``run_id``"."""

    task_name: str
    run_id: uuid.UUID
    not_before: datetime.datetime | None


@dataclass(frozen=True)
class Delivery:
    """What happened when a captured message was delivered."""

    message: Message
    #: "succeeded", "retrying", "failed", "discarded" (the run's new state, lower case), or
    #: "skipped" when the message lost the claim (a duplicate or stale message).
    outcome: str
    attempt: int
    exception: BaseException | None = None


class Captured:
    """The messages published while ``capture()`` is active, and the means to run them."""

    def __init__(self, using: str) -> None:
        self.using = using
        self.messages: list[Message] = []  # every message, in publish order
        self.deliveries: list[Delivery] = []
        self._pending: collections.deque[Message] = collections.deque()
        self._committed_from = len(connections[using].run_on_commit)
        self._faults: dict[str, tuple[set[int], Callable[[], BaseException]]] = {}

    # -- the publisher boundary ---------------------------------------------------------------

    def _publish_many(
        self,
        spec: TaskSpec,
        run_ids: list[Any],
        options: dict[str, Any],
        not_before: datetime.datetime | None = None,
        headers: Any = None,
    ) -> list[Any]:
        """Stands in for taskkit's one publish point (``publisher.publish_many``): every message
        of a dispatch, a bulk dispatch, a retry or an operator retry is captured."""
        for run_id in run_ids:
            message = Message(spec.name, uuid.UUID(str(run_id)), not_before)
            self.messages.append(message)
            self._pending.append(message)
        return list(run_ids)

    # -- committing in TestCase-style tests ---------------------------------------------------

    def commit(self) -> None:
        """Run the on-commit callbacks that a real commit would run now.

        In autocommit (``transaction=True`` tests, or no test transaction) callbacks have already
        run: nothing to do. Inside only the test case's own transaction, run the callbacks
        registered since ``capture()`` began. Inside a transaction the code under test opened
        and has not left, do nothing: that dispatch has not committed yet.
        """
        connection = connections[self.using]
        if not connection.in_atomic_block:
            return
        if not all(getattr(a, "_from_testcase", False) for a in connection.atomic_blocks):
            return
        while self._committed_from < len(connection.run_on_commit):
            callback = connection.run_on_commit[self._committed_from][1]
            self._committed_from += 1
            callback()

    # -- what was dispatched ------------------------------------------------------------------

    @property
    def runs(self) -> list[TaskRun]:
        """The runs dispatched (and committed) while capturing, in dispatch order."""
        self.commit()
        ids = list(dict.fromkeys(m.run_id for m in self.messages))
        by_id = TaskRun.objects.using(self.using).in_bulk(ids)
        return [by_id[i] for i in ids if i in by_id]

    def runs_of(self, task: ReliableTask | str) -> list[TaskRun]:
        name = task if isinstance(task, str) else task.name
        return [r for r in self.runs if r.task_name == name]

    def assert_dispatched(
        self,
        task: ReliableTask,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        count: int | None = None,
    ) -> list[TaskRun]:
        """Assert ``task`` was dispatched (with these arguments, ``count`` times if given).

        Arguments are compared as they travel: ``args=(order,)`` matches a run of ``order``'s
        model reference, and a tuple matches the list it arrives as.
        """
        runs = self.runs_of(task)
        if args is not None or kwargs is not None:
            want = _encoded(task, tuple(args or ()), dict(kwargs or {}))
            matching = [r for r in runs if (r.args, r.kwargs) == want]
        else:
            matching = runs
        if (count is None and not matching) or (count is not None and len(matching) != count):
            seen = "; ".join(f"args={r.args!r} kwargs={r.kwargs!r}" for r in runs) or "none"
            expected = "" if count is None else f" {count} time(s)"
            raise AssertionError(
                f"expected {task.name} to be dispatched{expected}"
                f"{_describe(args, kwargs)}, found {len(matching)}; its committed runs: {seen}"
            )
        return matching

    def assert_not_dispatched(self, task: ReliableTask) -> None:
        runs = self.runs_of(task)
        if runs:
            raise AssertionError(f"{task.name} was dispatched {len(runs)} time(s): {runs}")

    # -- faults -------------------------------------------------------------------------------

    def deliver_again(self, run: TaskRun | Any) -> None:
        """Queue one more message for ``run``: a duplicate delivery."""
        run_id = uuid.UUID(str(getattr(run, "pk", run)))
        task_name = TaskRun.objects.using(self.using).values_list("task_name", flat=True)
        self._pending.append(Message(task_name.get(pk=run_id), run_id, None))

    def fail_on(
        self,
        task: ReliableTask | str,
        attempts: Iterable[int],
        exc: BaseException | Callable[[], BaseException] | None = None,
    ) -> None:
        """Make ``task`` raise ``exc`` (default ``ConnectionError``) on these attempt numbers.

        The exception is raised in place of the body, inside the attempt, so the task's retry
        predicate, wait and stop decide what happens, as they would for a real failure.
        """
        name = task if isinstance(task, str) else task.name
        if exc is None:
            factory: Callable[[], BaseException] = lambda: ConnectionError(  # noqa: E731
                "taskkit.testing: simulated failure"
            )
        elif isinstance(exc, BaseException):
            factory = lambda: exc  # noqa: E731
        else:
            factory = exc
        self._faults[name] = (set(attempts), factory)

    # -- running ------------------------------------------------------------------------------

    def run_all(self, max_deliveries: int = 1000) -> list[Delivery]:
        """Deliver every captured message (and those they cause, e.g. retries) in-process.

        Retry waits are skipped: a retry's message is delivered next, with the run made due
        (the chosen wait stays recorded on the attempt as ``retry_delay``). Returns what each
        delivery did; exceptions of failed runs are returned, not raised.
        """
        self.commit()
        done: list[Delivery] = []
        while self._pending:
            if len(done) >= max_deliveries:
                raise AssertionError(
                    f"taskkit.testing: more than {max_deliveries} deliveries; a retry loop?"
                )
            done.append(self.deliver(self._pending.popleft()))
            self.commit()
        return done

    def deliver(self, message: Message) -> Delivery:
        """Deliver one message the way a worker would."""
        task = publisher.task_for(message.task_name)
        if task is None:
            raise LookupError(f"taskkit.testing: no reliable task named {message.task_name!r}")
        db = self.using
        ledger.make_due(message.run_id)  # time travel: a retry (or countdown) is due now
        request = SimpleNamespace(
            id=str(message.run_id),
            hostname="taskkit.testing",
            is_eager=False,
            headers={RUN_HEADER: "1"},
            delivery_info={},
            args=[],
            kwargs={},
        )
        setattr(request, RUN_HEADER, "1")
        attempts_before = TaskRun.objects.using(db).values_list("attempts", flat=True)
        before = attempts_before.get(pk=message.run_id)
        exception: BaseException | None = None
        with self._faults_applied(task):
            try:
                execute(task.spec, request)
            except (Ignore, Retry):
                pass
            except Exception as exc:
                exception = exc
        run = TaskRun.objects.using(db).get(pk=message.run_id)
        # A message that lost the claim (a duplicate, or a stale one) made no attempt.
        outcome = "skipped" if run.attempts == before else run.state.lower()
        delivery = Delivery(message, outcome, run.attempts, exception)
        self.deliveries.append(delivery)
        return delivery

    @contextlib.contextmanager
    def _faults_applied(self, task: ReliableTask) -> Iterator[None]:
        fault = self._faults.get(task.name)
        if fault is None:
            yield
            return
        attempts, factory = fault
        body = task.run

        def failing(*args: Any, **kwargs: Any) -> Any:
            context = current_run()
            if context is not None and context.attempt in attempts:
                raise factory()
            return body(*args, **kwargs)

        with mock.patch.object(task, "run", failing):
            yield


def _encoded(task: ReliableTask, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    return encode_call(task.call_signature, task.name, args, kwargs, settings.MAX_PAYLOAD_BYTES)


def _describe(args: Any, kwargs: Any) -> str:
    if args is None and kwargs is None:
        return ""
    return f" with args={tuple(args or ())!r} kwargs={kwargs or {}!r}"


@contextlib.contextmanager
def capture(using: str | None = None) -> Iterator[Captured]:
    """Capture taskkit's broker messages instead of publishing them (see the module docstring)."""
    captured = Captured(using or db_alias())
    with mock.patch.object(publisher, "publish_many", captured._publish_many):
        yield captured


__all__ = ["Captured", "Delivery", "Message", "capture"]
