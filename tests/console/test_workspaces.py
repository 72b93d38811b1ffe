"""Workspaces in a real browser: an admin creates one, edits its residency, adds a member, sets its
limits and archives it after confirming; a ``workspace_admin`` of one workspace edits it but finds
no way to create or archive (and is refused when forcing it). Every page is screenshotted and
checked with axe-core; what the pages did is read back through the Admin API."""

from __future__ import annotations

import uuid

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.console.conftest import (
    ADMIN,
    ConsoleWorld,
    assert_accessible,
    csrf_token,
    desktop,
    http_session,
    phone,
    shot,
    sign_in,
    wait_for,
    wait_page,
)
from tests.console.posting import click_and_wait

DEVELOPER = "dev.ws@acme.test"
WS_ADMIN = "lead.ws@acme.test"


def _user_id(world: ConsoleWorld, email: str) -> str:
    with world.admin() as api:
        users = api.get("/v1/organizations/users", params={"email": email}).json()["data"]
    assert users, f"{email} has not signed in yet"
    return str(users[0]["id"])


def _ensure_user(world: ConsoleWorld, email: str, role: str) -> str:
    """Invite ``email`` and sign them in once over HTTP (which accepts the invite)."""
    world.invite(email, role)
    with http_session(world, email):
        pass
    return _user_id(world, email)


def _submit(driver: WebDriver, form_css: str) -> None:
    click_and_wait(driver, f"{form_css} button[type=submit]")


def _notice(driver: WebDriver) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, "p.notice")
    return found[0].text if found else ""


def _check(driver: WebDriver, name: str) -> None:
    shot(driver, name)
    assert_accessible(driver, name)


