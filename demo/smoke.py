"""The smoke test of ``run.py --check``: one order placed over real HTTP must be confirmed."""

from __future__ import annotations

import base64
import http.cookiejar
import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

CONFIRM_TIMEOUT = 60.0
START_TIMEOUT = 45.0


class SmokeFailure(Exception):
    pass


def say(message: str) -> None:
    print(f"check: {message}", flush=True)


def _status(url: str, auth: tuple[str, str] | None = None) -> int | None:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _flower_json(url: str, auth: tuple[str, str]) -> object:
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def _wait(what: str, condition, honcho: subprocess.Popen[bytes], timeout: float):
    """Poll ``condition`` until it returns a true value; fail on timeout or if honcho exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if honcho.poll() is not None:
            raise SmokeFailure(f"honcho exited (rc={honcho.returncode}) while waiting for {what}")
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise SmokeFailure(f"timed out after {timeout:.0f} s waiting for {what}")


def _csrf_token(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    if not match:
        raise SmokeFailure("no CSRF token in the form")
    return match.group(1)


def _post_form(opener, url: str, fields: dict[str, str]) -> tuple[str, str]:
    """GET ``url``, POST ``fields`` with its CSRF token; return (final URL, body)."""
    with opener.open(url, timeout=10) as response:
        fields = {"csrfmiddlewaretoken": _csrf_token(response.read().decode()), **fields}
    data = urllib.parse.urlencode(fields).encode()
    with opener.open(urllib.request.Request(url, data=data), timeout=10) as response:
        return response.url, response.read().decode()


def run(
    web: str,
    flower: str,
    admin: tuple[str, str],
    flower_auth: tuple[str, str],
    honcho: subprocess.Popen[bytes],
    mail_dir: str,
) -> None:
    started = time.monotonic()
    _wait("the web server", lambda: _status(f"{web}/") == 200, honcho, START_TIMEOUT)
    _wait("Flower", lambda: _status(f"{flower}/", flower_auth) == 200, honcho, START_TIMEOUT)
    if _status(f"{flower}/") != 401:
        raise SmokeFailure("Flower answers without credentials")
    say(f"web and Flower up after {time.monotonic() - started:.1f} s")

    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    placed_at = time.monotonic()
    _, body = _post_form(opener, f"{web}/", {"amount": "12.34", "failure_rate": "0"})
    match = re.search(r"Placed (ORD-[0-9A-F]+); charge run ([0-9a-f-]{36})", body)
    if not match:
        raise SmokeFailure("the page did not confirm that the order was placed")
    reference, run_id = match.groups()
    say(f"placed {reference} (run {run_id})")

    def row() -> re.Match[str] | None:
        with opener.open(f"{web}/", timeout=10) as response:
            page = response.read().decode()
        return re.search(
            rf'<tr data-reference="{reference}" data-status="(\w+)">(.*?)</tr>', page, re.S
        )

    def confirmed() -> bool:
        found = row()
        return bool(found and found.group(1) == "confirmed" and "SUCCEEDED" in found.group(2))

    def invoiced(ref: str) -> bool:
        found = row()
        return bool(found and "INV-" in found.group(2))

    _wait(f"{reference} to be confirmed", confirmed, honcho, CONFIRM_TIMEOUT)
    say(f"{reference} confirmed, run SUCCEEDED, {time.monotonic() - placed_at:.1f} s after POST")

    def mailed() -> bool:
        return any(reference in p.read_text(errors="replace") for p in Path(mail_dir).glob("*"))

    _wait(f"the confirmation e-mail of {reference}", mailed, honcho, 10)
    _wait(f"the invoice of {reference}", lambda: invoiced(reference), honcho, 20)
    say(f"{reference}: e-mail written to {mail_dir}, invoice created")

    _, body = _post_form(opener, f"{web}/", {"amount": "5.00", "roll_back": "on"})
    rolled = re.search(r"Rolled back (ORD-[0-9A-F]+): .*? no order, no run and no e-mail", body)
    if not rolled or f'data-reference="{rolled.group(1)}"' in body:
        raise SmokeFailure("the rolled-back order left something behind")
    say(f"rolled back {rolled.group(1)}: no order, no run, no e-mail")

    def flower_saw_it() -> bool:
        try:
            task = _flower_json(f"{flower}/api/task/info/{run_id}", flower_auth)
        except (OSError, ValueError):
            return False
        return isinstance(task, dict) and task.get("state") == "SUCCESS"

    _wait("Flower to show the task as SUCCESS", flower_saw_it, honcho, 15)
    say("Flower shows the task as SUCCESS")

    if not admin[1]:
        say("admin login skipped: the admin user existed (set DEMO_ADMIN_PASSWORD to check it)")
        return
    url, body = _post_form(
        opener,
        f"{web}/admin/login/?next=/admin/",
        {"username": admin[0], "password": admin[1], "next": "/admin/"},
    )
    if not url.endswith("/admin/") or "Site administration" not in body:
        raise SmokeFailure("could not log in to the admin with the printed credentials")
    say("admin login works")
    deadline = time.monotonic() + START_TIMEOUT
    while True:  # the Procfile's relay sweeps every few seconds and shows on the overview
        with opener.open(f"{web}/admin/taskkit/taskrun/overview/", timeout=10) as response:
            overview = response.read().decode()
        if "Runs by state" not in overview:
            raise SmokeFailure("the admin overview page did not render")
        if "no relay seen" not in overview:
            break
        if time.monotonic() > deadline:
            raise SmokeFailure("the overview shows no relay heartbeat: is the relay running?")
        time.sleep(0.5)
    say("the relay's heartbeat shows on the admin overview")
    with opener.open(f"{web}/admin/taskkit/taskrun/{run_id}/change/", timeout=10) as response:
        if f'{flower}/task/{run_id}"' not in response.read().decode():
            raise SmokeFailure("the run's admin page does not link to Flower")
    say("admin overview renders; the run's admin page links to Flower")
