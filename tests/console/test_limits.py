"""The organization's limits page in a real browser: an admin sets an organization rate limit, an
organization spend limit and a user's spend limit, and deletes one after confirming; a developer
sees the rate limits read-only and no spend limits at all. Screenshots and axe-core on each page;
everything read back through the Admin API."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.console.conftest import (
    ADMIN,
    ConsoleWorld,
    assert_accessible,
    color_scheme,
    http_session,
    shot,
    sign_in,
    wait_for,
)
from tests.console.posting import click_and_wait

SPENDER = "spender.limits@acme.test"
VIEWER = "viewer.limits@acme.test"


def _check(driver: WebDriver, name: str) -> None:
    shot(driver, name)
    assert_accessible(driver, name)


def _post(driver: WebDriver, button_css: str, notice: str) -> None:
    click_and_wait(driver, button_css)
    wait_for(driver, lambda d: f"notice={notice}" in d.current_url, notice)


def test_an_admin_sets_and_deletes_organization_and_user_limits(
    console_world: ConsoleWorld, browser: WebDriver
) -> None:
    console_world.invite(SPENDER, "developer")
    with http_session(console_world, SPENDER):
        pass  # signed in once: the invite is accepted, the user exists
    sign_in(browser, console_world, ADMIN, "/console/limits")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Limits"
    _check(browser, "limits")

    with console_world.admin() as api:
        entry = api.get("/v1/organizations/rate_limits").json()["data"][1]["id"]
    browser.find_element(By.CSS_SELECTOR, f"input[form='rf-{entry}'][name=output_tokens_per_minute]").send_keys(
        "80,000"
    )
    _post(browser, f"#rf-{entry} button", "rate_limits_saved")
    with console_world.admin() as api:
        listed = {e["id"]: e for e in api.get("/v1/organizations/rate_limits").json()["data"]}
    assert listed[entry]["limits"] == [{"type": "output_tokens_per_minute", "value": 80000}]
    # Clearing the field clears the value.
    field = browser.find_element(By.CSS_SELECTOR, f"input[form='rf-{entry}'][name=output_tokens_per_minute]")
    assert field.get_attribute("value") == "80000"
    field.clear()
    _post(browser, f"#rf-{entry} button", "rate_limits_saved")
    with console_world.admin() as api:
        listed = {e["id"]: e for e in api.get("/v1/organizations/rate_limits").json()["data"]}
    assert listed[entry]["limits"] == []

    Select(browser.find_element(By.ID, "org-spend-period")).select_by_value("monthly")
    browser.find_element(By.ID, "org-spend-amount").send_keys("5000")
    browser.find_element(By.ID, "org-spend-thresholds").send_keys("50, 90")
    _post(browser, "#org-spend-form button[type=submit]", "spend_limit_saved")
    browser.find_element(By.ID, "user-spend-user").send_keys(SPENDER)
    Select(browser.find_element(By.ID, "user-spend-period")).select_by_value("daily")
    browser.find_element(By.ID, "user-spend-amount").send_keys("20")
    _post(browser, "#user-spend-form button[type=submit]", "spend_limit_saved")
    with console_world.admin() as api:
        rows = api.get("/v1/organizations/spend_limits", params={"limit": 100}).json()["data"]
        spender = api.get("/v1/organizations/users", params={"email": SPENDER}).json()["data"][0]["id"]
    org_row = next(r for r in rows if r["scope"]["type"] == "organization" and r["period"] == "monthly")
    user_row = next(r for r in rows if r["scope"]["type"] == "user")
    assert (org_row["amount"], org_row["alert_thresholds"]) == ("500000", [50, 90])
    assert (user_row["amount"], user_row["period"], user_row["scope"]["user_id"]) == ("2000", "daily", spender)
    user_table = browser.find_element(By.CSS_SELECTOR, "#user_spend table").text
    assert SPENDER in user_table
    assert "$20.00" in user_table
    _check(browser, "limits-set")

    click_and_wait(browser, f"a[href='/console/limits/spend/{user_row['id']}/delete']")
    wait_for(browser, lambda d: d.current_url.endswith("/delete"), "the delete confirmation")
    assert "$20.00" in browser.find_element(By.ID, "main").text
    _check(browser, "limits-spend-delete-confirm")
    _post(browser, "form.confirm-form button.danger", "spend_limit_deleted")
    with console_world.admin() as api:
        assert api.get(f"/v1/organizations/spend_limits/{user_row['id']}").status_code == 404
        assert api.get(f"/v1/organizations/spend_limits/{org_row['id']}").status_code == 200


def test_a_developer_reads_rate_limits_and_sees_no_spend_limits(
    console_world: ConsoleWorld, browser: WebDriver
) -> None:
    console_world.invite(VIEWER, "developer")
    sign_in(browser, console_world, VIEWER, "/console/limits")
    main = browser.find_element(By.ID, "main")
    assert "Rate limits" in main.text
    assert not browser.find_elements(By.CSS_SELECTOR, "table.rate-limits input")  # read-only
    assert not browser.find_elements(By.ID, "org_spend")
    assert not browser.find_elements(By.ID, "user_spend")
    _check(browser, "limits-developer")
    color_scheme(browser, "dark")  # the same page in dark mode: contrast checked again
    browser.refresh()
    wait_for(browser, lambda d: d.find_elements(By.ID, "main"), "the limits page in dark mode")
    _check(browser, "limits-developer-dark")
