"""Console API keys in Chromium: create (the secret shown once, working with the SDK), rename,
deactivate, archive, the list's filters and flags; a developer sees and creates only what the policy
allows. Every page is screenshotted and checked with axe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.conftest import SdkHttpClient, unique
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
from tests.console.posting import main_text, submit_form, text_of

MODEL = "claude-sonnet-4-6"
MESSAGES: list[Any] = [{"role": "user", "content": "Hello, console"}]


def _key(world: ConsoleWorld, key_id: str) -> dict[str, Any]:
    with world.admin() as api:
        response = api.get(f"/v1/organizations/api_keys/{key_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _workspace(world: ConsoleWorld, name: str) -> str:
    with world.admin() as api:
        response = api.post("/v1/organizations/workspaces", json={"name": name})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _api_key(world: ConsoleWorld, name: str, **extra: Any) -> dict[str, Any]:
    with world.admin() as api:
        response = api.post("/v1/organizations/api_keys", json={"name": name, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_an_admin_creates_a_key_and_reads_its_secret_only_once(console_world: ConsoleWorld, browser: WebDriver) -> None:
    world = console_world
    sign_in(browser, world, ADMIN, "/console/keys")
    assert browser.find_element(By.TAG_NAME, "h1").text == "API keys"
    shot(browser, "keys-list")
    assert_accessible(browser, "/console/keys")

    browser.find_element(By.LINK_TEXT, "Create an API key").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "f-name"), "the new-key form")
    shot(browser, "keys-new")
    assert_accessible(browser, "/console/keys/new")
    name = unique("console-key")
    browser.find_element(By.ID, "f-name").send_keys(name)
    submit_form(browser, "/console/keys/new")
    secret_box = wait_for(browser, lambda d: d.find_elements(By.ID, "api-key-secret"), "the secret")[0]
    secret = str(secret_box.get_attribute("value"))
    assert secret.startswith("sk-ant-api03-")
    shot(browser, "keys-created")
    assert_accessible(browser, "/console/keys/new (created)")
    # The copy button is progressive enhancement: console.js shows it.
    assert browser.find_element(By.CSS_SELECTOR, "button.copy[data-copy=api-key-secret]").is_displayed()
    assert secret not in browser.current_url

    # The secret works against the gateway with the official SDK.
    sdk = anthropic.Anthropic(api_key=secret, base_url=world.base_url, max_retries=0, http_client=SdkHttpClient())
    message = sdk.messages.create(model=MODEL, max_tokens=32, messages=MESSAGES)
    assert message.content

    # It is never shown again: not on reload of the form, not on the key's page, not in the list.
    key_link = browser.find_element(By.LINK_TEXT, "Go to the key").get_attribute("href") or ""
    key_id = key_link.rsplit("/", 1)[-1]
    for path in ("/console/keys/new", f"/console/keys/{key_id}", "/console/keys"):
        wait_page(browser, world.base_url + path)
        assert secret not in browser.page_source
        assert all(secret not in (a.get_attribute("href") or "") for a in browser.find_elements(By.TAG_NAME, "a"))
    shot(browser, "keys-detail")
    assert_accessible(browser, "/console/keys")
    assert name in main_text(browser)
    # ... nor in the server's log (access log included).
    assert secret not in world.server.log()
    body = _key(world, key_id)
    assert body["name"] == name
    assert "key" not in body


def test_rename_deactivate_and_archive_show_in_the_admin_api(console_world: ConsoleWorld, browser: WebDriver) -> None:
    world = console_world
    created = _api_key(world, unique("to-change"))
    key_id, secret = created["id"], created["key"]
    sign_in(browser, world, ADMIN, f"/console/keys/{key_id}")

    new_name = unique("renamed")
    field = browser.find_element(By.ID, "f-name")
    field.clear()
    field.send_keys(new_name)
    submit_form(browser, f"/console/keys/{key_id}/rename")
    wait_for(browser, lambda d: "was renamed" in main_text(d), "the rename notice")
    assert _key(world, key_id)["name"] == new_name

    submit_form(browser, f"/console/keys/{key_id}/status")
    wait_for(browser, lambda d: "deactivated" in main_text(d), "the deactivate notice")
    assert _key(world, key_id)["status"] == "inactive"
    shot(browser, "keys-detail-inactive")
    assert_accessible(browser, "/console/keys/{id} (inactive)")
    sdk = anthropic.Anthropic(api_key=secret, base_url=world.base_url, max_retries=0, http_client=SdkHttpClient())
    with pytest.raises(anthropic.AuthenticationError):
        sdk.messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)

    submit_form(browser, f"/console/keys/{key_id}/status")
    wait_for(browser, lambda d: "active again" in main_text(d), "the activate notice")
    assert _key(world, key_id)["status"] == "active"

    browser.find_element(By.PARTIAL_LINK_TEXT, "Archive this key").click()
    wait_for(browser, lambda d: "Archive the API key" in text_of(d, By.TAG_NAME, "h1"), "the confirm page")
    assert "stops working" in main_text(browser)
    shot(browser, "keys-archive-confirm")
    assert_accessible(browser, "/console/keys/{id}/archive")
    assert _key(world, key_id)["status"] == "active"  # nothing happens before the confirmation
    submit_form(browser, f"/console/keys/{key_id}/archive")
    wait_for(browser, lambda d: "was archived" in main_text(d), "the archive notice")
    assert _key(world, key_id)["status"] == "archived"
    assert not browser.find_elements(By.ID, "f-name")  # an archived key offers no changes


def test_the_list_filters_by_workspace_status_and_creator_and_flags_keys(
    console_world: ConsoleWorld, browser: WebDriver
) -> None:
    world = console_world
    workspace = _workspace(world, unique("filters"))
    soon = (datetime.now(UTC) + timedelta(days=3)).isoformat()
    expiring = _api_key(world, unique("expiring"), workspace_id=workspace, expires_at=soon)
    used = _api_key(world, unique("used"), workspace_id=workspace)
    anthropic.Anthropic(
        api_key=used["key"], base_url=world.base_url, max_retries=0, http_client=SdkHttpClient()
    ).messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)
    sign_in(browser, world, ADMIN, "/console/keys")
    Select(browser.find_element(By.ID, "q-workspace")).select_by_value(workspace)
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait_for(browser, lambda d: f"workspace={workspace}" in d.current_url, "the filtered list")
    rows = browser.find_elements(By.CSS_SELECTOR, "main tbody tr")
    assert {r.find_element(By.TAG_NAME, "a").text for r in rows} == {expiring["name"], used["name"]}
    by_name = {r.find_element(By.TAG_NAME, "a").text: r for r in rows}
    assert by_name[expiring["name"]].find_elements(By.CSS_SELECTOR, "[data-flag=expiring]")
    assert not by_name[used["name"]].find_elements(By.CSS_SELECTOR, "[data-flag]")
    # The used key's last use is today (UTC): the usage rollups were written by the gateway's recorder.
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    wait_for(
        browser,
        lambda d: (d.refresh() or True) and today in text_of(d, By.XPATH, f"//tr[td/a[text()='{used['name']}']]"),
        "the used key's last use",
    )
    shot(browser, "keys-list-filtered")
    assert_accessible(browser, "/console/keys?workspace=...")

    wait_page(browser, f"{world.base_url}/console/keys?workspace={workspace}&status=inactive")
    assert "No API keys match." in main_text(browser)
    wait_page(browser, f"{world.base_url}/console/keys?created_by={world.server.user['id']}&workspace={workspace}")
    assert len(browser.find_elements(By.CSS_SELECTOR, "main tbody tr a")) == 2
    wait_page(browser, f"{world.base_url}/console/keys?status=nonsense")
    assert "status" in main_text(browser)
    assert browser.find_element(By.TAG_NAME, "h1").text != "API keys"  # the error page


def test_a_developer_sees_and_creates_keys_only_where_the_policy_allows(
    console_world: ConsoleWorld, browser: WebDriver
) -> None:
    world = console_world
    other = _workspace(world, unique("not-theirs"))
    hidden = _api_key(world, unique("hidden"), workspace_id=other)
    visible = _api_key(world, unique("visible"))  # the default workspace: developers may work there
    seen = _workspace(world, unique("seen"))  # they are a workspace_user there: may see it, not make keys
    email = f"{unique('dev')}@acme.test"
    world.invite(email, "developer")
    with http_session(world, email):
        pass  # the first sign-in accepts the invite
    with world.admin() as api:
        dev = api.get("/v1/organizations/users", params={"email": email}).json()["data"][0]
        joined = api.post(
            f"/v1/organizations/workspaces/{seen}/members",
            json={"user_id": dev["id"], "workspace_role": "workspace_user"},
        )
        assert joined.status_code == 200, joined.text

    sign_in(browser, world, email, "/console/keys")
    text = main_text(browser)
    assert visible["name"] in text
    assert hidden["name"] not in text
    assert other not in browser.page_source  # not even in the workspace filter
    shot(browser, "keys-list-developer")
    assert_accessible(browser, "/console/keys (developer)")
    browser.find_element(By.LINK_TEXT, "Create an API key").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "f-workspace_id"), "the new-key form")
    options = [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "f-workspace_id")).options]
    assert len(options) == 1
    assert other not in options
    assert seen not in options
    shot(browser, "keys-new-developer")
    assert_accessible(browser, "/console/keys/new (developer)")

    with http_session(world, email) as client:
        token = csrf_token(client, world)
        forced = client.post(
            f"{world.base_url}/console/keys/new",
            data={"csrf_token": token, "name": "sneaky", "workspace_id": other},
        )
        assert forced.status_code == 404, forced.text  # a workspace they may not see does not exist for them
        assert "sk-ant-api03-" not in forced.text
        forced = client.post(
            f"{world.base_url}/console/keys/new",
            data={"csrf_token": token, "name": "sneaky", "workspace_id": seen},
        )
        assert forced.status_code == 403, forced.text  # one they see but may not create keys in
        assert "api_keys:write" in forced.text
        assert "sk-ant-api03-" not in forced.text
        assert client.get(f"{world.base_url}/console/keys/{hidden['id']}").status_code == 404
        archive = client.post(f"{world.base_url}/console/keys/{hidden['id']}/archive", data={"csrf_token": token})
        assert archive.status_code == 404
        assert _key(world, hidden["id"])["status"] == "active"
        # Without the CSRF token nothing is created, even where they may.
        refused = client.post(f"{world.base_url}/console/keys/new", data={"name": "no-csrf"})
        assert refused.status_code == 403
        assert "CSRF" in refused.text or "csrf" in refused.text
        made = client.post(f"{world.base_url}/console/keys/new", data={"csrf_token": token, "name": "theirs"})
        assert made.status_code == 200
        assert "sk-ant-api03-" in made.text
        assert made.headers["cache-control"] == "no-store"