def test_an_admin_creates_edits_limits_and_archives_a_workspace(
    console_world: ConsoleWorld, browser: WebDriver
) -> None:
    base = console_world.base_url
    name = f"Research {uuid.uuid4().hex[:6]}"  # the world is shared with other console files
    developer_id = _ensure_user(console_world, DEVELOPER, "developer")
    sign_in(browser, console_world, ADMIN, "/console/workspaces")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Workspaces"
    assert "Workspaces" in browser.find_element(By.CSS_SELECTOR, "nav[aria-label=Console]").text
    _check(browser, "workspaces-list")

    # Create.
    browser.find_element(By.ID, "c-name").send_keys(name)
    browser.find_element(By.ID, "c-tags").send_keys("team=ml")
    _submit(browser, "#create-form")
    wait_for(browser, lambda d: "/console/workspaces/wrkspc_" in d.current_url, "the new workspace's page")
    assert _notice(browser) == "Workspace created."
    ws = browser.current_url.split("/console/workspaces/", 1)[1].split("?", 1)[0]
    assert browser.find_element(By.TAG_NAME, "h1").text.strip() == name
    _check(browser, "workspace-detail")
    phone(browser)  # readable on a phone: the same page at 390 px
    wait_page(browser, browser.current_url)
    _check(browser, "workspace-detail-phone")
    desktop(browser)

    # Residency: only "us", by default "us".
    browser.find_element(By.ID, "s-allowed-listed").click()
    browser.find_element(By.ID, "s-geo-us").click()
    Select(browser.find_element(By.ID, "s-default-geo")).select_by_value("us")
    _submit(browser, "form.workspace-form")
    assert _notice(browser) == "Settings saved."
    with console_world.admin() as api:
        stored = api.get(f"/v1/organizations/workspaces/{ws}").json()
    assert stored["data_residency"] == {
        "allowed_inference_geos": ["us"],
        "default_inference_geo": "us",
        "workspace_geo": "us",
    }
    assert stored["tags"] == {"team": "ml"}

    # A refused residency comes back with the message and the input kept.
    browser.find_element(By.ID, "s-allowed-listed").click()
    Select(browser.find_element(By.ID, "s-default-geo")).select_by_value("global")
    _submit(browser, "form.workspace-form")
    alert = browser.find_element(By.CSS_SELECTOR, "#settings .refused")
    assert "'global' is not in allowed_inference_geos ['us']" in alert.text
    assert Select(browser.find_element(By.ID, "s-default-geo")).first_selected_option.get_attribute("value") == "global"
    _check(browser, "workspace-detail-refused")

    # Add a member.
    wait_page(browser, f"{base}/console/workspaces/{ws}")
    browser.find_element(By.ID, "m-user").send_keys(DEVELOPER)
    Select(browser.find_element(By.ID, "m-role")).select_by_value("workspace_developer")
    _submit(browser, "form.member-form")
    assert _notice(browser) == "Member added."
    with console_world.admin() as api:
        members = api.get(f"/v1/organizations/workspaces/{ws}/members").json()["data"]
    assert [(m["user_id"], m["workspace_role"]) for m in members] == [(developer_id, "workspace_developer")]
    assert DEVELOPER in browser.find_element(By.ID, "members").text

    # A workspace spend limit, read back through the Admin API.
    Select(browser.find_element(By.ID, "ws-spend-period")).select_by_value("monthly")
    browser.find_element(By.ID, "ws-spend-amount").send_keys("250.75")
    _submit(browser, "#ws-spend-form")
    assert _notice(browser).startswith("Spend limit saved.")
    with console_world.admin() as api:
        limits = api.get(
            "/v1/organizations/spend_limits", params={"scope_type": "workspace", "workspace_id": ws}
        ).json()
    (limit,) = limits["data"]
    assert (limit["amount"], limit["period"], limit["scope"]) == (
        "25075",
        "monthly",
        {"type": "workspace", "workspace_id": ws},
    )
    assert "$250.75" in browser.find_element(By.ID, "spend").text

    # A workspace rate limit for the first group.
    with console_world.admin() as api:
        entry = api.get("/v1/organizations/rate_limits").json()["data"][0]["id"]
    field = browser.find_element(By.CSS_SELECTOR, f"input[form='rf-{entry}'][name=requests_per_minute]")
    field.send_keys("120")
    click_and_wait(browser, f"#rf-{entry} button")
    wait_for(browser, lambda d: "rate_limits_saved" in d.current_url, "the rate limits saved")
    with console_world.admin() as api:
        own = api.get(f"/v1/organizations/workspaces/{ws}/rate_limits").json()["data"]
    assert [(e["rate_limit_id"], e["limits"][0]["type"], e["limits"][0]["value"]) for e in own] == [
        (entry, "requests_per_minute", 120)
    ]

    # The upstream key: set (never shown again), then cleared after confirming.
    wait_page(browser, f"{base}/console/workspaces/{ws}")
    browser.find_element(By.ID, "u-key").send_keys("sk-ant-browser-secret-42")
    _submit(browser, "form.upstream-form")
    assert browser.find_element(By.ID, "upstream-state").text == "yes"
    assert "sk-ant-browser-secret-42" not in browser.page_source
    click_and_wait(browser, "#upstream a.button")
    wait_for(browser, lambda d: d.current_url.endswith("/upstream-key/clear"), "the clear-key confirmation")
    _check(browser, "workspace-upstream-clear-confirm")
    click_and_wait(browser, "form.confirm-form button.danger")
    wait_for(browser, lambda d: "upstream_key_cleared" in d.current_url, "the key cleared")
    assert browser.find_element(By.ID, "upstream-state").text == "no"

    # Remove the member after confirming.
    click_and_wait(browser, "#members a[href$='/remove']")
    wait_for(browser, lambda d: d.current_url.endswith(f"/members/{developer_id}/remove"), "the removal confirmation")
    assert "workspace_developer" in browser.find_element(By.ID, "main").text
    _check(browser, "workspace-member-remove-confirm")
    click_and_wait(browser, "form.confirm-form button.danger")
    wait_for(browser, lambda d: "member_removed" in d.current_url, "the member removed")
    with console_world.admin() as api:
        assert api.get(f"/v1/organizations/workspaces/{ws}/members").json()["data"] == []

    # Archive: the confirmation counts the keys it revokes.
    with console_world.admin() as api:
        key = api.post("/v1/organizations/api_keys", json={"name": "doomed", "workspace_id": ws})
        assert key.status_code == 200, key.text
        key_id = key.json()["id"]
    wait_page(browser, f"{base}/console/workspaces/{ws}")
    click_and_wait(browser, "#archive a")
    wait_for(browser, lambda d: d.current_url.endswith(f"/console/workspaces/{ws}/archive"), "the archive confirmation")
    text = browser.find_element(By.ID, "main").text
    assert "revoke every key of the workspace" in text
    assert "1 API key (active, inactive or expired) will be archived" in text
    _check(browser, "workspace-archive-confirm")
    click_and_wait(browser, "form.confirm-form button.danger")
    wait_for(browser, lambda d: "workspace_archived" in d.current_url, "the archived workspace")
    assert browser.find_elements(By.CSS_SELECTOR, ".badge.bad")
    assert not browser.find_elements(By.CSS_SELECTOR, "form.workspace-form")  # archived: nothing to change
    with console_world.admin() as api:
        assert api.get(f"/v1/organizations/workspaces/{ws}").json()["archived_at"] is not None
        assert api.get(f"/v1/organizations/api_keys/{key_id}").json()["status"] == "archived"

    # The list hides it unless asked (other console files in this worker may have made it long).
    assert name not in _all_pages(browser, f"{base}/console/workspaces")
    assert name in _all_pages(browser, f"{base}/console/workspaces?archived=1")


