"""Usage, cost and Claude Code pages in a real browser: their tables are the Admin API's reports
for the same filters, row for row, and the CSV export (downloaded with the browser's cookie)
holds exactly those rows; screenshots and axe in light and dark."""

from __future__ import annotations

import csv
import io
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from orgwarden.console.csv import cell, csv_text
from tests.conftest import TLS
from tests.console.conftest import (
    ADMIN,
    ConsoleWorld,
    assert_accessible,
    color_scheme,
    http_session,
    new_browser,
    session_cookie,
    shot,
    sign_in,
    wait_page,
)
from tests.console.traffic import COST, SONNET, USAGE, Traffic, report, send_traffic

TOKENS = (
    ("uncached_input_tokens",),
    ("cache_creation", "ephemeral_5m_input_tokens"),
    ("cache_creation", "ephemeral_1h_input_tokens"),
    ("cache_read_input_tokens",),
    ("output_tokens",),
    ("server_tool_use", "web_search_requests"),
)
COST_FIELDS = (
    "workspace_id", "cost_type", "description", "model", "service_tier", "token_type", "context_window",
    "inference_geo",
)  # fmt: skip


@pytest.fixture(scope="module")
def traffic(console_world: ConsoleWorld) -> Traffic:
    return send_traffic(console_world)


@pytest.fixture(scope="module")
def admin_browser(console_world: ConsoleWorld, traffic: Traffic) -> Iterator[WebDriver]:
    with new_browser() as driver:
        sign_in(driver, console_world, ADMIN)
        yield driver


