"""The run ledger: one ``TaskRun`` row per dispatch, one ``TaskAttempt`` row per execution.

The ledger is the source of truth; a broker message only says "look at run X". A run's id is the
Celery task id, so Celery, Flower and django-celery-results speak of the same id. State changes are
conditional updates made in ``taskkit.core.ledger``; nothing else writes ``state``.
"""

from __future__ import annotations

import uuid
from typing import ClassVar

from django.db import models
from django.db.models import Q


class RunState(models.TextChoices):
    PENDING = "PENDING", "pending"  # written in the caller's transaction, not yet published
    QUEUED = "QUEUED", "queued"  # published to the broker
    RUNNING = "RUNNING", "running"  # claimed by a worker, which holds a lease
    RETRYING = "RETRYING", "retrying"  # an attempt failed; the next one is due at not_before
    SUCCEEDED = "SUCCEEDED", "succeeded"
    FAILED = "FAILED", "failed"
    DISCARDED = "DISCARDED", "discarded"
    CANCELLED = "CANCELLED", "cancelled"  # an operator cancelled it (taskkit.cancel)


TERMINAL_STATES = frozenset(
    {RunState.SUCCEEDED, RunState.FAILED, RunState.DISCARDED, RunState.CANCELLED}
)
CLAIMABLE_STATES = frozenset({RunState.PENDING, RunState.QUEUED, RunState.RETRYING})
#: Every state but the two a successful run enters (RUNNING, SUCCEEDED): the waiting ones it leaves
#: and the ends of a run that did not succeed. The indexes that hold a run's state hold only these,
#: so a run that succeeds writes an entry there when dispatched and removes it when claimed.
OFF_HAPPY_PATH = (
    RunState.PENDING,
    RunState.QUEUED,
    RunState.RETRYING,
    RunState.FAILED,
    RunState.DISCARDED,
    RunState.CANCELLED,
)


def state_in(states: tuple[str, ...]) -> Q:
    """``state = A OR state = B …``: the form of a condition on the state that SQLite's planner
    can match against a partial index (it proves ``state = A`` implies an OR of equalities, not an
    ``IN`` list). PostgreSQL matches either form."""
    condition = Q(state=states[0])
    for state in states[1:]:
        condition |= Q(state=state)
    return condition


class AttemptOutcome(models.TextChoices):
    SUCCEEDED = "SUCCEEDED", "succeeded"
    FAILED = "FAILED", "raised an exception"
    MISSING = "MISSING", "a referenced object was missing"
    TIMED_OUT = "TIMED_OUT", "hard time limit exceeded"
    LOST = "LOST", "worker lost"


