"""Chromium on the on-call console: the overview's charts and stuck panel, a search, an error.

Screenshots: ``test-output/screenshots/console-*.png``.
"""

from __future__ import annotations

import datetime

from django.contrib.auth.models import User
from django.utils import timezone

from taskkit.core import buckets
from taskkit.models import AttemptOutcome, RunState, TaskAttempt, TaskRun
from tests.browser import test_admin_browser
from tests.browser.test_admin_browser import shot

browser = test_admin_browser.browser  # the Chromium fixture

pytestmark = test_admin_browser.pytestmark  # Chromium needed; transactional; 120 s


def _ledger() -> TaskRun:
    """An hour of attempts of three tasks, some retried and failed, and a stuck QUEUED run."""
    now = timezone.now()
    first = buckets.floor(now, 60) - datetime.timedelta(minutes=59)
    names = ["shop.charge", "shop.ship", "mail.receipt"]
    for minute in range(60):
        at = first + datetime.timedelta(minutes=minute, seconds=30)
        if at > now:
            break
        for i in range(1 + (minute * 7) % 5):
            task = names[(minute + i) % 3]
            run = TaskRun.objects.create(task_name=task, state=RunState.SUCCEEDED)
            created = at - datetime.timedelta(seconds=0.05 + ((minute + i) % 9) / 10)
            TaskRun.objects.filter(pk=run.pk).update(created_at=created)
            outcome = AttemptOutcome.FAILED if (minute + i) % 6 == 0 else AttemptOutcome.SUCCEEDED
            TaskAttempt.objects.create(
                run=run,
                number=1,
                outcome=outcome,
                started_at=at - datetime.timedelta(seconds=0.02),
                finished_at=at,
                retry_delay=1.0 if outcome == AttemptOutcome.FAILED and minute % 2 else None,
            )
    stuck = TaskRun.objects.create(task_name="shop.ship", state=RunState.QUEUED)
    TaskRun.objects.filter(pk=stuck.pk).update(queued_at=now - datetime.timedelta(hours=1))
    return TaskRun.objects.create(
        task_name="shop.charge",
        state=RunState.FAILED,
        idempotency_key="charge:7781",
        kwargs={"order_id": 7781},
        error_type="shop.gateway.CardDeclined",
        error_message="card declined by issuer for order 7781 (code 51); the customer was told "
        "to use another card and the order stays open\nissuer said: do not honour\nretry later",
    )


def _go(browser, act, landing: str) -> None:
    """Do ``act`` (a click, a form's submit) and wait until the page it opens, whose address
    holds ``landing``, has loaded: ``submit()`` runs a script and returns before the answer
    comes, so on a busy machine the next lookup found the old page's elements (stale)."""
    from selenium.webdriver.support.ui import WebDriverWait

    act()
    WebDriverWait(browser, 60).until(
        lambda d: (
            landing in d.current_url
            and d.execute_script("return document.readyState") == "complete"
        )
    )


def _login(browser, live_server) -> None:

    User.objects.create_superuser("oncall", "oncall@example.com", "s3cret-pw")
    test_admin_browser.log_in(browser, live_server, "oncall", "s3cret-pw")


def test_overview_charts_stuck_work_and_a_search_in_a_real_browser(live_server, browser):
    """The overview draws bars with tooltips and flags the stuck run; a search by the 8-char id
    finds the failed run, whose error reads on one line and opens on demand."""
    from selenium.webdriver.common.by import By

    failed = _ledger()
    _login(browser, live_server)
    browser.get(f"{live_server.url}/admin/taskkit/taskrun/overview/")
    bars = browser.find_elements(By.CSS_SELECTOR, ".taskkit-attempts-chart rect.taskkit-bar")
    if len(bars) <= 30:
        shot(browser, "console-overview-FAILED")
    assert len(bars) > 30, (browser.current_url, browser.title, len(bars))
    tooltip = bars[0].find_element(By.TAG_NAME, "title").get_attribute("textContent")
    assert tooltip.split(": ", 1)[1].split()[1] in ("finished", "retried", "failed")
    assert browser.find_elements(By.CSS_SELECTOR, ".taskkit-latency-chart circle.taskkit-point")
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-stuck="queued"]')
    assert "taskkit-stuck-row" in row.get_attribute("class")
    assert row.find_elements(By.TAG_NAME, "td")[1].text == "1"
    shot(browser, "console-overview")

    _go(browser, browser.find_element(By.LINK_TEXT, "last 24 hours, per hour").click, "window=24h")
    assert browser.find_elements(By.CSS_SELECTOR, ".taskkit-attempts-chart rect.taskkit-bar")
    browser.find_element(By.CSS_SELECTOR, "details.taskkit-numbers-details summary").click()
    shot(browser, "console-overview-24h")

    browser.get(f"{live_server.url}/admin/taskkit/taskrun/overview/")
    _go(browser, browser.find_element(By.CSS_SELECTOR, 'tr[data-stuck="queued"] a').click, "stuck=")
    assert "stuck=queued" in browser.current_url
    assert len(browser.find_elements(By.NAME, "_selected_action")) == 1

    browser.get(f"{live_server.url}/admin/taskkit/taskrun/")
    box = browser.find_element(By.ID, "searchbar")
    box.send_keys(str(failed.pk)[:8])
    _go(browser, box.submit, "q=")
    selected = browser.find_elements(By.NAME, "_selected_action")
    assert [s.get_attribute("value") for s in selected] == [str(failed.pk)]
    summary = browser.find_element(By.CSS_SELECTOR, "details.taskkit-error summary")
    assert summary.size["height"] < 30  # one line
    shot(browser, "console-search")
    summary.click()
    full = browser.find_element(By.CSS_SELECTOR, "pre.taskkit-error-full")
    assert "issuer said: do not honour" in full.text
    shot(browser, "console-error-details")

    browser.get(f"{live_server.url}/admin/taskkit/taskrun/?q=arg:order_id=7781")
    assert [
        s.get_attribute("value") for s in browser.find_elements(By.NAME, "_selected_action")
    ] == [str(failed.pk)]
