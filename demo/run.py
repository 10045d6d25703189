"""Run the demo (web, worker, relay, Flower under honcho, one Redis); ``--check`` smoke-tests it.

``make demo`` runs ``.venv/bin/python demo/run.py``. It writes ``demo/var/demo.json`` (the Redis
URL, the database URL, the ports: ``demoproject/state.py``) so that commands run from a second
terminal (``manage.py demo_traffic``) reach the same Redis and database, and refuses to start
while another demo runs. The admin password is kept in ``demo/var/admin-password`` and shown in
the banner on every start (``make demo-password`` sets a new one). Ctrl-C or SIGTERM stops every
process and exits 0: the script takes the terminal's foreground for itself (so ``make`` does not
get the Ctrl-C and report an error) and stops honcho, which runs in a session of its own.

``--check`` (or ``DEMO_SMOKE=1``) uses free ports and a temporary SQLite database (unless
``DATABASE_URL`` is set), places one order through the web page, waits for the worker to confirm
it, stops everything and exits 0, or non-zero on any failure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parent
ROOT = DEMO.parent
MARKER = "TASKKIT_DEMO_RUN"  # set in every process we start, to find leftovers by it afterwards


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_database(verbosity: int = 1) -> str | None:
    """Migrate and make sure the ``admin`` superuser exists; return its password if known.

    A new password (or ``DEMO_ADMIN_PASSWORD``) is saved in ``demo/var/admin-password``, so the
    next start shows it again; ``None`` if the user exists and no password was ever saved (a
    database from an older demo: ``make demo-password`` sets one).
    """
    sys.path.insert(0, str(DEMO))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demoproject.settings")
    import django

    django.setup()
    from demoproject import state
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", interactive=False, verbosity=verbosity)
    password = os.environ.get("DEMO_ADMIN_PASSWORD")
    user_model = get_user_model()
    user = user_model.objects.filter(username="admin").first()
    if user is None:
        password = password or state.new_password()
        user_model.objects.create_superuser("admin", "admin@example.com", password)
        state.save_password(password)
    elif password:
        user.set_password(password)
        user.save(update_fields=["password"])
        state.save_password(password)
    else:
        saved = state.saved_password()
        password = saved if saved and user.check_password(saved) else None
    connections.close_all()
    return password


def _die_with_parent() -> None:
    """In the child: get SIGTERM from Linux if this script dies without cleaning up."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_honcho(web_port: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "honcho",
        "start",
        "-f",
        str(ROOT / "Procfile"),
        "-d",
        str(ROOT),
        "-p",
        str(web_port),
    ]
    if not sys.stdout.isatty():
        command.append("--no-colour")
    # a session of its own: a Ctrl-C reaches this script only, which then stops honcho in order
    return subprocess.Popen(command, cwd=ROOT, preexec_fn=_die_with_parent, start_new_session=True)


def take_terminal() -> tuple[int, int] | None:
    """Become the terminal's foreground process group, so that Ctrl-C reaches this script (and
    not ``make``, which would report "Interrupt" or "Error 130"); returns what to give back."""
    try:
        fd = sys.stdin.fileno()
        if not os.isatty(fd) or os.tcgetpgrp(fd) != os.getpgrp():
            return None
        before = os.getpgrp()
        os.setpgid(0, 0)
        _set_foreground(fd, os.getpgrp())
        return fd, before
    except OSError:
        return None


def give_back_terminal(taken: tuple[int, int] | None) -> None:
    if taken is not None:
        with contextlib.suppress(OSError):
            _set_foreground(*taken)


def _set_foreground(fd: int, pgrp: int) -> None:
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # a background group may not ask
    try:
        os.tcsetpgrp(fd, pgrp)
    finally:
        signal.signal(signal.SIGTTOU, previous)


def stop_honcho(honcho: subprocess.Popen[bytes], timeout: float = 30.0) -> bool:
    """SIGTERM honcho (it stops its processes, SIGKILLing them after 5 s); True if it stopped."""
    if honcho.poll() is None:
        honcho.send_signal(signal.SIGTERM)
    try:
        honcho.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        honcho.kill()
        honcho.wait()
        return False


def reap_leftovers(token: str) -> list[str]:
    """SIGKILL any process still carrying this run's marker; return what was killed."""
    needle = f"{MARKER}={token}".encode()
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            os.kill(int(entry.name), signal.SIGKILL)
            killed.append(f"{entry.name} {cmdline.strip()}")
        except (OSError, ValueError):
            continue
    return killed


