"""The web console in a real headless browser (Debian's chromium and chromedriver,
installed by `make browser`): sign in as ops, see a seeded alert, acknowledge it, see
the acknowledgement in the customer's audited replay; an auditor replays as of a time."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.integration.apiserver import RunningApi, running_api

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def api(pg_admin_url: str) -> Iterator[RunningApi]:
    from tests.conftest import scratch_database  # noqa: PLC0415

    with scratch_database(pg_admin_url) as url, running_api(url, customers=30) as running:
        yield running


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(browser: WebDriver, api: RunningApi, role: str) -> None:
    browser.get(f"{api.url}/alerts")
    assert "/login" in browser.current_url, "an anonymous visitor is sent to sign in"
    browser.find_element(By.ID, "token").send_keys(api.tokens[role])
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, 30).until(
        expected_conditions.presence_of_element_located((By.ID, "queue"))
    )


def test_ops_acknowledges_a_seeded_alert_and_sees_it_in_the_replay(
    api: RunningApi, browser: WebDriver
) -> None:
    alert_id, customer = api.open_alert()
    sign_in(browser, api, "ops")
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-alert="{alert_id}"]')
    assert row.get_attribute("data-customer") == customer
    assert row.find_element(By.CSS_SELECTOR, "ul.reasons li").text.startswith("churn.")
    row.find_element(By.CSS_SELECTOR, "button.acknowledge").click()
    done = WebDriverWait(browser, 30).until(
        expected_conditions.presence_of_element_located((By.ID, "done"))
    )
    assert f"{alert_id} of {customer}: acknowledged by ops-user" in done.text

    browser.get(f"{api.url}/customers/{customer}")
    assert browser.find_element(By.ID, "alert-state").text == "acknowledged"
    step = browser.find_element(By.CSS_SELECTOR, "#replay-steps tr.kind-alert_acknowledged")
    assert "acknowledged" in step.find_element(By.CSS_SELECTOR, "td.state").text
    assert "alert " in step.text
    assert "→acknowledged" in step.text
    timeline = browser.find_element(By.ID, "timeline").text
    assert "acknowledged by ops-user" in timeline
    assert "@" not in timeline, "ops sees no personal data"
    assert browser.find_element(By.CSS_SELECTOR, "#churn-chart polyline").get_attribute("points")


def test_an_auditor_replays_a_customer_as_of_an_instant(
    api: RunningApi, browser: WebDriver
) -> None:
    _, customer = api.open_alert()
    sign_in(browser, api, "auditor")
    assert not browser.find_elements(By.CSS_SELECTOR, "button.acknowledge"), (
        "auditors change nothing"
    )
    browser.get(f"{api.url}/customers/{customer}")
    steps_now = len(browser.find_elements(By.CSS_SELECTOR, "#replay-steps tr.step"))
    field = browser.find_element(By.ID, "as-of")
    field.send_keys("2026-03-01T00:00:00Z")
    field.submit()
    WebDriverWait(browser, 30).until(expected_conditions.url_contains("as_of="))
    steps_then = browser.find_elements(By.CSS_SELECTOR, "#replay-steps tr.step")
    assert 0 < len(steps_then) < steps_now
    assert steps_then[-1].text.startswith("2026-03-01")
    assert "@" in browser.find_element(By.ID, "timeline").text, "auditors see personal data"


def test_the_overview_shows_tiers_funnel_alert_levels_and_lag(
    api: RunningApi, browser: WebDriver
) -> None:
    sign_in(browser, api, "ops")
    browser.get(f"{api.url}/")
    for section in ("tiers", "funnel", "levels", "lag"):
        assert browser.find_element(By.ID, section).text
    assert int(browser.find_element(By.ID, "interactions").text) > 0
    lag = int(browser.find_element(By.ID, "projector-lag").text)
    assert lag == api.services.stats.projector_lag(), "stored events not yet in the read models"


def test_producers_and_admins_cannot_use_the_console(api: RunningApi, browser: WebDriver) -> None:
    browser.get(f"{api.url}/login")
    browser.find_element(By.ID, "token").send_keys(api.tokens["producer"])
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, 30).until(
        expected_conditions.presence_of_element_located((By.ID, "login-failed"))
    )
