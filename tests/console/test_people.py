"""Console users, invites and groups in Chromium: invite (the link shown once, the invited person
joining by signing in through the IdP), change a role, remove a user after a confirm page that lists
what offboarding revokes, delete an invite, groups and their roles. Screenshots and axe on every page."""

from __future__ import annotations

import re
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.conftest import cli, unique
from tests.console.conftest import (
    ADMIN,
    ConsoleWorld,
    assert_accessible,
    csrf_token,
    http_session,
    new_browser,
    shot,
    sign_in,
    wait_for,
    wait_page,
)
from tests.console.posting import main_text, submit_form, text_of


def _user(world: ConsoleWorld, email: str) -> dict[str, Any] | None:
    with world.admin() as api:
        response = api.get("/v1/organizations/users", params={"email": email})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows[0] if rows else None


def _member(world: ConsoleWorld, role: str) -> tuple[str, dict[str, Any]]:
    """A member with ``role``: invited through the Admin API, joined by signing in (httpx)."""
    email = f"{unique('person')}@acme.test"
    world.invite(email, role)
    with http_session(world, email):
        pass  # the first sign-in accepts the invite
    user = _user(world, email)
    assert user is not None
    return email, user


def test_an_invite_link_is_shown_once_and_the_person_joins_by_signing_in(
    console_world: ConsoleWorld, browser: WebDriver
) -> None:
    world = console_world
    sign_in(browser, world, ADMIN, "/console/invites")
    shot(browser, "invites")
    assert_accessible(browser, "/console/invites")
    email = f"{unique('newcomer')}@acme.test"
    browser.find_element(By.ID, "f-email").send_keys(email)
    Select(browser.find_element(By.ID, "f-role")).select_by_value("developer")
    submit_form(browser, "/console/invites")
    box = wait_for(browser, lambda d: d.find_elements(By.ID, "accept-link"), "the accept link")[0]
    link = str(box.get_attribute("value"))
    assert re.fullmatch(re.escape(world.base_url) + r"/invites/accept#token=[A-Za-z0-9_\-]+", link), link
    token = link.split("#token=", 1)[1]
    assert browser.find_element(By.CSS_SELECTOR, "button.copy[data-copy=accept-link]").is_displayed()
    shot(browser, "invites-created")
    assert_accessible(browser, "/console/invites (created)")
    assert token not in browser.current_url
    wait_page(browser, f"{world.base_url}/console/invites")
    assert email in main_text(browser)
    assert token not in browser.page_source
    assert token not in world.server.log()

    # The invited person signs in through the IdP (their own browser) and is a developer.
    world.idp.account(email, name="Newcomer")
    with new_browser() as theirs:
        sign_in(theirs, world, email, "/console")
        assert email in theirs.page_source or "Newcomer" in theirs.page_source
    joined = _user(world, email)
    assert joined is not None
    assert joined["role"] == "developer"
    with world.admin() as api:
        invites = api.get("/v1/organizations/invites", params={"email": email}).json()["data"]
    assert [i["status"] for i in invites] == ["accepted"]


def test_an_admin_changes_a_role(console_world: ConsoleWorld, browser: WebDriver) -> None:
    world = console_world
    email, user = _member(world, "developer")
    sign_in(browser, world, ADMIN, "/console/users")
    shot(browser, "users")
    assert_accessible(browser, "/console/users")
    browser.find_element(By.LINK_TEXT, email).click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "f-role"), "the user page")
    shot(browser, "users-detail")
    assert_accessible(browser, "/console/users/{id}")
    Select(browser.find_element(By.ID, "f-role")).select_by_value("billing")
    submit_form(browser, f"/console/users/{user['id']}/role")
    wait_for(browser, lambda d: "role was changed" in main_text(d), "the notice")
    changed = _user(world, email)
    assert changed is not None
    assert changed["role"] == "billing"


