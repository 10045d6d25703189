"""taskkit.core.policy.after_failure: what follows a failed attempt, as one table.

Every row is (kind of failure, exception, attempt, LOST attempts before, on_missing, permanent)
→ (the run's next state, the retry delay). The policy under test: 3 attempts, retry only
``Transient`` (and whatever a lost worker or a missing object forces), a fixed 2 s wait, at most
3 lost workers.
"""

from __future__ import annotations

import pytest
from celery.exceptions import TimeLimitExceeded
from tenacity import retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_fixed

from taskkit.core.policy import FailedAttempt, Verdict, after_failure, make_policy


class Transient(Exception):
    """A failure worth retrying."""


class Fatal(Exception):
    """A failure the task's retry predicate refuses."""


POLICY = make_policy(
    stop=stop_after_attempt(3), wait=wait_fixed(2), retry=retry_if_exception_type(Transient)
)
TIMED = make_policy(
    stop=stop_after_attempt(3),
    wait=wait_fixed(2),
    retry=retry_if_exception_type((Transient, TimeLimitExceeded)),
)

T, F = Transient("boom"), Fatal("no")

TABLE = [
    # id, kind, exception, attempt, lost_before, on_missing, permanent, -> state, delay
    ("raised, retryable", "FAILED", T, 1, 0, "fail", False, "RETRYING", 2.0),
    ("raised, retryable, second", "FAILED", T, 2, 0, "fail", False, "RETRYING", 2.0),
    ("raised, retryable, last attempt", "FAILED", T, 3, 0, "fail", False, "FAILED", None),
    ("raised, not retryable", "FAILED", F, 1, 0, "fail", False, "FAILED", None),
    ("permanent (undecodable call)", "FAILED", T, 1, 0, "fail", True, "FAILED", None),
    ("missing, on_missing=fail", "MISSING", F, 1, 0, "fail", False, "FAILED", None),
    ("missing, on_missing=discard", "MISSING", F, 1, 0, "discard", False, "DISCARDED", None),
    ("missing, on_missing=retry", "MISSING", F, 1, 0, "retry", False, "RETRYING", 2.0),
    ("missing, on_missing=retry, last", "MISSING", F, 3, 0, "retry", False, "FAILED", None),
    ("lost worker, first", "LOST", F, 1, 0, "fail", False, "RETRYING", 2.0),
    ("lost worker, within losses", "LOST", F, 2, 1, "fail", False, "RETRYING", 2.0),
    ("lost worker, stop reached", "LOST", F, 3, 1, "fail", False, "FAILED", None),
    ("lost worker, too many losses", "LOST", F, 1, 2, "fail", False, "FAILED", None),
    ("lost worker, permanent wins", "LOST", F, 1, 0, "fail", True, "FAILED", None),
    (
        "timed out, not retryable",
        "TIMED_OUT",
        TimeLimitExceeded(5),
        1,
        0,
        "fail",
        False,
        "FAILED",
        None,
    ),
]


@pytest.mark.parametrize(
    ("kind", "exception", "attempt", "lost_before", "on_missing", "permanent", "state", "delay"),
    [pytest.param(*row[1:], id=row[0]) for row in TABLE],
)
def test_after_failure(
    kind: str,
    exception: BaseException,
    attempt: int,
    lost_before: int,
    on_missing: str,
    permanent: bool,
    state: str,
    delay: float | None,
) -> None:
    verdict = after_failure(
        POLICY,
        FailedAttempt(
            kind=kind,
            exception=exception,
            attempt=attempt,
            elapsed=0.0,
            on_missing=on_missing,
            lost_before=lost_before,
            max_worker_losses=3,
            permanent=permanent,
        ),
    )
    assert (verdict.state, verdict.delay) == (state, delay)
    assert verdict.reason  # always says why
    assert (verdict.retry is not None) == (state == "RETRYING")


def test_a_hard_time_limit_asks_the_tasks_retry_predicate() -> None:
    timed_out = FailedAttempt(
        kind="TIMED_OUT", exception=TimeLimitExceeded(5), attempt=1, elapsed=9
    )
    assert after_failure(TIMED, timed_out).state == "RETRYING"
    assert after_failure(POLICY, timed_out).state == "FAILED"


def test_the_elapsed_time_reaches_a_stop_after_delay() -> None:
    policy = make_policy(stop=stop_after_delay(60), wait=wait_fixed(1))
    early = FailedAttempt(kind="FAILED", exception=T, attempt=1, elapsed=10)
    late = FailedAttempt(kind="FAILED", exception=T, attempt=1, elapsed=60)
    assert after_failure(policy, early) == Verdict("RETRYING", "attempt 2 in 1s", 1.0)
    verdict = after_failure(policy, late)
    assert verdict.state == "FAILED" and "gave up after attempt 1" in verdict.reason


def test_too_many_lost_workers_say_how_many() -> None:
    lost = FailedAttempt(kind="LOST", exception=F, attempt=1, elapsed=0, lost_before=4)
    assert after_failure(POLICY, lost).reason == (
        "its worker was lost 5 times (TASKKIT_MAX_WORKER_LOSSES = 5)"
    )
