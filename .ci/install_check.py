"""Follow the README's Install section to the letter in a fresh virtualenv and run one task.

What it does (each step bounded in time; any failure prints what went wrong and exits 1):

1. Copies this checkout's files (``git ls-files``: tracked and untracked-but-not-ignored) to a
   scratch directory, and creates a fresh virtualenv there with ``$PYTHON`` (default python3).
2. Builds the wheel from the copy (``pip wheel --no-deps``), then reads the README's ``## Install``
   section and runs its fenced blocks in order, with the fresh virtualenv first on PATH and
   nothing else installed:
   - a ``sh`` block: one command per line; a block whose first line is ``# in a checkout of this
     repository`` runs in the copied checkout, the others in a scratch project directory; ``cd``
     moves; a line commented ``long-running`` is a process to keep running (started at step 4);
     ``pip install django-taskkit`` (with or without extras, quoted or not) installs the wheel
     just built, with the same extras, so the check tests this checkout, not the index;
   - a ``python`` block whose first line is ``# <path>`` is that file's content; ``# <path> —
     append`` appends to it instead.
3. Adds one app with one ``@reliable_task`` (``startapp shop``; not part of the Install text), and
   runs ``manage.py check --fail-level WARNING``: the Install settings must pass every check.
4. Starts the long-running commands (``celery -A proj worker``, ``taskkit_relay``) in their own
   process groups, waits for the worker to be ready and the relay's first heartbeat, pushes an
   entry that is not JSON onto the queue, dispatches the task and waits for the run to reach
   SUCCEEDED in the ledger. The worker must still be alive and must have logged the dropped entry.
5. Stops everything (SIGTERM, then SIGKILL), empties its Redis database and deletes the scratch
   directory (kept with KEEP=1).

The broker is the machine's Redis, database 14 (``INSTALL_CHECK_REDIS_URL``), given to the
project through Celery's own ``CELERY_BROKER_URL`` environment variable, which overrides the
setting: the README's text runs unchanged. The database is the project's SQLite file. Network:
only the package index, for pip.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
REDIS_URL = os.environ.get("INSTALL_CHECK_REDIS_URL", "redis://127.0.0.1:6379/14")
PYTHON = os.environ.get("PYTHON", "python3")
PIP_SECONDS = 900
STEP_SECONDS = 180
READY_SECONDS = 90
RUN_SECONDS = 90
CHECKOUT_MARK = "# in a checkout of this repository"
DIST_NAME = "django-taskkit"
#: ``pip install django-taskkit`` / ``pip install 'django-taskkit[metrics]'`` (group 2: extras).
PIP_INSTALL_DIST = re.compile(r"pip install (['\"]?)" + re.escape(DIST_NAME) + r"(\[[\w,-]*\])?\1")

started = time.monotonic()


class Failed(Exception):
    pass


def say(message: str) -> None:
    print(f"[install-check {time.monotonic() - started:6.1f}s] {message}", flush=True)


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


# -- the README ------------------------------------------------------------------------------


def install_section(readme: str) -> str:
    match = re.search(r"^## Install\n(.*?)^## ", readme, flags=re.S | re.M)
    if not match:
        raise Failed("README.md has no '## Install' section")
    return match.group(1)


def blocks(section: str) -> list[tuple[str, str]]:
    """``(language, text)`` of each fenced block, in order."""
    found = re.findall(r"^```(\w*)\n(.*?)^```", section, flags=re.S | re.M)
    if not found:
        raise Failed("the Install section has no code blocks")
    return [(lang or "text", text) for lang, text in found]


# -- processes -------------------------------------------------------------------------------


def environment(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_"))}
    for name in ("PYTHONPATH", "PYTHONHOME", "DATABASE_URL", "REDIS_URL", "VIRTUAL_ENV"):
        env.pop(name, None)
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env["CELERY_BROKER_URL"] = REDIS_URL
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(
    command: str, cwd: Path, env: dict[str, str], timeout: float = STEP_SECONDS, label: str = ""
) -> str:
    say(f"$ {label or command}   (in {cwd.name}/)")
    try:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        raise Failed(f"{command!r} did not finish within {timeout:.0f} s\n{tail(out)}") from None
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise Failed(f"{command!r} exited with {done.returncode}:\n{tail(output)}")
    return output


class Background:
    """A long-running command in its own process group, its output in a log file."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str], log: Path) -> None:
        say(f"$ {command} &   (in {cwd.name}/, log {log.name})")
        self.command, self.log_path = command, log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"{self.command!r} ignored SIGTERM for {timeout:.0f} s: SIGKILL")
        with contextlib.suppress(ProcessLookupError):  # the group: a prefork pool's children too
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._log.close()


