"""A real headless Chromium drives the admin: log in, retry a failed task, read its timeline.

Uses Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium chromium-driver``;
``.ci/run`` installs them) through selenium, never a downloaded browser. Screenshots land in
``test-output/screenshots/``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from taskkit.models import RunState, TaskRun
from tests.conftest import OUTPUT, wait_for
from tests.integration.test_execution import finished
from tests.testapp import tasks
from tests.testapp.models import Effect

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = OUTPUT / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="needs Debian's chromium and chromium-driver: "
        "apt-get install -y chromium chromium-driver (CI installs them)",
    ),
]


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="taskkit-chromium-")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    log = OUTPUT / f"chromedriver-{os.getpid()}.log"
    OUTPUT.mkdir(exist_ok=True)
    driver = webdriver.Chrome(
        service=Service(str(CHROMEDRIVER), log_output=str(log)), options=options
    )
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def log_in(driver, live_server, username: str, password: str) -> None:
    """Log in through the admin's form and wait until the admin's index has loaded: a click on
    submit does not wait for the POST's answer, and a page opened before it lands on the login
    form (no session cookie yet) — what a busy machine showed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{live_server.url}/admin/login/?next=/admin/")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(driver, 60).until(
        lambda d: "/login/" not in d.current_url and d.find_elements(By.ID, "user-tools")
    )


def shot(driver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def test_operator_retries_a_failed_task_in_a_real_browser(worker, live_server, browser):
    """Log in, open Failed tasks, retry one, see it SUCCEEDED and its attempt timeline."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    User.objects.create_superuser("operator", "op@example.com", "s3cret-pw")
    run_id = tasks.fails_until_flag.delay("browser").id
    assert finished(run_id).state == RunState.FAILED
    Effect.objects.create(kind="flag:browser")  # the cause is fixed; now the operator retries

    log_in(browser, live_server, "operator", "s3cret-pw")
    browser.find_element(By.LINK_TEXT, "Failed tasks").click()
    assert "fails_until_flag" in browser.page_source
    shot(browser, "01-failed-tasks")

    browser.find_element(By.CSS_SELECTOR, f"input[name=_selected_action][value='{run_id}']").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("retry_selected")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    message = browser.find_element(By.CSS_SELECTOR, "ul.messagelist li").text
    assert message.startswith("Retried 1 run(s)")
    shot(browser, "02-retried")

    wait_for(
        lambda: TaskRun.objects.filter(pk=run_id, state=RunState.SUCCEEDED).exists(),
        30,
        what="the retried run to succeed",
    )
    browser.get(f"{live_server.url}/admin/taskkit/taskrun/?state__exact=SUCCEEDED")
    browser.find_element(By.CSS_SELECTOR, f"a[title='{run_id}']").click()
    outcomes = [
        row.get_attribute("data-outcome")
        for row in browser.find_elements(By.CSS_SELECTOR, "tr.taskkit-attempt")
    ]
    assert outcomes == ["FAILED", "SUCCEEDED"]
    assert "no flag for browser yet" in browser.page_source
    assert "SUCCEEDED" in browser.find_element(By.CSS_SELECTOR, ".taskkit-state").text
    timeline = browser.find_element(By.CSS_SELECTOR, "table.taskkit-timeline")
    browser.execute_script("arguments[0].scrollIntoView();", timeline)
    shot(browser, "03-run-timeline")
