"""The package tree shows the architecture, and its rules hold: read from the source with ``ast``.

- ``taskkit.core`` (the ledger, its SQL, policy, serialization, ...) imports nothing above it;
- ``taskkit.producer`` and ``taskkit.worker`` never import each other nor ``taskkit.task`` (they
  receive a ``TaskSpec``); the relay, the admin and observe stand on what is below them;
- only ``taskkit.core.ledger`` writes run state (``TaskRun`` / ``TaskAttempt`` rows);
- ``__init__`` modules only re-export, with ``__all__``;
- the documented import paths (re-exports) give the very objects of their new homes.

Every import counts, wherever it is (module level, inside a function, under ``TYPE_CHECKING``).
"""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parents[2] / "taskkit"

#: What each layer may import of taskkit (itself included). ``taskkit.models`` is Django's fixed
#: place for the models and imports nothing of taskkit; everything else at the top level
#: (``task``, ``testing``, ``checks``, ``apps``, ``management``, the re-exports) stands above all.
ALLOWED: dict[str, set[str]] = {
    "core": {"core", "models"},
    "producer": {"core", "models", "producer"},
    "worker": {"core", "models", "worker"},
    "relay": {"core", "models", "producer", "worker", "relay"},
    "admin": {"core", "models", "producer", "admin"},
    "observe": {"core", "models", "observe"},
    "models": set(),
}

#: Models whose rows are run state.
RUN_MODELS = {"TaskRun", "TaskAttempt", "FailedRun"}
#: Methods that write rows (querysets, managers and instances).
WRITES = {
    "update",
    "delete",
    "save",
    "bulk_create",
    "bulk_update",
    "create",
    "get_or_create",
    "update_or_create",
}
#: SQL that writes, at the start of a string (docstrings that mention it do not count); taskkit
#: writes its SQL keywords in capitals, so lower-case SQL would slip through.
SQL_WRITE = re.compile(r"^\s*(UPDATE\s|INSERT\s+INTO\s|DELETE\s+FROM\s|WITH\s+\w+\s+AS\s*\()")
#: Modules allowed to write run state: the ledger, and the SQL helpers it calls.
WRITERS = {"taskkit.core.ledger", "taskkit.core.sql"}
#: Writers of run state outside the ledger that remain. Empty: every write moved into
#: ``taskkit.core.ledger``. Add "module: what it writes" here only with a reason.
KNOWN_WRITERS: dict[str, str] = {}


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. "taskkit.core.ledger"
    path: Path
    tree: ast.Module

    @property
    def package(self) -> str:
        return self.name if self.path.name == "__init__.py" else self.name.rsplit(".", 1)[0]

    @property
    def layer(self) -> str | None:
        """The part below ``taskkit``: "core", "producer", ..., "models", or the top level."""
        parts = self.name.split(".")
        return parts[1] if len(parts) > 1 else None


def parse(path: Path, name: str | None = None) -> Module:
    if name is None:
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
    return Module(name, path, ast.parse(path.read_text(), str(path)))


def modules() -> list[Module]:
    return [
        parse(path) for path in sorted(ROOT.rglob("*.py")) if "migrations" not in path.parts
    ]