def wait_until(predicate, timeout: float, what: str, watched: list[Background]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for proc in watched:
            if not proc.alive():
                raise Failed(
                    f"{proc.command!r} exited ({proc.process.returncode}) while waiting "
                    f"for {what}:\n{tail(proc.log())}"
                )
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


# -- the steps -------------------------------------------------------------------------------

SHOP_TASKS = """\
from taskkit import reliable_task


@reliable_task
def add(x, y):
    return x + y
"""

DISPATCH = """\
import time, redis
from taskkit.models import RunState, TaskRun
from shop.tasks import add

redis.Redis.from_url("{url}").lpush("celery", b"install-check: this entry is not JSON")
run_id = add.delay(2, 3).id
deadline = time.monotonic() + {seconds}
while True:
    run = TaskRun.objects.get(pk=run_id)
    if run.state in (RunState.SUCCEEDED, RunState.FAILED, RunState.DISCARDED):
        break
    if time.monotonic() > deadline:
        raise SystemExit(f"run {{run_id}} still {{run.state}} after {seconds} s")
    time.sleep(0.2)
print(f"run {{run_id}}: {{run.state}}, result {{run.result!r}}, attempts {{run.attempts}}")
if run.state != RunState.SUCCEEDED or run.result != 5:
    raise SystemExit(f"expected SUCCEEDED with result 5: {{run.error_type}} {{run.error_message}}")
"""

HEARTBEAT = (
    "from taskkit.models import RelayHeartbeat; import sys; "
    "sys.exit(0 if RelayHeartbeat.objects.exists() else 3)"
)


def copy_checkout(dest: Path) -> None:
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def flush_redis(python: Path, env: dict[str, str]) -> None:
    code = f"import redis; redis.Redis.from_url({REDIS_URL!r}, socket_timeout=5).flushdb()"
    subprocess.run([str(python), "-c", code], env=env, check=True, timeout=30)


def _terminated(signum: int, frame: object) -> None:
    raise Failed(f"stopped by signal {signum} (the time limit of .ci/install-check?)")


def main() -> int:
    signal.signal(signal.SIGTERM, _terminated)
    scratch = Path(tempfile.mkdtemp(prefix="taskkit-install-check-"))
    checkout, work, venv = scratch / "taskkit", scratch / "work", scratch / "venv"
    work.mkdir()
    env = environment(venv)
    background: list[Background] = []
    redis_touched = False
    try:
        say(f"scratch directory {scratch}; broker {REDIS_URL}")
        copy_checkout(checkout)
        run(f"{PYTHON} -m venv {venv}", scratch, env)
        run("python -m pip --version && python --version", scratch, env)
        run("python -m pip wheel --no-deps --wheel-dir dist .", checkout, env, PIP_SECONDS)
        wheels = sorted((checkout / "dist").glob(DIST_NAME.replace("-", "_") + "-*.whl"))
        if len(wheels) != 1:
            raise Failed(f"expected one {DIST_NAME} wheel in the checkout's dist/: {wheels}")
        wheel = wheels[0]

        cwd, long_running, files, installed = work, [], 0, False
        for lang, text in blocks(install_section(README.read_text())):
            if lang in ("sh", "shell", "bash", "console"):
                lines = text.splitlines()
                here = checkout if lines and lines[0].startswith(CHECKOUT_MARK) else cwd
                for line in lines:
                    command = line.split(" #", 1)[0].strip()
                    if not command or command.startswith("#"):
                        continue
                    if "long-running" in line.split(" #", 1)[-1]:
                        long_running.append((command, here))
                    elif command.startswith("cd "):
                        here = (here / command[3:].strip()).resolve()
                    else:
                        timeout = PIP_SECONDS if command.startswith("pip") else STEP_SECONDS
                        if install := PIP_INSTALL_DIST.fullmatch(command):
                            say(f"{command!r}: installs the wheel built here, {wheel.name}")
                            command = "pip install " + shlex.quote(f"{wheel}{install[2] or ''}")
                            installed = True
                        run(command, here, env, timeout)
                if here != checkout:
                    cwd = here
            elif lang == "python":
                first, _, body = text.partition("\n")
                match = re.fullmatch(r"#\s*(\S+)(\s*—\s*append)?\s*", first)
                if not match:
                    raise Failed(f"a python block of the Install section names no file: {first!r}")
                path, append = cwd / match.group(1), bool(match.group(2))
                if append and not path.exists():
                    raise Failed(f"the Install section appends to {path}, which does not exist")
                say(f"{'append to' if append else 'write'} {match.group(1)}")
                with open(path, "a" if append else "w") as f:
                    f.write(("\n" if append else "") + body)
                files += 1
        if not installed:
            raise Failed(f"the Install section has no 'pip install {DIST_NAME}' line")
        if files < 3 or len(long_running) < 2:
            raise Failed(
                f"the Install section gave {files} files and {len(long_running)} "
                "long-running commands; expected settings, celery.py, __init__.py, a "
                "worker and a relay"
            )

        say("the check's own app: one reliable task (not part of the Install text)")
        run("python manage.py startapp shop", cwd, env)
        (cwd / "shop" / "tasks.py").write_text(SHOP_TASKS)
        with open(cwd / "proj" / "settings.py", "a") as f:
            f.write('\nINSTALLED_APPS += ["shop"]\n')
        print(textwrap.indent(run("python manage.py check --fail-level WARNING", cwd, env), "  "))

        flush_redis(venv / "bin" / "python", env)
        redis_touched = True
        for i, (command, here) in enumerate(long_running):
            background.append(Background(command, here, env, scratch / f"process-{i}.log"))
        worker = next((b for b in background if " worker" in b.command), None)
        if worker is None:
            raise Failed("no long-running 'celery ... worker' command in the Install section")
        wait_until(lambda: " ready." in worker.log(), READY_SECONDS, "the worker", background)
        say("worker ready")
        wait_until(
            lambda: (
                subprocess.run(
                    ["python", "manage.py", "shell", "-c", HEARTBEAT],
                    cwd=cwd,
                    env=env,
                    capture_output=True,
                    timeout=STEP_SECONDS,
                ).returncode
                == 0
            ),
            READY_SECONDS,
            "the relay's first heartbeat",
            background,
        )
        say("relay heartbeat written")
        script = DISPATCH.format(url=REDIS_URL, seconds=RUN_SECONDS)
        output = run(
            f"python manage.py shell -c {shlex.quote(script)}",
            cwd,
            env,
            RUN_SECONDS + STEP_SECONDS,
            label="python manage.py shell -c <push a non-JSON entry; add.delay(2, 3); wait>",
        )
        say(output.strip().splitlines()[-1])
        for proc in background:
            if not proc.alive():
                raise Failed(f"{proc.command!r} exited:\n{tail(proc.log())}")
        if "dropped an entry from a Redis queue" not in worker.log():
            raise Failed(
                "the worker did not log the dropped non-JSON entry:\n" + tail(worker.log())
            )
        say("worker alive after a non-JSON entry (dropped and logged)")
    except (Failed, subprocess.SubprocessError, OSError) as exc:
        print(f"\nINSTALL CHECK FAILED: {exc}", file=sys.stderr, flush=True)
        for proc in background:
            print(f"\n--- {proc.command} (last lines) ---\n{tail(proc.log())}", file=sys.stderr)
        print(f"\n(scratch directory {scratch} kept for inspection)", file=sys.stderr)
        os.environ["KEEP"] = "1"
        return 1
    finally:
        for proc in background:
            proc.stop()
        if redis_touched:
            try:
                flush_redis(venv / "bin" / "python", env)
            except Exception as exc:  # reported, never hides the result
                print(f"could not empty {REDIS_URL}: {exc}", file=sys.stderr)
        if os.environ.get("KEEP") != "1":
            shutil.rmtree(scratch, ignore_errors=True)
    say("OK: wheel installed alone, README Install followed, one run SUCCEEDED through a worker")
    return 0


if __name__ == "__main__":
    sys.exit(main())