def banner(web_port: int, flower_port: int, password: str | None) -> str:
    admin_password = password or "(unknown: `make demo-password` sets a new one)"
    return "\n".join(
        [
            "",
            "taskkit demo",
            f"  app     http://127.0.0.1:{web_port}/",
            f"  admin   http://127.0.0.1:{web_port}/admin/   user admin  password {admin_password}",
            f"  flower  http://127.0.0.1:{flower_port}/        user {os.environ['FLOWER_USER']}"
            f"  password {os.environ['FLOWER_PASSWORD']}",
            f"  redis   {os.environ['REDIS_URL']}",
            f"  db      {os.environ.get('DATABASE_URL') or DEMO / 'db.sqlite3'}",
            f"  mail    {os.environ.get('DEMO_MAIL_DIR') or DEMO / 'var' / 'mail'}",
            "  load    (second terminal) cd demo && ../.venv/bin/python manage.py demo_traffic "
            "--orders 200 --failure-rate 0.2",
            "  guide   demo/README.md (place orders, watch one fail, retry it, pause, cancel)",
            "Ctrl-C stops everything.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="smoke-test the demo and exit")
    args = parser.parse_args(argv)
    check = args.check or os.environ.get("DEMO_SMOKE") == "1"
    started = time.monotonic()

    token = secrets.token_hex(8)
    os.environ[MARKER] = token
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    os.environ["PYTHONUNBUFFERED"] = "1"
    tmp_dir = None
    if check:
        web_port, flower_port = free_port(), free_port()
        tmp_dir = tempfile.mkdtemp(prefix="taskkit-demo-")
        os.environ["DEMO_MAIL_DIR"] = f"{tmp_dir}/mail"
        if not os.environ.get("DATABASE_URL"):
            os.environ["DATABASE_URL"] = f"sqlite:///{tmp_dir}/db.sqlite3"
    else:
        web_port = int(os.environ.get("PORT") or 8000)
        flower_port = int(os.environ.get("FLOWER_PORT") or 5555)
    os.environ["FLOWER_PORT"] = str(flower_port)

    sys.path.insert(0, str(ROOT))  # devsupport/ is the checkout's, not the wheel's
    sys.path.insert(0, str(DEMO))
    from demoproject import state

    from devsupport.embedded_redis import EmbeddedRedis

    if check:
        os.environ["DEMO_VAR_DIR"] = tmp_dir or ""
    running = state.read()
    if running is not None:
        print(
            f"demo: already running (pid {running['pid']}, {state.state_path()}); stop it with "
            "Ctrl-C in its terminal first.",
            file=sys.stderr,
        )
        return 1
    redis = None
    if not os.environ.get("REDIS_URL"):
        redis = EmbeddedRedis().start()  # one server shared by web, worker, relay and Flower
        os.environ["REDIS_URL"] = redis.url

    honcho: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # the finally clause below stops honcho and Redis

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    terminal = None if check else take_terminal()
    status = 1
    stopped_by_signal = False
    try:
        state.write(
            {
                "redis_url": os.environ["REDIS_URL"],
                "database_url": os.environ.get("DATABASE_URL") or "",
                "web_port": web_port,
                "flower_port": flower_port,
            }
        )
        password = prepare_database(verbosity=0 if check else 1)
        os.environ.setdefault("FLOWER_USER", "admin")
        os.environ.setdefault("FLOWER_PASSWORD", password or secrets.token_urlsafe(12))
        print(banner(web_port, flower_port, password), flush=True)
        honcho = start_honcho(web_port)
        if check:
            import smoke

            smoke.run(
                f"http://127.0.0.1:{web_port}",
                f"http://127.0.0.1:{flower_port}",
                ("admin", password or ""),
                (os.environ["FLOWER_USER"], os.environ["FLOWER_PASSWORD"]),
                honcho,
                os.environ["DEMO_MAIL_DIR"],
            )
            status = 0
        else:
            status = honcho.wait()
            if status:
                print(f"demo: honcho stopped with status {status} (see above)", file=sys.stderr)
    except KeyboardInterrupt:
        stopped_by_signal = True
        status = 0
    except Exception as exc:  # report it, then stop everything
        print(f"{'check' if check else 'demo'}: FAILED: {exc}", file=sys.stderr, flush=True)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stopped = honcho is None or stop_honcho(honcho)
        if redis is not None:
            redis.stop()
        leftovers = reap_leftovers(token)
        for line in leftovers:
            print(f"killed leftover process {line}", file=sys.stderr)
        state.clear()
        give_back_terminal(terminal)
        if tmp_dir:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        if status == 0 and (leftovers or not stopped):
            print("demo: processes did not stop cleanly", file=sys.stderr)
            status = 1
        elif stopped_by_signal and not check:
            print("demo: stopped; every process has ended.", flush=True)
    if check and status == 0:
        print(f"check: done in {time.monotonic() - started:.1f} s\nOK", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