def test_removal_confirms_with_exactly_what_offboarding_revokes(
    console_world: ConsoleWorld, browser: WebDriver
) -> None:
    world = console_world
    email = f"{unique('leaver')}@acme.test"
    world.invite(email, "developer")
    with http_session(world, email) as leaver:  # a live browser session of theirs
        token = csrf_token(leaver, world)
        made = leaver.post(f"{world.base_url}/console/keys/new", data={"csrf_token": token, "name": unique("theirs")})
        assert made.status_code == 200, made.text
        key_id = re.search(r'href="/console/keys/(apikey_[A-Za-z0-9]+)"', made.text)
        assert key_id, made.text
        user = _user(world, email)
        assert user is not None
        with world.admin() as api:
            ws = api.post("/v1/organizations/workspaces", json={"name": unique("leaving")}).json()["id"]
            added = api.post(
                f"/v1/organizations/workspaces/{ws}/members",
                json={"user_id": user["id"], "workspace_role": "workspace_user"},
            )
            assert added.status_code == 200, added.text

        sign_in(browser, world, ADMIN, f"/console/users/{user['id']}")
        browser.find_element(By.PARTIAL_LINK_TEXT, "Remove this user").click()
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-revoke]"), "the confirm page")
        shot(browser, "users-remove-confirm")
        assert_accessible(browser, "/console/users/{id}/remove")

        def listed(kind: str) -> set[str]:
            items = browser.find_elements(By.CSS_SELECTOR, f"[data-revoke={kind}] li[data-id]")
            return {str(li.get_attribute("data-id")) for li in items}

        shown = {
            kind: listed(kind) for kind in ("api_keys", "admin_api_keys", "user_tokens", "user_sessions", "workspaces")
        }
        assert shown["api_keys"] == {key_id.group(1)}
        assert shown["workspaces"] == {ws}
        assert len(shown["user_sessions"]) == 1
        assert _user(world, email) is not None  # the preview changed nothing
        assert leaver.get(f"{world.base_url}/auth/session", headers={"accept": "application/json"}).status_code == 200
        with world.admin() as api:
            assert api.get(f"/v1/organizations/api_keys/{key_id.group(1)}").json()["status"] == "active"

        submit_form(browser, f"/console/users/{user['id']}/remove")
        wait_for(browser, lambda d: "removed and offboarded" in main_text(d), "the notice")
        assert _user(world, email) is None
        with world.admin() as api:
            for listed_key in shown["api_keys"]:
                assert api.get(f"/v1/organizations/api_keys/{listed_key}").json()["status"] == "inactive"
            events = api.get("/v1/organizations/audit_logs", params={"action": "user.remove", "target_id": user["id"]})
        assert leaver.get(f"{world.base_url}/auth/session", headers={"accept": "application/json"}).status_code == 401
    # The audit event of the removal lists the very same things.
    assert events.status_code == 200, events.text
    [event] = events.json()["data"]
    details = event["details"]
    assert set(details["deactivated_api_keys"]) == shown["api_keys"]
    assert set(details["revoked_admin_api_keys"]) == shown["admin_api_keys"]
    assert set(details["revoked_user_tokens"]) == shown["user_tokens"]
    assert set(details["revoked_user_sessions"]) == shown["user_sessions"]
    assert set(details["workspaces"]) == shown["workspaces"]


def test_the_last_admin_cannot_be_removed_and_the_confirm_page_says_why(
    console_world: ConsoleWorld, browser: WebDriver
) -> None:
    world = console_world
    root = _user(world, ADMIN)
    assert root is not None
    sign_in(browser, world, ADMIN, f"/console/users/{root['id']}/remove")
    assert "last admin" in main_text(browser)
    shot(browser, "users-remove-refused")
    assert_accessible(browser, "/console/users/{id}/remove (refused)")