def _dig(result: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = result
    for part in path:
        value = value[part]
    return value


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def usage_rows(data: list[dict[str, Any]], groups: list[str]) -> list[list[str]]:
    """The API's usage report flattened: one row per (bucket, result)."""
    return [
        [bucket["starting_at"], *(_text(r[g]) for g in groups), *(str(_dig(r, path)) for path in TOKENS)]
        for bucket in data
        for r in bucket["results"]
    ]


def cost_rows(data: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [bucket["starting_at"], *(_text(r[f]) for f in COST_FIELDS), r["amount"]]
        for bucket in data
        for r in bucket["results"]
    ]


def page_rows(driver: WebDriver) -> list[list[str]]:
    table = driver.find_element(By.CSS_SELECTOR, "section[aria-labelledby=rows-h] table")
    rows = []
    for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr"):
        cells = tr.find_elements(By.TAG_NAME, "td")
        rows.append([td.get_attribute("textContent") or "" for td in cells])
    return [row for row in rows if not (len(row) == 1 and row[0].startswith("No "))]


def download_csv(driver: WebDriver, world: ConsoleWorld) -> tuple[list[str], list[list[str]], httpx.Response]:
    """The page's "Export CSV" link, fetched by httpx with the browser's session cookie."""
    href = driver.find_element(By.LINK_TEXT, "Export CSV").get_attribute("href")
    assert href
    with httpx.Client(cookies=session_cookie(driver), timeout=30, verify=TLS) as http:
        response = http.get(href)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith("attachment;")
    parsed = list(csv.reader(io.StringIO(response.text)))
    return parsed[0], parsed[1:], response


def test_usage_page_and_csv_are_the_api_report(
    console_world: ConsoleWorld, traffic: Traffic, admin_browser: WebDriver
) -> None:
    groups = ["model", "api_key_id"]
    query = [("starting_at", traffic.month_start), *(("group_by", g) for g in groups)]
    wait_page(admin_browser, f"{console_world.base_url}/console/usage?{urlencode(query)}")
    api = report(console_world, USAGE, [*query, ("limit", "31")])["data"]
    expected = usage_rows(api, groups)
    assert len(expected) >= 3  # two models by two keys, today
    assert page_rows(admin_browser) == expected
    header, rows, _ = download_csv(admin_browser, console_world)
    assert header[: 1 + len(groups)] == ["starting_at", *groups]
    assert rows == expected
    # A filter narrows the page, the CSV and the API alike.
    filtered = [*query, ("workspace_ids", traffic.workspace_id)]
    wait_page(admin_browser, f"{console_world.base_url}/console/usage?{urlencode(filtered)}")
    expected = usage_rows(report(console_world, USAGE, [*filtered, ("limit", "31")])["data"], groups)
    assert {row[2] for row in expected} == {traffic.key_id}
    assert page_rows(admin_browser) == expected
    assert download_csv(admin_browser, console_world)[1] == expected


def test_cost_page_and_csv_are_the_api_report(
    console_world: ConsoleWorld, traffic: Traffic, admin_browser: WebDriver
) -> None:
    query = [("starting_at", traffic.month_start), ("group_by", "workspace_id"), ("group_by", "description")]
    wait_page(admin_browser, f"{console_world.base_url}/console/cost?{urlencode(query)}")
    expected = cost_rows(report(console_world, COST, [*query, ("limit", "31")])["data"])
    # "" is the default workspace (null); other console files in this worker may have added traffic
    assert {traffic.workspace_id, ""} <= {row[1] for row in expected}
    assert any(row[4] == SONNET for row in expected)
    assert page_rows(admin_browser) == expected
    header, rows, _ = download_csv(admin_browser, console_world)
    assert header == ["starting_at", *COST_FIELDS, "amount_cents"]
    assert rows == expected


def test_report_pages_screenshots_and_accessibility(
    console_world: ConsoleWorld, traffic: Traffic, admin_browser: WebDriver
) -> None:
    pages = {
        "usage": f"/console/usage?starting_at={traffic.month_start[:10]}&group_by=model",
        "cost": f"/console/cost?starting_at={traffic.month_start[:10]}&group_by=workspace_id",
        "claude-code": "/console/claude-code",
    }
    for scheme in ("light", "dark"):
        color_scheme(admin_browser, scheme)
        for name, path in pages.items():
            wait_page(admin_browser, console_world.base_url + path)
            assert admin_browser.find_elements(By.CSS_SELECTOR, "svg.chart[role=img] title")
            shot(admin_browser, f"{name}-{scheme}")
            assert_accessible(admin_browser, f"{path} ({scheme})")
    color_scheme(admin_browser, "light")


def test_claude_code_page_counts_gateway_sessions(
    console_world: ConsoleWorld, traffic: Traffic, admin_browser: WebDriver
) -> None:
    with console_world.admin() as api:
        secret = api.post("/v1/organizations/api_keys", json={"name": "cc-laptop"}).json()["key"]
    client = console_world.server.client(api_key=secret)
    for session in (str(uuid.uuid4()), str(uuid.uuid4())):
        client.messages.create(
            model=SONNET, max_tokens=16, messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-claude-code-session-id": session},
        )  # fmt: skip
    found: list[list[str]] = []
    for _ in range(50):
        wait_page(admin_browser, f"{console_world.base_url}/console/claude-code")
        rows = [
            [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in admin_browser.find_elements(By.CSS_SELECTOR, "section[aria-labelledby=cc-people] tbody tr")
        ]
        found = [row for row in rows if row[0] == "cc-laptop"]
        if found:
            break
        time.sleep(0.2)  # the recorder writes every 0.2 s
    assert found, rows
    assert found[0][1:3] == ["API key", "2"]  # kind, sessions


def test_bad_filters_are_an_error_page_not_a_crash(console_world: ConsoleWorld, traffic: Traffic) -> None:
    with http_session(console_world, ADMIN) as admin:
        for path, words in (
            ("/console/usage?bucket_width=2d", "bucket_width"),
            ("/console/usage.csv?group_by=colour", "group_by"),
            ("/console/cost?starting_at=yesterday", "starting_at"),
            ("/console/claude-code?starting_at=2026-01-01&ending_at=2026-03-01", "31 days"),
            ("/console/usage?starting_at=a&starting_at=b", "more than once"),
        ):
            page = admin.get(console_world.base_url + path)
            assert page.status_code == 400, (path, page.text)
            assert words in page.text, (path, page.text)
            assert "Traceback" not in page.text
            assert page.headers["content-security-policy"].startswith("default-src 'none'")


def test_csv_cells_cannot_become_formulas() -> None:
    assert [cell(v) for v in ("=1+2", "+SUM(A1)", "-2+3", "@cmd", "plain", None, -5, 1.5)] == [
        "'=1+2", "'+SUM(A1)", "'-2+3", "'@cmd", "plain", "", "-5", "1.5",
    ]  # fmt: skip
    assert csv_text(["a", "b"], [["=x", 'say "hi"']]) == 'a,b\r\n\'=x,"say ""hi"""\r\n'