def imports(module: Module) -> list[tuple[int, str]]:
    """Every taskkit module (or package) ``module`` imports, with the line; relative ones
    resolved; ``from package import name`` counts as ``package.name``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "taskkit"]


def layer_of(dotted: str) -> str | None:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else None


def upward_imports(module: Module) -> list[str]:
    """The imports ``module`` may not make, as "line: target"."""
    allowed = ALLOWED.get(module.layer or "")
    if allowed is None:
        return []  # the top level stands above every layer
    return [
        f"{module.name}:{line} imports {target}"
        for line, target in imports(module)
        if layer_of(target) not in allowed
    ]


def _root_name(node: ast.AST) -> str | None:
    """The name a chain like ``TaskRun.objects.using(db).filter(...)`` starts from."""
    while True:
        if isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Attribute | ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Name):
            return node.id
        else:
            return None


def _run_state_names(scope: ast.AST) -> set[str]:
    """Names in ``scope`` that hold run rows: bound from a chain rooted at a run model (or at
    such a name), iterated from one, or parameters annotated with a run model."""
    held: set[str] = set()
    if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
        for arg in [*scope.args.args, *scope.args.kwonlyargs, *scope.args.posonlyargs]:
            if arg.annotation is not None and RUN_MODELS & {
                n.id for n in ast.walk(arg.annotation) if isinstance(n, ast.Name)
            }:
                held.add(arg.arg)
    changed = True
    while changed:
        changed = False
        for node in ast.walk(scope):
            value, targets = None, []
            if isinstance(node, ast.Assign):
                value, targets = node.value, node.targets
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                value, targets = node.value, [node.target]
            elif isinstance(node, ast.For | ast.comprehension):
                value, targets = node.iter, [node.target]
            if value is None:
                continue
            root = _root_name(value)
            if root in RUN_MODELS or root in held:
                for target in targets:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name) and name.id not in held:
                            held.add(name.id)
                            changed = True
    return held


def run_state_writes(module: Module) -> list[str]:
    """Writes of run rows in ``module``, as "module:line what"."""
    found: list[str] = []
    scopes = [module.tree] + [
        n for n in ast.walk(module.tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    for scope in scopes:
        held = _run_state_names(scope) | RUN_MODELS
        for node in ast.walk(scope):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in WRITES
                and _root_name(node.func.value) in held
            ):
                found.append(f"{module.name}:{node.lineno} .{node.func.attr}()")
    for node in ast.walk(module.tree):
        text = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                text = first.value
        if text is not None and SQL_WRITE.match(text):
            found.append(f"{module.name}:{node.lineno} SQL {text.strip()[:30]!r}")
    return sorted(set(found))


# -- the rules, on taskkit's own source -----------------------------------------------------------


def test_the_tree_has_the_layers():
    """The architecture reads from the folder names."""
    for layer in ("core", "producer", "worker", "relay", "admin", "observe"):
        assert (ROOT / layer / "__init__.py").is_file(), layer
    assert (ROOT / "core" / "ledger.py").is_file()
    assert not (ROOT / "embedded_redis.py").exists(), "test support stays out of the wheel"


def test_every_import_arrow_points_down():
    """core imports nothing above it; producer and worker never import each other nor task.py."""
    violations = [v for module in modules() for v in upward_imports(module)]
    assert violations == []


def test_only_the_ledger_writes_run_state():
    """No TaskRun / TaskAttempt write (ORM or SQL) outside taskkit.core.ledger."""
    writes = [
        write
        for module in modules()
        if module.name not in WRITERS
        for write in run_state_writes(module)
        if write.split(":")[0] not in KNOWN_WRITERS
    ]
    assert writes == []


def test_the_ledger_is_found_writing():
    """The writer detector sees the ledger's writes (so an empty list above means something)."""
    ledger = parse(ROOT / "core" / "ledger.py")
    writes = run_state_writes(ledger)
    assert any(".update()" in w for w in writes)
    assert any(".bulk_create()" in w for w in writes)
    assert any(".save()" in w for w in writes)
    assert any("SQL 'UPDATE" in w for w in writes)


def test_init_modules_only_re_export():
    """A package's ``__init__`` has a docstring, imports and ``__all__``, nothing else."""
    for path in sorted(ROOT.rglob("__init__.py")):
        if "migrations" in path.parts or "management" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{path}: say what this side of the queue does"
        names = set()
        for node in tree.body[1:]:
            if isinstance(node, ast.ImportFrom | ast.Import):
                continue
            target = node.target if isinstance(node, ast.AnnAssign) else None
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
            assert isinstance(target, ast.Name) and target.id == "__all__", (
                f"{path}:{node.lineno}: an __init__ only re-exports"
            )
            names.add(target.id)
        assert names == {"__all__"}, f"{path}: no __all__"


# -- the detectors catch what they are for ----------------------------------------------------