def test_an_invite_is_deleted_after_confirmation(console_world: ConsoleWorld, browser: WebDriver) -> None:
    world = console_world
    email = f"{unique('unwanted')}@acme.test"
    with world.admin() as api:
        invite = api.post("/v1/organizations/invites", json={"email": email, "role": "user"}).json()
    sign_in(browser, world, ADMIN, "/console/invites")
    browser.find_element(By.CSS_SELECTOR, f"a[href='/console/invites/{invite['id']}/delete']").click()
    wait_for(browser, lambda d: "Delete the invite" in text_of(d, By.TAG_NAME, "h1"), "the confirm page")
    shot(browser, "invites-delete-confirm")
    assert_accessible(browser, "/console/invites/{id}/delete")
    submit_form(browser, f"/console/invites/{invite['id']}/delete")
    wait_for(browser, lambda d: "invite was deleted" in main_text(d), "the notice")
    with world.admin() as api:
        assert api.get(f"/v1/organizations/invites/{invite['id']}").json()["status"] == "deleted"


def test_groups_show_their_roles_and_members(console_world: ConsoleWorld, browser: WebDriver) -> None:
    world = console_world
    email, user = _member(world, "user")
    sign_in(browser, world, ADMIN, "/console/groups")
    name = unique("platform")
    browser.find_element(By.ID, "f-name").send_keys(name)
    submit_form(browser, "/console/groups")
    wait_for(browser, lambda d: "group was created" in main_text(d), "the new group")
    group_id = browser.current_url.split("/console/groups/", 1)[1].split("?", 1)[0]
    cli(world.server.db, "groups", "set-roles", group_id, "--org-role", "developer")
    Select(browser.find_element(By.ID, "f-user_id")).select_by_visible_text(email)
    submit_form(browser, f"/console/groups/{group_id}/members")
    wait_for(browser, lambda d: "added to the group" in main_text(d), "the member notice")
    assert email in main_text(browser)
    assert "Developer" in main_text(browser)  # the group's role, named as rbac_roles names it
    shot(browser, "groups-detail")
    assert_accessible(browser, "/console/groups/{id}")
    promoted = _user(world, email)
    assert promoted is not None
    assert promoted["role"] == "developer"
    with world.admin() as api:
        members = api.get(f"/v1/organizations/rbac_groups/{group_id}/members").json()["data"]
    assert [m["user_id"] for m in members] == [user["id"]]
    wait_page(browser, f"{world.base_url}/console/groups")
    row = browser.find_element(By.XPATH, f"//tr[td/a[text()='{name}']]")
    assert "Developer" in row.text
    shot(browser, "groups")
    assert_accessible(browser, "/console/groups")


def test_a_developer_cannot_change_people(console_world: ConsoleWorld, browser: WebDriver) -> None:
    world = console_world
    email, _ = _member(world, "developer")
    root = _user(world, ADMIN)
    assert root is not None
    sign_in(browser, world, email, "/console/users")
    nav = browser.find_element(By.CSS_SELECTOR, "nav[aria-label=Console]").text
    assert "Users" in nav
    assert "Invites" not in nav
    wait_page(browser, f"{world.base_url}/console/users/{root['id']}")
    assert not browser.find_elements(By.ID, "f-role")
    assert not browser.find_elements(By.PARTIAL_LINK_TEXT, "Remove this user")
    shot(browser, "users-detail-developer")
    assert_accessible(browser, "/console/users/{id} (developer)")
    with http_session(world, email) as client:
        token = csrf_token(client, world)
        for path, data in (
            (f"/console/users/{root['id']}/role", {"role": "user"}),
            (f"/console/users/{root['id']}/remove", {}),
            ("/console/invites", {"email": "x@acme.test", "role": "admin"}),
            ("/console/groups", {"name": "nope"}),
        ):
            response = client.post(world.base_url + path, data={"csrf_token": token, **data})
            assert response.status_code == 403, (path, response.text)
        assert client.get(f"{world.base_url}/console/invites").status_code == 403
        assert client.get(f"{world.base_url}/console/users/{root['id']}/remove").status_code == 403
    still = _user(world, ADMIN)
    assert still is not None
    assert still["role"] == "admin"
