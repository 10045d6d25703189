"""Reference tables generated from taskkit's code, and a check that the docs name what exists.

Directives (used in docs/reference/):

- ``taskkit-settings``: every key of ``taskkit.core.conf.DEFAULTS`` as ``TASKKIT_<NAME>``, its
  type (the ``TaskkitSettings`` property's annotation), its default and the comment above it;
- ``taskkit-checks``: every system check id the package emits (each
  ``checks.Error/Warning(..., id="taskkit.X")`` call, in ``taskkit/checks.py`` or elsewhere),
  with its message and hint as written there;
- ``taskkit-metrics``: every metric family ``taskkit/observe/metrics.py`` builds, its type,
  labels and help text;
- ``taskkit-commands``: every management command in ``taskkit/management/commands/``, its
  ``--help`` as argparse prints it.

So a new setting, check id, metric or command appears in the docs without editing them. At build
start the extension also warns (an error under ``-W``) when the package reads a ``TASKKIT_*``
setting that ``DEFAULTS`` lacks, or when a docs page or the README names a ``TASKKIT_*`` setting
or a check id the code does not have (test, demo and bench variables count as existing).
"""

from __future__ import annotations

import ast
import inspect
import io
import os
import re
from collections.abc import Iterable
from contextlib import redirect_stdout
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "taskkit"
SETTING = re.compile(r"(?<![A-Za-z0-9_])TASKKIT_[A-Z0-9_]*[A-Z0-9](_\*)?")
CHECK_ID = re.compile(r"taskkit\.[EWCI]\d{3}")


# -- reading the code ------------------------------------------------------------------------


def settings_table() -> list[tuple[str, str, str, str]]:
    """``(name, type, default, description)`` for each key of DEFAULTS, in source order."""
    from taskkit.core import conf

    source = (PACKAGE / "core" / "conf.py").read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    keys: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if isinstance(target, ast.Name) and target.id == "DEFAULTS":
            assert isinstance(node.value, ast.Dict)  # type: ignore[attr-defined]
            for key in node.value.keys:  # type: ignore[attr-defined]
                assert isinstance(key, ast.Constant)
                keys.append((key.value, key.lineno))
    rows, previous = [], ""
    for name, lineno in keys:
        comment: list[str] = []
        i = lineno - 2
        while i >= 0 and lines[i].strip().startswith("#"):
            comment.insert(0, lines[i].strip().lstrip("#").strip())
            i -= 1
        description = " ".join(comment) or previous
        previous = description
        prop = conf.TaskkitSettings.__dict__.get(name)
        kind = ""
        if isinstance(prop, property) and prop.fget is not None:
            kind = str(inspect.get_annotations(prop.fget).get("return", ""))
        rows.append((f"TASKKIT_{name}", kind, repr(conf.DEFAULTS[name]), description))
    return rows


def _text(node: ast.expr | None) -> str:
    """A message as written: f-string placeholders shown as ``…``."""
    if node is None:
        return ""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "…" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _text(node.left) + _text(node.right)
    return "…"


def checks_table() -> list[tuple[str, str, str, str]]:
    """``(id, level, message, hint)`` for each system check message the package can emit.

    Every ``…(message, hint=…, id="taskkit.X")`` call in the package counts, wherever it is
    (``taskkit/checks.py`` holds most of them).
    """
    rows = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            ident = next((k.value for k in node.keywords if k.arg == "id"), None)
            if not (isinstance(ident, ast.Constant) and CHECK_ID.fullmatch(str(ident.value))):
                continue
            level = node.func.attr if isinstance(node.func, ast.Attribute) else "?"
            if isinstance(node.func, ast.Name):
                level = node.func.id
            hint = next((k.value for k in node.keywords if k.arg == "hint"), None)
            message = _text(node.args[0]) if node.args else ""
            rows.append((str(ident.value), level, message, _text(hint)))
    return sorted(rows, key=lambda row: (row[0][8] != "E", row[0]))


def metrics_table() -> list[tuple[str, str, str, str]]:
    """``(name, type, labels, help)`` for each metric family taskkit/observe/metrics.py builds."""
    tree = ast.parse((PACKAGE / "observe" / "metrics.py").read_text())
    rows = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        if node.func.id not in ("GaugeMetricFamily", "CounterMetricFamily") or not node.args:
            continue
        name = _text(node.args[0])
        kind = "counter" if node.func.id.startswith("Counter") else "gauge"
        if kind == "counter":
            name += "_total"
        labels = next((k.value for k in node.keywords if k.arg == "labels"), None)
        label_names = (
            ", ".join(_text(e) for e in labels.elts) if isinstance(labels, ast.List) else ""
        )
        rows.append((name, kind, label_names, _text(node.args[1]) if len(node.args) > 1 else ""))
    return rows


def commands() -> list[tuple[str, str]]:
    """``(name, --help text)`` for each of taskkit's management commands."""
    from django.core.management import load_command_class

    found = []
    for path in sorted((PACKAGE / "management" / "commands").glob("*.py")):
        if path.name.startswith("_"):
            continue
        command = load_command_class("taskkit", path.stem)
        parser = command.create_parser("manage.py", path.stem)
        out = io.StringIO()
        with redirect_stdout(out):
            parser.print_help()
        found.append((path.stem, out.getvalue()))
    return found


# -- docutils --------------------------------------------------------------------------------


