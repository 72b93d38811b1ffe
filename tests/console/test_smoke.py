"""The console's smoke test: an admin signs in through the IdP in Chromium and sees the overview."""

from __future__ import annotations

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.conftest import TLS
from tests.console.conftest import ADMIN, ConsoleWorld, assert_accessible, http_session, shot, sign_in


def test_admin_signs_in_and_sees_the_overview(console_world: ConsoleWorld, browser: WebDriver) -> None:
    sign_in(browser, console_world, ADMIN)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Overview"
    nav = browser.find_element(By.CSS_SELECTOR, "nav[aria-label=Console]")
    assert "Overview" in nav.text
    assert ADMIN in browser.find_element(By.ID, "main").text or "Root Admin" in browser.page_source
    # The stylesheet loaded under the strict CSP (the header is styled by console.css, not the browser).
    assert browser.execute_script("return getComputedStyle(document.querySelector('header.top')).display") == "flex"
    shot(browser, "smoke-overview")
    assert_accessible(browser, "/console")


def test_without_a_session_the_console_sends_you_to_sign_in(console_world: ConsoleWorld) -> None:
    with httpx.Client(base_url=console_world.base_url, follow_redirects=False, verify=TLS) as anonymous:
        response = anonymous.get("/console?x=1")
    assert response.status_code == 303
    assert response.headers["location"] == "/auth/login?next=%2Fconsole%3Fx%3D1"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    with http_session(console_world, ADMIN) as signed_in:
        page = signed_in.get(f"{console_world.base_url}/console")
    assert page.status_code == 200, page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert "<h1>Overview</h1>" in page.text