def _all_pages(browser: WebDriver, url: str) -> str:
    """The text of the list's table on every page, following its "Next" links."""
    texts: list[str] = []
    wait_page(browser, url)
    while True:
        texts.append(browser.find_element(By.TAG_NAME, "table").text)
        following = browser.find_elements(By.CSS_SELECTOR, "nav.pagination a[rel=next]")
        if not following:
            return "\n".join(texts)
        wait_page(browser, str(following[0].get_attribute("href")))


def test_a_workspace_admin_edits_their_workspace_but_cannot_create_or_archive(
    console_world: ConsoleWorld, browser: WebDriver
) -> None:
    base = console_world.base_url
    lead_id = _ensure_user(console_world, WS_ADMIN, "user")
    with console_world.admin() as api:
        ws = api.post("/v1/organizations/workspaces", json={"name": "Team Lead's"}).json()["id"]
        other = api.post("/v1/organizations/workspaces", json={"name": "Someone Else's"}).json()["id"]
        added = api.post(
            f"/v1/organizations/workspaces/{ws}/members", json={"user_id": lead_id, "workspace_role": "workspace_admin"}
        )
        assert added.status_code == 200, added.text

    sign_in(browser, console_world, WS_ADMIN, "/console/workspaces")
    listed = browser.find_element(By.TAG_NAME, "table").text
    assert "Team Lead's" in listed
    assert "Someone Else's" not in listed
    assert not browser.find_elements(By.ID, "create-form")
    _check(browser, "workspaces-list-workspace-admin")

    wait_page(browser, f"{base}/console/workspaces/{ws}")
    assert not browser.find_elements(By.ID, "archive")
    assert not browser.find_elements(By.ID, "spend")  # spend limits are billing's and admins'
    name = browser.find_element(By.ID, "s-name")
    name.clear()
    name.send_keys("Team Lead's (renamed)")
    _submit(browser, "form.workspace-form")
    assert _notice(browser) == "Settings saved."
    _check(browser, "workspace-detail-workspace-admin")
    with console_world.admin() as api:
        assert api.get(f"/v1/organizations/workspaces/{ws}").json()["name"] == "Team Lead's (renamed)"

    # Forced by hand, with a valid CSRF token: refused, and nothing happens.
    with http_session(console_world, WS_ADMIN) as lead:
        lead.base_url = httpx.URL(base)
        token = csrf_token(lead, console_world)
        create = lead.post("/console/workspaces", data={"csrf_token": token, "name": "Sneaky"})
        assert create.status_code == 403
        assert "workspaces:create" in create.text
        archive = lead.post(f"/console/workspaces/{ws}/archive", data={"csrf_token": token})
        assert archive.status_code == 403
        assert "workspaces:archive" in archive.text
        assert lead.get(f"/console/workspaces/{ws}/archive").status_code == 403
        assert lead.get(f"/console/workspaces/{other}").status_code == 404
        edit_other = lead.post(f"/console/workspaces/{other}", data={"csrf_token": token, "name": "Mine now"})
        assert edit_other.status_code == 404
    with console_world.admin() as api:
        names = [w["name"] for w in api.get("/v1/organizations/workspaces", params={"limit": 100}).json()["data"]]
        assert "Sneaky" not in names
        assert api.get(f"/v1/organizations/workspaces/{ws}").json()["archived_at"] is None
        assert api.get(f"/v1/organizations/workspaces/{other}").json()["name"] == "Someone Else's"
