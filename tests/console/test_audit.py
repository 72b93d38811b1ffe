"""The audit log in the console, in Chromium against a real server: filters, an event's page, export
(compared with the Admin API's list for the same filters), verify; and only admins get in."""

from __future__ import annotations

import csv
import html
import io
import json
import uuid
from typing import Any

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.conftest import TLS
from tests.console.conftest import (
    ADMIN,
    ConsoleWorld,
    assert_accessible,
    csrf_token,
    http_session,
    shot,
    sign_in,
    wait_for,
    wait_page,
)

CSV_COLUMNS = [
    "type", "id", "organization_id", "seq", "occurred_at", "actor_type", "actor_id", "actor_user_id", "action",
    "target_type", "target_id", "workspace_id", "request_id", "source_ip", "outcome", "details", "prev_hash", "hash",
]  # fmt: skip


def create_workspaces(world: ConsoleWorld, *names: str) -> list[dict[str, Any]]:
    made = []
    with world.admin() as api:
        for name in names:
            response = api.post("/v1/organizations/workspaces", json={"name": name})
            assert response.status_code == 200, response.text
            made.append(response.json())
    return made


def api_events(world: ConsoleWorld, **filters: Any) -> list[dict[str, Any]]:
    """Every event the Admin API lists for ``filters``, newest first, paging with a small limit."""
    found: list[dict[str, Any]] = []
    page: str | None = None
    with world.admin() as api:
        while True:
            params = {**filters, "limit": 2, **({"page": page} if page else {})}
            response = api.get("/v1/organizations/audit_logs", params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            found.extend(body["data"])
            page = body["next_page"]
            if not page:
                return found


def spreadsheet_safe(value: Any) -> str:
    """What the CSV holds for an API value: null empty, details compact JSON, formulas quoted."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    text = str(value)
    return "'" + text if text.startswith(("=", "+", "-", "@")) else text


def test_an_admin_filters_the_audit_log_and_opens_an_event_done_just_before(
    console_world: ConsoleWorld, browser: WebDriver
) -> None:
    name = f"audited-{uuid.uuid4().hex[:8]}"
    (workspace,) = create_workspaces(console_world, name)
    sign_in(browser, console_world, ADMIN, "/console/audit")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Audit log"
    assert "Audit log" in browser.find_element(By.CSS_SELECTOR, "nav[aria-label=Console]").text
    shot(browser, "audit-list")
    assert_accessible(browser, "/console/audit")

    browser.find_element(By.ID, "q-action").send_keys("workspace.create")
    browser.find_element(By.ID, "q-target_id").send_keys(workspace["id"])
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait_for(browser, lambda d: "target_id=" in d.current_url, "the filtered audit log")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.audit-events tbody tr")
    assert len(rows) == 1, [r.text for r in rows]
    assert "workspace.create" in rows[0].text
    assert workspace["id"] in rows[0].text
    assert browser.find_element(By.ID, "q-action").get_attribute("value") == "workspace.create"
    shot(browser, "audit-list-filtered")
    assert_accessible(browser, "/console/audit (filtered)")

    rows[0].find_element(By.TAG_NAME, "a").click()
    wait_for(browser, lambda d: "/console/audit/evt_" in d.current_url, "the event page")
    (event,) = api_events(console_world, action="workspace.create", target_id=workspace["id"])
    page = browser.find_element(By.ID, "main").text
    assert event["id"] in page
    assert event["hash"] in page
    assert event["prev_hash"] in page
    assert f'"name": "{name}"' in browser.find_element(By.CSS_SELECTOR, "pre.details").text
    assert "prev_hash matches" in page
    shot(browser, "audit-event")
    assert_accessible(browser, "/console/audit/{id}")

    # the previous event in the chain is one click away, and its hash is this event's prev_hash
    browser.find_element(By.PARTIAL_LINK_TEXT, f"seq {event['seq'] - 1}:").click()
    wait_for(browser, lambda d: event["id"] not in d.current_url, "the previous event")
    assert event["prev_hash"] in browser.find_element(By.CSS_SELECTOR, "table.chain").text


def test_a_bad_filter_is_shown_beside_the_form(console_world: ConsoleWorld, browser: WebDriver) -> None:
    sign_in(browser, console_world, ADMIN, "/console/audit?starting_at=yesterday")
    alert = browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert "starting_at" in alert
    assert "RFC 3339" in alert
    assert browser.find_element(By.ID, "q-starting_at").get_attribute("value") == "yesterday"
    assert_accessible(browser, "/console/audit (refused filter)")


def test_the_export_holds_exactly_the_filtered_events_of_the_api(console_world: ConsoleWorld) -> None:
    tag = uuid.uuid4().hex[:6]
    made = create_workspaces(console_world, f"=SUM(A1)-{tag}", f"export-b-{tag}", f"export-c-{tag}")
    filters = {"action": "workspace.create", "actor_type": "admin_api_key", "starting_at": "2020-01-01T00:00:00Z"}
    expected = api_events(console_world, **filters)
    assert {w["id"] for w in made} <= {e["target_id"] for e in expected}

    with http_session(console_world, ADMIN) as client:
        base = f"{console_world.base_url}/console/audit/export"
        jsonl = client.get(base, params={**filters, "format": "jsonl"})
        assert jsonl.status_code == 200, jsonl.text
        assert jsonl.headers["content-type"].startswith("application/jsonl")
        assert 'filename="audit-log.jsonl"' in jsonl.headers["content-disposition"]
        assert jsonl.headers["cache-control"] == "no-store"
        assert [json.loads(line) for line in jsonl.text.splitlines()] == expected

        exported = client.get(base, params={**filters, "format": "csv"})
        assert exported.status_code == 200, exported.text
        assert exported.headers["content-type"].startswith("text/csv")
        table = list(csv.reader(io.StringIO(exported.text)))
        assert table[0] == CSV_COLUMNS
        assert table[1:] == [[spreadsheet_safe(e[c]) for c in CSV_COLUMNS] for e in expected]

        # the same filters as the page: a bad one is refused with a page naming it, not an empty file
        refused = client.get(base, params={"format": "csv", "ending_at": "2020-01-01", "starting_at": "2021-01-01"})
        assert refused.status_code == 400
        assert "ending_at: must be after starting_at" in refused.text
        unknown = client.get(base, params={"format": "xml"})
        assert unknown.status_code == 400
        assert "format" in unknown.text

        nothing = client.get(base, params={"format": "csv", "actor_id": f"nobody-{tag}"})
        assert list(csv.reader(io.StringIO(nothing.text))) == [CSV_COLUMNS]


def test_verify_walks_the_chain_and_shows_ok_with_its_head(console_world: ConsoleWorld, browser: WebDriver) -> None:
    create_workspaces(console_world, f"verify-{uuid.uuid4().hex[:8]}")
    sign_in(browser, console_world, ADMIN, "/console/audit/verify")
    assert_accessible(browser, "/console/audit/verify")
    browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    status = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".verify-result"), "the verification")
    text = status[0].text
    assert "OK:" in text, text
    assert "chain intact" in text
    newest = api_events_first(console_world)  # the verification's own event, recorded after the walk
    assert newest["action"] == "audit_log.verify", newest
    assert newest["outcome"] == "success", newest
    checked = int(text.split(" events checked")[0].split()[-1])
    assert checked < newest["seq"]  # the walk ended before its own event
    assert newest["details"]["events"] == checked, newest
    assert f"seq\n{checked}" in text or f"seq {checked}" in text  # the head is the last event checked
    shot(browser, "audit-verify-ok")
    assert_accessible(browser, "/console/audit/verify (result)")


def api_events_first(world: ConsoleWorld) -> dict[str, Any]:
    with world.admin() as api:
        response = api.get("/v1/organizations/audit_logs", params={"limit": 1})
    data: dict[str, Any] = response.json()["data"][0]
    return data


def test_verify_needs_the_csrf_token(console_world: ConsoleWorld) -> None:
    with http_session(console_world, ADMIN) as client:
        refused = client.post(f"{console_world.base_url}/console/audit/verify", data={"csrf_token": "wrong"})
        assert refused.status_code == 403
        assert "CSRF" in refused.text
        done = client.post(
            f"{console_world.base_url}/console/audit/verify", data={"csrf_token": csrf_token(client, console_world)}
        )
        assert done.status_code == 200
        assert "chain intact" in done.text


def test_an_unknown_event_is_a_404_page(console_world: ConsoleWorld) -> None:
    with http_session(console_world, ADMIN) as client:
        response = client.get(f"{console_world.base_url}/console/audit/evt_nope")
    assert response.status_code == 404
    assert "audit event 'evt_nope' not found" in html.unescape(response.text)


def test_only_organization_admins_may_read_the_audit_log(console_world: ConsoleWorld, browser: WebDriver) -> None:
    login = f"dev-{uuid.uuid4().hex[:6]}@acme.test"
    console_world.invite(login, "developer")
    event = api_events_first(console_world)
    with http_session(console_world, login) as client:
        base = console_world.base_url
        for path in ("/console/audit", f"/console/audit/{event['id']}", "/console/audit/export?format=jsonl",
                     "/console/audit/verify"):  # fmt: skip
            response = client.get(base + path)
            assert response.status_code == 403, (path, response.status_code)
            assert "audit:read" in response.text
            assert event["hash"] not in response.text
        token = csrf_token(client, console_world)
        posted = client.post(f"{base}/console/audit/verify", data={"csrf_token": token})
        assert posted.status_code == 403
        assert "audit:read" in posted.text
        overview = client.get(f"{base}/console")
        assert 'href="/console/audit"' not in overview.text

    sign_in(browser, console_world, login, "/console")
    assert "Audit log" not in browser.find_element(By.CSS_SELECTOR, "nav[aria-label=Console]").text
    wait_page(browser, f"{console_world.base_url}/console/audit")
    assert "audit:read" in browser.find_element(By.ID, "main").text
    shot(browser, "audit-forbidden-developer")
    assert_accessible(browser, "/console/audit (403)")


def test_the_audit_pages_send_the_console_security_headers(console_world: ConsoleWorld) -> None:
    with http_session(console_world, ADMIN) as client:
        for path in ("/console/audit", "/console/audit/verify", "/console/audit/export?format=csv"):
            response = client.get(console_world.base_url + path)
            assert response.status_code == 200, (path, response.text)
            assert "default-src 'none'" in response.headers["content-security-policy"]
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"
    with httpx.Client(base_url=console_world.base_url, follow_redirects=False, verify=TLS) as anonymous:
        assert anonymous.get("/console/audit/export?format=csv").status_code == 303
