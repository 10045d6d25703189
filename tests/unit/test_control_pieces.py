"""Pure pieces of durable control: the verdict for a run whose cancelling was requested, the
cached cancel check of ``current_run()``, the cancel reason, the run page's verb table."""

from __future__ import annotations

import uuid

import pytest

from taskkit.core import context, policy
from taskkit.core.control import _check_name, _run_id, cancel_reason
from taskkit.core.exceptions import RunNotFound

pytestmark = pytest.mark.timeout(30)

POLICY = policy.make_policy(stop=5, wait=0)


@pytest.mark.parametrize(
    ("kind", "cancel_requested", "permanent", "attempt", "expected"),
    [
        ("FAILED", False, False, 1, "RETRYING"),
        ("FAILED", True, False, 1, "CANCELLED"),  # never retried once cancelling is asked for
        ("FAILED", True, False, 5, "CANCELLED"),  # not FAILED either: the operator's word wins
        ("LOST", True, False, 1, "CANCELLED"),  # its worker died meanwhile
        ("TIMED_OUT", True, False, 1, "CANCELLED"),
        ("FAILED", True, True, 1, "CANCELLED"),
        ("FAILED", False, True, 1, "FAILED"),
        ("FAILED", False, False, 5, "FAILED"),
    ],
)
def test_a_cancel_request_means_no_retry(kind, cancel_requested, permanent, attempt, expected):
    """The verdict after a failed attempt, with and without a cancel request."""
    verdict = policy.after_failure(
        POLICY,
        policy.FailedAttempt(
            kind=kind,
            exception=RuntimeError("x"),
            attempt=attempt,
            elapsed=1.0,
            permanent=permanent,
            cancel_requested=cancel_requested,
        ),
    )
    assert verdict.state == expected
    assert (verdict.delay is not None) == (expected == "RETRYING")


def test_cancel_requested_reads_at_most_once_a_second(monkeypatch):
    """The ledger is read once per interval; a request once seen is kept without reading."""
    from taskkit.core import ledger

    answers = iter([False, True])
    reads: list[object] = []
    clock = [100.0]

    def read(run_id):
        reads.append(run_id)
        return next(answers)

    monkeypatch.setattr(ledger, "cancel_requested", read)
    monkeypatch.setattr(context.time, "monotonic", lambda: clock[0])
    run = context.RunContext(uuid.uuid4(), "t", 1, None, "celery")
    assert run.cancel_requested is False
    clock[0] += 0.5
    assert run.cancel_requested is False and len(reads) == 1  # cached
    clock[0] += 0.6
    assert run.cancel_requested is True and len(reads) == 2
    clock[0] += 10
    assert run.cancel_requested is True and len(reads) == 2  # never withdrawn


@pytest.mark.parametrize(
    ("by", "expected"),
    [(None, "cancelled"), ("", "cancelled"), ("alice", "cancelled by alice")],
)
def test_cancel_reason(by, expected):
    assert cancel_reason(by) == expected


@pytest.mark.parametrize("bad", ["", "nope", 12, None])
def test_a_bad_run_id_is_refused_with_the_fix(bad):
    with pytest.raises(RunNotFound, match="not a run id: pass the run's UUID"):
        _run_id(bad)


@pytest.mark.parametrize(("kind", "name"), [("task", ""), ("queue", "   "), ("task", None)])
def test_a_pause_needs_a_name(kind, name):
    with pytest.raises(ValueError, match=f"pause_{kind}\\(\\) needs the {kind}'s name"):
        _check_name(kind, name)


def test_names_are_stripped():
    assert _check_name("queue", " emails ") == "emails"


def test_every_run_page_verb_has_a_permission_the_admin_knows():
    """Each verb of the run page names a has_<perm>_permission of the run admin and its states
    are run states."""
    from taskkit.admin.options import TaskRunAdmin
    from taskkit.admin.run_page import VERBS
    from taskkit.models import RunState

    assert list(VERBS) == ["retry", "discard", "requeue", "cancel", "pause", "resume"]
    for verb in VERBS.values():
        assert callable(getattr(TaskRunAdmin, f"has_{verb.permission}_permission"))
        assert set(verb.states) <= set(RunState.values)
