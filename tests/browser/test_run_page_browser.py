"""A real headless Chromium drives the run page's buttons: cancel a running run, retry a failed
one (the timeline shows the operator between the attempts), pause a task and resume it from the
pauses page. Screenshots: ``test-output/screenshots/run-page-*.png``."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from taskkit.models import RunState, TaskPause, TaskRun
from tests.browser import test_admin_browser as admin_browser
from tests.browser.test_admin_browser import browser as browser
from tests.browser.test_admin_browser import shot
from tests.conftest import wait_for
from tests.integration.test_execution import finished
from tests.testapp import control_tasks, tasks
from tests.testapp.models import Effect

#: The same marks as the other browser test (Chromium needed), with a longer timeout.
pytestmark = [
    *(mark for mark in admin_browser.pytestmark if mark.name != "timeout"),
    pytest.mark.timeout(180),
]


def log_in(browser, live_server) -> None:

    User.objects.create_superuser("operator", "op@example.com", "s3cret-pw")
    admin_browser.log_in(browser, live_server, "operator", "s3cret-pw")


def open_run(browser, live_server, run_id) -> None:
    browser.get(f"{live_server.url}/admin/taskkit/taskrun/{run_id}/change/")


def click_button(browser, name: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, f"a.taskkit-action-{name}").click()


def confirm(browser) -> str:
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, "input.taskkit-confirm-yes").click()
    return str(browser.find_element(By.CSS_SELECTOR, "ul.messagelist li").text)


def test_cancel_retry_and_pause_from_the_run_page(worker, live_server, browser):
    """Each button opens its confirmation page; confirming changes the ledger and the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    log_in(browser, live_server)

    # Cancel a running run: its task sees the request and stops; the run ends CANCELLED.
    running = control_tasks.until_cancelled.delay("browser-cancel").id
    wait_for(lambda: Effect.objects.filter(kind="browser-cancel").exists(), 60, what="the start")
    open_run(browser, live_server, running)
    shot(browser, "run-page-01-buttons")
    click_button(browser, "cancel")
    assert "Yes, cancel" in browser.page_source
    shot(browser, "run-page-02-confirm-cancel")
    assert confirm(browser).startswith("Cancelled 0 waiting run(s); requested cancelling of 1")
    wait_for(
        lambda: TaskRun.objects.filter(pk=running, state=RunState.CANCELLED).exists(),
        60,
        what="the run to end CANCELLED",
    )
    browser.refresh()
    assert "CANCELLED" in browser.find_element(By.CSS_SELECTOR, ".taskkit-state").text
    assert "Cancel requested by an operator" in browser.page_source
    shot(browser, "run-page-03-cancelled")

    # Retry a failed run: it succeeds; the timeline shows the operator between the attempts.
    failed = tasks.fails_until_flag.delay("browser-retry").id
    assert finished(failed).state == RunState.FAILED
    first_started = TaskRun.objects.get(pk=failed).first_started_at
    Effect.objects.create(kind="flag:browser-retry")
    open_run(browser, live_server, failed)
    click_button(browser, "retry")
    assert confirm(browser).startswith("Retried 1 run(s)")
    run = finished(failed)
    assert run.state == RunState.SUCCEEDED and run.first_started_at == first_started
    browser.refresh()
    rows = [
        row.get_attribute("class")
        for row in browser.find_elements(By.CSS_SELECTOR, "table.taskkit-timeline tbody tr")
    ]
    assert rows == ["taskkit-attempt", "taskkit-operator", "taskkit-attempt"]
    timeline = browser.find_element(By.CSS_SELECTOR, "table.taskkit-timeline")
    browser.execute_script("arguments[0].scrollIntoView();", timeline)
    shot(browser, "run-page-04-retry-timeline")

    # Pause the task from the run page; resume it from the pauses page.
    click_button(browser, "pause")
    browser.find_element(By.ID, "id_reason").send_keys("supplier down")
    assert confirm(browser) == f"Paused task {tasks.fails_until_flag.name}."
    assert TaskPause.objects.filter(name=tasks.fails_until_flag.name).exists()
    shot(browser, "run-page-05-paused")
    browser.get(f"{live_server.url}/admin/taskkit/taskpause/")
    assert "supplier down" in browser.page_source
    shot(browser, "run-page-06-pauses")
    browser.find_element(By.CSS_SELECTOR, "input[name=_selected_action]").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("resume_selected")
    browser.find_element(By.CSS_SELECTOR, "button[name=index]").click()
    assert browser.find_element(By.CSS_SELECTOR, "ul.messagelist li").text.startswith("Resumed 1")
    assert not TaskPause.objects.exists()