def _inline(text: str) -> list[nodes.Node]:
    """Text with ``code`` / `code` spans as literals."""
    parts: list[nodes.Node] = []
    tokens = re.split(r"(``.+?``|`.+?`)", text)
    for piece in tokens:
        if piece.startswith("``") and piece.endswith("``") and len(piece) > 4:
            parts.append(nodes.literal(piece[2:-2], piece[2:-2]))
        elif piece.startswith("`") and piece.endswith("`") and len(piece) > 2:
            parts.append(nodes.literal(piece[1:-1], piece[1:-1]))
        elif piece:
            parts.append(nodes.Text(piece))
    return parts


def _table(header: Iterable[str], rows: Iterable[Iterable[nodes.Node | str]], widths: list[int]):
    table = nodes.table()
    group = nodes.tgroup(cols=len(widths))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)

    def row_of(cells: Iterable[nodes.Node | str]) -> nodes.row:
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            if isinstance(cell, str):
                entry += nodes.paragraph("", "", *_inline(cell))
            else:
                entry += cell
            row += entry
        return row

    head = nodes.thead()
    head += row_of(header)
    group += head
    body = nodes.tbody()
    for cells in rows:
        body += row_of(cells)
    group += body
    return table


def _code(text: str) -> nodes.paragraph:
    return nodes.paragraph("", "", nodes.literal(text, text))


class SettingsDirective(Directive):
    def run(self) -> list[nodes.Node]:
        rows = [
            (_code(name), _code(kind), _code(default), text)
            for name, kind, default, text in settings_table()
        ]
        return [_table(["setting", "type", "default", "meaning"], rows, [28, 10, 14, 48])]


class ChecksDirective(Directive):
    def run(self) -> list[nodes.Node]:
        rows = [
            (_code(ident), level, message, hint) for ident, level, message, hint in checks_table()
        ]
        return [_table(["id", "level", "message", "hint"], rows, [12, 8, 45, 35])]


class MetricsDirective(Directive):
    def run(self) -> list[nodes.Node]:
        rows = [(_code(name), kind, labels, text) for name, kind, labels, text in metrics_table()]
        return [_table(["metric", "type", "labels", "meaning"], rows, [30, 8, 14, 48])]


class CommandsDirective(Directive):
    def run(self) -> list[nodes.Node]:
        out: list[nodes.Node] = []
        for name, help_text in commands():
            section = nodes.section(ids=[f"command-{name.replace('_', '-')}"])
            section += nodes.title(name, name)
            section += nodes.literal_block(help_text, help_text, language="text")
            out.append(section)
        return out


# -- the consistency check -------------------------------------------------------------------


def _names(paths: Iterable[Path], pattern: re.Pattern[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in paths:
        for match in pattern.finditer(path.read_text(errors="replace")):
            found.setdefault(match.group(0), set()).add(str(path.relative_to(ROOT)))
    return found


def check_names(app: Sphinx) -> None:
    from taskkit.core.conf import DEFAULTS

    known = {f"TASKKIT_{name}" for name in DEFAULTS}

    def covered(name: str) -> bool:
        if name.endswith("_*"):
            return any(k.startswith(name[:-1]) for k in known)
        return name in known

    package_files = list(PACKAGE.rglob("*.py"))
    for name, where in sorted(_names(package_files, SETTING).items()):
        if not covered(name):
            logger.warning(
                "%s is read in %s but is not in taskkit.core.conf.DEFAULTS, so the settings "
                "reference does not list it: add it there with a comment",
                name,
                ", ".join(sorted(where)),
            )
    other_code = [
        p
        for folder in ("tests", "bench", "demo", "devsupport", ".ci")
        for p in (ROOT / folder).rglob("*.py")
    ] + [ROOT / "Makefile"]
    outside = set(_names(other_code, SETTING))
    ids = {row[0] for row in checks_table()}
    pages = [*Path(app.srcdir).rglob("*.md"), ROOT / "README.md"]
    pages = [p for p in pages if "_build" not in p.parts]
    for name, where in sorted(_names(pages, SETTING).items()):
        if not covered(name) and name not in outside:
            logger.warning(
                "%s is named in %s but taskkit has no such setting", name, ", ".join(sorted(where))
            )
    for ident, where in sorted(_names(pages, CHECK_ID).items()):
        if ident not in ids:
            logger.warning(
                "%s is named in %s but the package emits no such check id",
                ident,
                ", ".join(sorted(where)),
            )


def literal_diagrams(app, what, name, obj, options, lines: list[str]) -> None:
    """A module docstring's indented block (an exception tree, a sketch) shows as written."""
    if what != "module":
        return
    i = 1
    while i < len(lines):
        indented = lines[i].startswith((" ", "\t")) and lines[i].strip()
        after_text = not lines[i - 1].strip() and (i < 2 or not lines[i - 2].startswith(" "))
        if indented and after_text and not (i >= 2 and lines[i - 2].rstrip().endswith("::")):
            lines[i - 1 : i] = ["", "::", ""]
            i += 2
        i += 1


def setup(app: Sphinx) -> dict[str, object]:
    os.environ.setdefault("COLUMNS", "100")
    app.add_directive("taskkit-settings", SettingsDirective)
    app.add_directive("taskkit-checks", ChecksDirective)
    app.add_directive("taskkit-metrics", MetricsDirective)
    app.add_directive("taskkit-commands", CommandsDirective)
    app.connect("builder-inited", check_names)
    app.connect("autodoc-process-docstring", literal_diagrams)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
