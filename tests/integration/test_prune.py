"""`manage.py taskkit_prune`: deletes old finished runs in batches, never an unfinished one."""

import datetime
import io

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from taskkit.models import RunState, TaskAttempt, TaskRun

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(60)]

OLD = timezone.now() - datetime.timedelta(days=10)
RECENT = timezone.now() - datetime.timedelta(hours=1)


def runs(state, finished_at, n=1):
    made = TaskRun.objects.bulk_create(
        [TaskRun(task_name="p.task", state=state, finished_at=finished_at) for _ in range(n)]
    )
    return {r.pk for r in made}


def prune(*args):
    out = io.StringIO()
    call_command("taskkit_prune", *args, stdout=out)
    return out.getvalue()


def test_prune_deletes_only_old_terminal_runs_with_their_attempts():
    """Old SUCCEEDED/FAILED/DISCARDED runs go (with attempts); recent and unfinished ones stay."""
    old = set()
    for state in (RunState.SUCCEEDED, RunState.FAILED, RunState.DISCARDED):
        old |= runs(state, OLD, 3)
    TaskAttempt.objects.bulk_create(
        [TaskAttempt(run_id=pk, number=1, outcome="FAILED", finished_at=OLD) for pk in old]
    )
    kept = runs(RunState.SUCCEEDED, RECENT)
    for state in (RunState.PENDING, RunState.QUEUED, RunState.RUNNING, RunState.RETRYING):
        kept |= runs(state, OLD)  # a finished_at on a non-terminal run must not matter
    output = prune("--older-than", "7d", "--batch-size", "4")
    assert set(TaskRun.objects.values_list("pk", flat=True)) == kept
    assert not TaskAttempt.objects.exists()
    assert "deleted 4/9 runs" in output and "deleted 8/9 runs" in output
    assert "Deleted 9 run(s)" in output


def test_prune_by_state():
    """--state limits pruning to the given terminal states."""
    failed = runs(RunState.FAILED, OLD, 2)
    runs(RunState.SUCCEEDED, OLD, 2)
    prune("--older-than", "1d", "--state", "SUCCEEDED", "DISCARDED")
    assert set(TaskRun.objects.values_list("pk", flat=True)) == failed


def test_prune_refuses_non_terminal_states():
    """Asking to prune RUNNING (or any waiting state) is refused and deletes nothing."""
    runs(RunState.RUNNING, OLD)
    runs(RunState.SUCCEEDED, OLD)
    with pytest.raises(CommandError, match="RUNNING: only finished runs"):
        prune("--older-than", "1d", "--state", "SUCCEEDED", "RUNNING")
    assert TaskRun.objects.count() == 2


@pytest.mark.parametrize("age", ["7", "seven days", "0h", "1.5d"])
def test_prune_refuses_bad_ages(age):
    """A malformed --older-than is refused with the accepted forms."""
    runs(RunState.SUCCEEDED, OLD)
    with pytest.raises(CommandError, match="--older-than"):
        prune("--older-than", age)
    assert TaskRun.objects.count() == 1


def test_prune_dry_run_deletes_nothing():
    """--dry-run reports the count and deletes nothing."""
    runs(RunState.SUCCEEDED, OLD, 3)
    assert "3 run(s)" in prune("--older-than", "7d", "--dry-run")
    assert TaskRun.objects.count() == 3