class TaskRun(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task_name = models.CharField(max_length=255)
    queue = models.CharField(max_length=255, blank=True, default="")
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    options = models.JSONField(default=dict, blank=True, help_text="Publish options (priority…).")
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)

    state = models.CharField(max_length=16, choices=RunState.choices, default=RunState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    attempt_base = models.PositiveIntegerField(
        default=0, help_text="Attempts made before the current retry budget began (admin retry)."
    )
    result = models.JSONField(null=True, blank=True)
    error_type = models.CharField(max_length=255, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    error_traceback = models.TextField(blank=True, default="")

    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    first_started_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(
        null=True, blank=True, help_text="Earliest time the next attempt may start."
    )
    lease_until = models.DateTimeField(
        null=True, blank=True, help_text="Until when the current attempt holds the run."
    )
    publish_count = models.PositiveIntegerField(
        default=0, help_text="Messages published for the run (the relay's re-publishes included)."
    )
    requeue_at = models.DateTimeField(
        null=True, blank=True, help_text="When the relay may publish a QUEUED run again."
    )
    claimed_by = models.CharField(
        max_length=255, blank=True, default="", help_text="host:pid of the attempt holding the run."
    )
    request_id = models.CharField(
        max_length=64, blank=True, default="", help_text="Id of the web request that dispatched it."
    )
    discard_reason = models.TextField(
        "reason",
        blank=True,
        default="",
        help_text="Why it was discarded or cancelled, and by whom (an operator, or the code).",
    )
    unregistered_since = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When a relay first found the run's task not registered (cleared when it is "
        "again); the run ends FAILED TASKKIT_UNKNOWN_TASK_GRACE_SECONDS later.",
    )
    cancel_requested_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When cancelling it was asked for (taskkit.cancel): a RUNNING run is then never "
        "retried, and its task can read current_run().cancel_requested.",
    )

    class Meta:
        verbose_name = "task run"
        permissions = [
            ("retry_taskrun", "Can retry task runs"),
            ("discard_taskrun", "Can discard task runs"),
            ("cancel_taskrun", "Can cancel task runs"),
            ("pause_taskrun", "Can pause and resume tasks and queues"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["task_name", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="taskkit_run_unique_idempotency_key",
            ),
        ]
        # An UPDATE that changes a run's state writes an entry into every index whose condition
        # the new row meets (PostgreSQL rewrites them all: the state is indexed, so no update is
        # HOT). The indexes only the relay, the stuck panel and the filters read are partial on
        # the rows they look for, so a claim and an outcome skip them (measured: 8 index entries
        # fewer per run). Their queries name the same condition (``state = RUNNING``, a bound
        # ``finished_at``…), which both databases' planners match. No full index holds the state:
        # runs by state (and by task and state) are indexed only off the happy path, and the runs
        # of a task by their (unchanging) creation time. On SQLite a successful run's claim and
        # end write 97 KB of WAL instead of 124 KB (``bench.hotpath``), which checkpoints copy.
        indexes = [
            # The relay's due retries and countdowns: only rows that wait for a time.
            models.Index(
                fields=["state", "not_before"],
                name="taskkit_run_state_due",
                condition=Q(not_before__isnull=False),
            ),
            models.Index(
                fields=["state", "created_at"],
                name="taskkit_run_state_created",
                condition=state_in(OFF_HAPPY_PATH),
            ),
            models.Index(
                fields=["task_name", "state"],
                name="taskkit_run_task_state",
                condition=state_in(OFF_HAPPY_PATH),
            ),
            models.Index(fields=["task_name", "created_at"], name="taskkit_run_task_created"),
            models.Index(fields=["-created_at"], name="taskkit_run_created"),
            models.Index(
                fields=["idempotency_key"],
                name="taskkit_run_key",
                condition=Q(idempotency_key__isnull=False),
            ),
            models.Index(fields=["queue"], name="taskkit_run_queue"),
            models.Index(
                fields=["state", "requeue_at"],
                name="taskkit_run_state_requeue",
                condition=Q(state=RunState.QUEUED),
            ),
            models.Index(
                fields=["state", "finished_at"],
                name="taskkit_run_state_finished",
                condition=Q(finished_at__isnull=False),
            ),
            models.Index(
                fields=["task_name", "unregistered_since"],
                name="taskkit_run_unregistered",
                condition=Q(unregistered_since__isnull=False),
            ),
            # The overview's stuck-work panel and the lists' "stuck" and error-class filters.
            models.Index(
                fields=["state", "queued_at"],
                name="taskkit_run_state_queued",
                condition=Q(state=RunState.QUEUED),
            ),
            models.Index(
                fields=["state", "lease_until"],
                name="taskkit_run_state_lease",
                condition=Q(state=RunState.RUNNING),
            ),
            models.Index(
                fields=["error_type"], name="taskkit_run_error_type", condition=~Q(error_type="")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_name}[{self.id}] {self.state}"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class TaskAttempt(models.Model):
    # No index of its own: the unique (run, number) index serves every lookup by run.
    run = models.ForeignKey(
        TaskRun, on_delete=models.CASCADE, related_name="attempt_log", db_index=False
    )
    number = models.PositiveIntegerField()
    outcome = models.CharField(max_length=16, choices=AttemptOutcome.choices)
    worker = models.CharField(max_length=255, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField()
    duration = models.FloatField(null=True, blank=True, help_text="Seconds.")
    error_type = models.CharField(max_length=255, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    retry_delay = models.FloatField(
        null=True, blank=True, help_text="Seconds until the next attempt, when one was scheduled."
    )

    class Meta:
        verbose_name = "task attempt"
        ordering = ["run", "number"]
        indexes = [
            # The overview's charts: attempts that ended in a time range.
            models.Index(fields=["finished_at"], name="taskkit_attempt_finished"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="taskkit_attempt_unique_number"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.run_id}: {self.outcome}"


class FailedRunManager(models.Manager["FailedRun"]):
    def get_queryset(self) -> models.QuerySet[FailedRun]:
        return super().get_queryset().filter(state=RunState.FAILED)


class FailedRun(TaskRun):
    """FAILED runs: the operators' landing page in the admin."""

    objects: ClassVar[FailedRunManager] = FailedRunManager()

    class Meta:
        proxy = True
        verbose_name = "failed task"
        verbose_name_plural = "failed tasks"


class PauseKind(models.TextChoices):
    TASK = "task", "task"
    QUEUE = "queue", "queue"


class TaskPause(models.Model):
    """A paused task name or queue: its runs wait (claims refuse them, the relay holds them)
    until the row is deleted (``taskkit.resume_task`` / ``resume_queue``)."""

    kind = models.CharField(max_length=8, choices=PauseKind.choices)
    name = models.CharField(max_length=255, help_text="The task name, or the queue name.")
    paused_at = models.DateTimeField()
    paused_by = models.CharField(max_length=255, blank=True, default="")
    reason = models.TextField(blank=True, default="")

    class Meta:
        verbose_name = "pause"
        verbose_name_plural = "pauses"
        constraints = [
            models.UniqueConstraint(fields=["kind", "name"], name="taskkit_pause_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.name} paused"


class RelayHeartbeat(models.Model):
    """One row per relay process, updated after every sweep, so operators can see it is alive."""

    name = models.CharField(max_length=255, primary_key=True, help_text="host:pid of the relay.")
    started_at = models.DateTimeField()
    last_sweep_at = models.DateTimeField()
    sweeps = models.PositiveBigIntegerField(default=0)
    last_counts = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = "relay heartbeat"

    def __str__(self) -> str:
        return f"relay {self.name} at {self.last_sweep_at:%Y-%m-%d %H:%M:%S}"


class AttemptRollup(models.Model):
    """Attempts per task and closed time bucket, counted once, read by the admin's overview.

    Filled by ``taskkit.core.rollup`` (the relay's sweep) for buckets that closed; a row with an
    empty ``task_name`` marks its bucket as filled. Never written on a run's path.
    """

    width = models.PositiveIntegerField(help_text="Bucket width in seconds (60 or 3600).")
    start = models.DateTimeField(help_text="Start of the bucket (UTC).")
    task_name = models.CharField(
        max_length=255, blank=True, help_text="Empty: the marker saying the bucket is filled."
    )
    finished = models.PositiveIntegerField(default=0, help_text="Attempts that succeeded.")
    failed = models.PositiveIntegerField(
        default=0, help_text="Attempts that failed and ended their run (no retry scheduled)."
    )
    retried = models.PositiveIntegerField(
        default=0, help_text="Attempts that failed and were followed by a scheduled retry."
    )
    latency = models.JSONField(
        default=dict, blank=True, help_text="Commit-to-start sketch of first attempts."
    )

    class Meta:
        verbose_name = "attempt rollup"
        constraints = [
            models.UniqueConstraint(
                fields=["width", "start", "task_name"], name="taskkit_rollup_unique_bucket"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_name or 'filled'} {self.start:%Y-%m-%d %H:%M} /{self.width}s"
