"""The pure pieces of the relay's handling of unregistered tasks and of SQLite: the per-sweep task
lookup, the TaskNotRegistered reason, and check W011."""

from types import SimpleNamespace

import pytest

from taskkit import checks
from taskkit.core.exceptions import TaskkitError, TaskNotRegistered
from taskkit.relay.sweep import TaskLookup

pytestmark = pytest.mark.timeout(30)


class FakeApp:
    """Just what ``TaskLookup`` uses of a Celery app: ``tasks`` and ``loader``."""

    def __init__(self, tasks, late=None):
        self.tasks = dict(tasks)
        self.late = late or {}
        self.imports = 0
        self.loader = SimpleNamespace(import_default_modules=self.import_default_modules)

    def import_default_modules(self):
        self.imports += 1
        self.tasks.update(self.late)


SPEC = SimpleNamespace(name="a spec")  # what a ReliableTask hands the relay
RELIABLE = SimpleNamespace(is_reliable=True, spec=SPEC)
PLAIN = SimpleNamespace()


def test_known_names_never_import_the_task_modules():
    app = FakeApp({"a": RELIABLE})
    lookup = TaskLookup(app)
    assert lookup("a") is SPEC and lookup("a") is SPEC
    assert app.imports == 0


def test_unknown_names_import_the_task_modules_once_per_lookup():
    app = FakeApp({}, late={"late": RELIABLE})
    lookup = TaskLookup(app)
    found = [lookup(n) for n in ("gone", "other", "gone", "late", "other")]
    assert found == [None, None, None, SPEC, None]  # "late" was registered by the import
    assert app.imports == 1


def test_a_task_imported_by_the_one_import_is_found():
    app = FakeApp({}, late={"late": RELIABLE})
    lookup = TaskLookup(app)
    assert lookup("late") is SPEC
    assert lookup("gone") is None
    assert app.imports == 1


def test_a_plain_celery_task_of_that_name_is_not_a_reliable_task():
    app = FakeApp({"plain": PLAIN})
    assert TaskLookup(app)("plain") is None


def test_the_reason_names_the_task_and_the_fix():
    error = TaskNotRegistered.for_task("app.tasks.old_name", 3600)
    message = str(error)
    assert message.startswith("task `app.tasks.old_name` is not registered")
    assert "3600s" in message and "TASKKIT_UNKNOWN_TASK_GRACE_SECONDS" in message
    assert "alias" in message
    assert isinstance(error, TaskkitError) and isinstance(error, LookupError)


@pytest.mark.parametrize("mode", ["IMMEDIATE", "immediate", "EXCLUSIVE"])
def test_w011_is_quiet_when_sqlite_begins_transactions_with_the_write_lock(mode):
    assert checks.sqlite_transaction_messages("sqlite", {"transaction_mode": mode}) == []


def test_w011_is_quiet_on_other_databases():
    assert checks.sqlite_transaction_messages("postgresql", {}) == []


@pytest.mark.parametrize("options", [{}, {"transaction_mode": "DEFERRED"}, {"timeout": 20}])
def test_w011_tells_sqlite_users_what_to_set(options):
    (message,) = checks.sqlite_transaction_messages("sqlite", options, "ledger")
    assert message.id == "taskkit.W011"
    assert "DATABASES['ledger']" in message.msg and "database is locked" in message.msg
    assert '"transaction_mode": "IMMEDIATE"' in message.hint
