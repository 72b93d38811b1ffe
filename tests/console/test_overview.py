"""The overview in a real browser: simulator traffic through the gateway shows on its charts (the
numbers in the chart's table are the Admin API's reports), spend meters and near-cap limits from
spend limits set through the Admin API; screenshots and axe in light, dark and at phone width."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.console.conftest import (
    ADMIN,
    ConsoleWorld,
    assert_accessible,
    color_scheme,
    desktop,
    http_session,
    new_browser,
    phone,
    shot,
    sign_in,
    wait_page,
)
from tests.console.traffic import COST, USAGE, Traffic, admin, report, send_traffic, tokens_of


@pytest.fixture(scope="module")
def traffic(console_world: ConsoleWorld) -> Traffic:
    sent = send_traffic(console_world)
    limits = "/v1/organizations/spend_limits"
    admin(
        console_world, "POST", limits, json={"amount": "100000", "period": "monthly", "scope": {"type": "organization"}}
    )
    # 10 cents: the workspace's Opus request (about 12.5 cents) is over it.
    scope = {"type": "workspace", "workspace_id": sent.workspace_id}
    admin(console_world, "POST", limits, json={"amount": "10", "period": "monthly", "scope": scope})
    return sent


@pytest.fixture(scope="module")
def admin_browser(console_world: ConsoleWorld, traffic: Traffic) -> Iterator[WebDriver]:
    with new_browser() as driver:
        sign_in(driver, console_world, ADMIN)
        yield driver


def chart_rows(driver: WebDriver) -> dict[str, list[str]]:
    """The overview's "Spend and tokens per day" table (inside its <details>), day -> cells."""
    details = driver.find_element(By.CSS_SELECTOR, "#main details.chart-data")
    details.find_element(By.TAG_NAME, "summary").click()
    rows = {}
    for tr in details.find_elements(By.CSS_SELECTOR, "tbody tr"):
        cells = [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
        rows[cells[0]] = cells[1:]
    return rows


def test_the_charts_show_the_gateway_traffic_as_the_api_reports_it(
    console_world: ConsoleWorld, traffic: Traffic, admin_browser: WebDriver
) -> None:
    wait_page(admin_browser, f"{console_world.base_url}/console")
    shown = chart_rows(admin_browser)
    usage = report(console_world, USAGE, [("starting_at", traffic.month_start), ("limit", "31")])["data"]
    cost = report(console_world, COST, [("starting_at", traffic.month_start), ("limit", "31")])["data"]
    assert list(shown) == [bucket["starting_at"][:10] for bucket in usage]
    total_tokens = 0
    for u_bucket, c_bucket in zip(usage, cost, strict=True):
        tokens = sum(tokens_of(r) for r in u_bucket["results"])
        dollars = sum(Decimal(r["amount"]) for r in c_bucket["results"]) / 100
        assert shown[u_bucket["starting_at"][:10]] == [f"${dollars:,.2f}", str(tokens)]
        total_tokens += tokens
    assert total_tokens >= traffic.output_tokens > 5000
    # The SVG charts are there, labelled, with one bar per day.
    svgs = admin_browser.find_elements(By.CSS_SELECTOR, "svg.chart[role=img]")
    titles = [svg.find_element(By.TAG_NAME, "title").get_attribute("textContent") for svg in svgs]
    assert titles == ["Spend per day (USD)", "Tokens per day"]
    assert len(svgs[1].find_elements(By.CSS_SELECTOR, "rect.bar")) == len(usage)
    assert admin_browser.find_element(By.ID, "month-tokens").text == f"{total_tokens:,}"


def test_meters_and_near_cap_limits_and_top_lists(
    console_world: ConsoleWorld, traffic: Traffic, admin_browser: WebDriver
) -> None:
    wait_page(admin_browser, f"{console_world.base_url}/console")
    labels = [el.text for el in admin_browser.find_elements(By.CSS_SELECTOR, ".meter-row .meter-label")]
    assert any(label.startswith("Organization (monthly)") and "of $1,000.00" in label for label in labels), labels
    assert any(label.startswith(f"Workspace {traffic.workspace_name} (monthly)") for label in labels), labels
    rows = admin_browser.find_elements(By.CSS_SELECTOR, ".meter-row")  # other console files may add limits
    workspace_row = next(r for r in rows if r.text.startswith(f"Workspace {traffic.workspace_name} (monthly)"))
    meter = workspace_row.find_element(By.CSS_SELECTOR, "svg.meter[role=img]")
    assert "over" in (meter.get_attribute("class") or "")  # the workspace spent more than its 10 cents
    near = admin_browser.find_element(By.ID, "near-cap").text
    assert f"Workspace {traffic.workspace_name} (monthly)" in near
    assert "of $0.10" in near
    assert "Organization" not in near
    main = admin_browser.find_element(By.ID, "main").text
    for expected in (traffic.key_name, "Console Research", "claude-opus-4-6"):
        assert expected in main
    assert "Chain last verified" in main  # admins see the audit log's state


def test_overview_screenshots_and_accessibility(
    console_world: ConsoleWorld, traffic: Traffic, admin_browser: WebDriver
) -> None:
    wait_page(admin_browser, f"{console_world.base_url}/console")
    shot(admin_browser, "overview-light")
    assert_accessible(admin_browser, "/console (light)")
    color_scheme(admin_browser, "dark")
    try:
        wait_page(admin_browser, f"{console_world.base_url}/console")
        background = admin_browser.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(15, 18, 22)"  # console.css's dark palette applies
        shot(admin_browser, "overview-dark")
        assert_accessible(admin_browser, "/console (dark)")
    finally:
        color_scheme(admin_browser, "light")
    phone(admin_browser)
    try:
        wait_page(admin_browser, f"{console_world.base_url}/console")
        width = admin_browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 390, f"the overview scrolls sideways on a phone ({width} px)"
        shot(admin_browser, "overview-phone")
        assert_accessible(admin_browser, "/console (phone)")
    finally:
        desktop(admin_browser)


def test_a_developer_sees_usage_but_no_limits_or_audit(console_world: ConsoleWorld, traffic: Traffic) -> None:
    console_world.invite("dev.overview@acme.test", "developer")
    with http_session(console_world, "dev.overview@acme.test") as dev:
        page = dev.get(f"{console_world.base_url}/console")
    assert page.status_code == 200, page.text
    assert "Spend per day (USD)" in page.text  # developers have usage:read
    assert "Spend against limits" not in page.text  # but not spend_limits:read
    assert "Audit log" not in page.text
    assert "/console/audit/verify" not in page.text