def _fake(tmp_path: Path, name: str, source: str) -> Module:
    path = tmp_path / (name.rsplit(".", 1)[1] + ".py")
    path.write_text(source)
    return parse(path, name)


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("taskkit.core.ledger", "from ..producer import publisher\n"),
        ("taskkit.core.ledger", "def f():\n    from taskkit.worker import execution\n"),
        ("taskkit.core.policy", "from .. import task\n"),
        ("taskkit.core.sql", "from ..observe import stats\n"),
        ("taskkit.producer.dispatch", "from ..worker.execution import execute\n"),
        (
            "taskkit.producer.publisher",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..task import R\n",
        ),
        ("taskkit.worker.execution", "from ..producer import publisher\n"),
        ("taskkit.worker.request", "import taskkit.task\n"),
        ("taskkit.relay.sweep", "from ..admin import views\n"),
    ],
)
def test_an_upward_import_is_caught(tmp_path, name, source):
    """Each kind of upward import added to a module is reported."""
    assert upward_imports(_fake(tmp_path, name, source)) != []


@pytest.mark.parametrize(
    "source",
    [
        "TaskRun.objects.using(db).filter(pk=1).update(state='FAILED')\n",
        "def f(db):\n    runs = TaskRun.objects.using(db).filter(pk=1)\n    runs.delete()\n",
        "def f(run: TaskRun):\n    run.state = 'FAILED'\n    run.save()\n",
        "def f():\n    for run in TaskRun.objects.all():\n        run.save()\n",
        "def f():\n    run = TaskRun(id=1)\n    run.save(force_insert=True)\n",
        "TaskAttempt.objects.bulk_create([])\n",
        "def f(c, t):\n    c.execute(f'UPDATE {t} SET state = %s', ['FAILED'])\n",
    ],
)
def test_a_write_of_run_state_is_caught(tmp_path, source):
    """Each kind of write of run state outside the ledger is reported."""
    assert run_state_writes(_fake(tmp_path, "taskkit.relay.sweep", source)) != []


def test_other_writes_are_not_run_state(tmp_path):
    """Heartbeats, admin log entries and dicts are not run state."""
    source = (
        "def f(db, counts):\n"
        "    RelayHeartbeat.objects.using(db).filter(pk=1).update(sweeps=1)\n"
        "    LogEntry.objects.bulk_create([])\n"
        "    counts.update({})\n"
    )
    assert run_state_writes(_fake(tmp_path, "taskkit.relay.sweep", source)) == []


# -- the documented paths keep working ----------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "names"),
    [
        ("taskkit.transport", "taskkit.worker.transport", ["Transport", "Channel"]),
        ("taskkit.views", "taskkit.observe.views", ["metrics"]),
        ("taskkit.middleware", "taskkit.observe.middleware", ["RequestIdMiddleware"]),
        ("taskkit.log_context", "taskkit.observe.log_context", ["RunContextFilter"]),
        ("taskkit.exceptions", "taskkit.core.exceptions", ["TaskkitError", "TaskNotRegistered"]),
        ("taskkit.signals", "taskkit.core.signals", ["run_failed", "send"]),
        ("taskkit.serialization", "taskkit.core.serialization", ["MAX_DEPTH", "encode_call"]),
    ],
)
def test_a_documented_path_gives_the_moved_objects(old, new, names):
    """A re-export module hands out the very objects of the module that moved."""
    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    for name in names:
        assert getattr(old_module, name) is getattr(new_module, name)
    assert set(old_module.__all__) <= set(dir(new_module))


def test_the_class_paths_celery_and_the_ledger_record_resolve():
    """The transport path projects configure, the task's Request path, and the recorded class
    paths of exceptions (``TaskRun.error_type``) name importable objects."""
    from kombu.utils.imports import symbol_by_name

    from taskkit.core.exceptions import TaskNotRegistered
    from taskkit.task import ReliableTask
    from taskkit.worker.request import ReliableRequest
    from taskkit.worker.transport import Transport

    assert symbol_by_name("taskkit.transport:Transport") is Transport
    assert symbol_by_name(ReliableTask.Request) is ReliableRequest
    recorded = f"{TaskNotRegistered.__module__}.{TaskNotRegistered.__qualname__}"
    assert recorded == "taskkit.exceptions.TaskNotRegistered"
    assert symbol_by_name(recorded) is TaskNotRegistered
