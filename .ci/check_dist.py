"""Check the built distribution's contents: ``python .ci/check_dist.py dist`` (``make dist``).

The wheel must hold the ``taskkit`` package and its metadata only: no tests, demo, bench or
development support (``devsupport``, the embedded Redis); it must carry the license, the typing
marker, the admin templates and the migrations, and metadata with the SPDX license expression
and only the package's real optional features as extras. The sdist must carry the license, the
changelog and the docs the README links to. Prints the wheel's file list; exits 1 naming every
problem found.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

NAME = "django_taskkit"
EXTRAS = {"postgres", "json-logs", "metrics"}
WHEEL_MUST = [
    "taskkit/__init__.py",
    "taskkit/py.typed",
    "taskkit/migrations/0001_initial.py",
    "taskkit/management/commands/taskkit_relay.py",
]
SDIST_MUST = ["LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "docs/index.md"]


def check_wheel(path: Path, problems: list[str]) -> list[str]:
    with zipfile.ZipFile(path) as wheel:
        names = sorted(wheel.namelist())
        info = f"{path.name.split('-')[0]}-{path.name.split('-')[1]}.dist-info/"
        metadata = Parser().parsestr(wheel.read(info + "METADATA").decode())
    for name in names:
        if not (name.startswith("taskkit/") or name.startswith(info)):
            problems.append(f"wheel: {name} is outside taskkit/ and the metadata")
        if "__pycache__" in name or name.endswith(".pyc"):
            problems.append(f"wheel: compiled file {name}")
    for name in [*WHEEL_MUST, info + "licenses/LICENSE"]:
        if name not in names:
            problems.append(f"wheel: {name} is missing")
    if not any(n.startswith("taskkit/templates/admin/") for n in names):
        problems.append("wheel: the admin templates (taskkit/templates/admin/) are missing")
    if metadata["Name"] != "django-taskkit":
        problems.append(f"metadata: Name is {metadata['Name']!r}, expected 'django-taskkit'")
    if metadata["License-Expression"] != "MIT":
        problems.append(f"metadata: License-Expression is {metadata['License-Expression']!r}")
    extras = set(metadata.get_all("Provides-Extra") or [])
    if extras != EXTRAS:
        problems.append(f"metadata: extras {sorted(extras)}, expected {sorted(EXTRAS)}")
    if metadata.get("Description-Content-Type") != "text/markdown":
        problems.append("metadata: the README is not declared as text/markdown")
    return names


def check_sdist(path: Path, problems: list[str]) -> None:
    with tarfile.open(path) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for name in SDIST_MUST:
        if name not in names:
            problems.append(f"sdist: {name} is missing")
    for name in sorted(names):
        if name.startswith("docs/_build/"):
            problems.append(f"sdist: built docs {name}")
            break


def main(directory: str) -> int:
    dist = Path(directory)
    wheels = sorted(dist.glob(f"{NAME}-*.whl"))
    sdists = sorted(dist.glob(f"{NAME}-*.tar.gz"))
    problems: list[str] = []
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"expected one wheel and one sdist in {dist}/, found {wheels + sdists}")
        return 1
    names = check_wheel(wheels[0], problems)
    check_sdist(sdists[0], problems)
    print(f"{wheels[0].name}: {len(names)} files")
    for name in names:
        print(f"  {name}")
    if problems:
        print("\nDISTRIBUTION CHECK FAILED:\n  " + "\n  ".join(problems))
        return 1
    print(f"OK: {wheels[0].name} holds taskkit/ only; {sdists[0].name} has the license and docs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "dist"))
