"""MCP tunnels in the console, in Chromium against a real server: create, certificates, reveal and
rotate the token (audited), archive behind confirm pages; members who may only look get no controls,
and are refused when they force them."""

from __future__ import annotations

import uuid
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

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
from tests.tunnels.certs import make

BETA = {"anthropic-beta": "mcp-tunnels-2026-05-19"}


def check_token(world: ConsoleWorld, token: str) -> dict[str, Any]:
    with world.admin() as api:
        response = api.post("/v1/organizations/tunnels/check_token", json={"tunnel_token": token}, headers=BETA)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def events(world: ConsoleWorld, action: str, target_id: str) -> list[dict[str, Any]]:
    with world.admin() as api:
        response = api.get("/v1/organizations/audit_logs", params={"action": action, "target_id": target_id})
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def click(driver: WebDriver, css: str) -> None:
    driver.find_element(By.CSS_SELECTOR, css).click()


def main_text(driver: WebDriver) -> str:
    text: str = driver.find_element(By.ID, "main").text
    return text


def test_an_admin_creates_a_tunnel_reveals_rotates_and_archives_it(
    console_world: ConsoleWorld, browser: WebDriver
) -> None:
    base = console_world.base_url
    name = f"docs-mcp-{uuid.uuid4().hex[:6]}"
    sign_in(browser, console_world, ADMIN, "/console/tunnels")
    shot(browser, "tunnels-list")
    assert_accessible(browser, "/console/tunnels")

    browser.find_element(By.ID, "f-display_name").send_keys(name)
    click(browser, "form.create-tunnel button[type=submit]")
    wait_for(browser, lambda d: "notice=tunnel_created" in d.current_url, "the new tunnel's page")
    tunnel_id = browser.current_url.split("/console/tunnels/")[1].split("?")[0]
    assert browser.find_element(By.TAG_NAME, "h1").text == name
    assert "Tunnel created" in main_text(browser)
    assert events(console_world, "tunnel.create", tunnel_id)

    # a CA certificate, pasted as PEM
    browser.find_element(By.ID, "f-ca_certificate_pem").send_keys(make().pem)
    click(browser, "form.add-certificate button[type=submit]")
    wait_for(browser, lambda d: "notice=certificate_added" in d.current_url, "the certificate added")
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.certificates tbody tr")) == 1
    assert "trusted" in browser.find_element(By.CSS_SELECTOR, "table.certificates").text
    shot(browser, "tunnel-detail")
    assert_accessible(browser, "/console/tunnels/{id}")

    # reveal: the token is in this answer only, it opens the tunnel, and the reveal is audited
    assert not events(console_world, "tunnel.token.reveal", tunnel_id)
    click(browser, f"form[action='/console/tunnels/{tunnel_id}/reveal'] button")
    box = wait_for(browser, lambda d: d.find_elements(By.ID, "tunnel-token"), "the revealed token")
    token = box[0].get_attribute("value")
    assert token
    assert "/reveal" in browser.current_url
    assert token not in browser.current_url
    assert check_token(console_world, token)["tunnel_id"] == tunnel_id
    shot(browser, "tunnel-token-revealed")
    assert_accessible(browser, "/console/tunnels/{id}/reveal")
    (revealed,) = events(console_world, "tunnel.token.reveal", tunnel_id)
    assert token not in str(revealed)
    wait_page(browser, f"{base}/console/audit?action=tunnel.token.reveal&target_id={tunnel_id}")
    assert revealed["id"] in browser.page_source

    # rotate, with a reason, from its confirm page: the old token stops working
    wait_page(browser, f"{base}/console/tunnels/{tunnel_id}/rotate")
    shot(browser, "tunnel-rotate-confirm")
    assert_accessible(browser, "/console/tunnels/{id}/rotate")
    browser.find_element(By.ID, "f-reason").send_keys("quarterly rotation")
    click(browser, "main form button.danger")
    box = wait_for(browser, lambda d: d.find_elements(By.ID, "tunnel-token"), "the new token")
    rotated = box[0].get_attribute("value")
    assert rotated
    assert rotated != token
    assert check_token(console_world, token)["valid"] is False
    assert check_token(console_world, rotated)["valid"] is True
    assert events(console_world, "tunnel.token.rotate", tunnel_id)[0]["details"]["reason"] == "quarterly rotation"

    # archive the certificate, then the tunnel, each through its confirm page
    wait_page(browser, f"{base}/console/tunnels/{tunnel_id}")
    browser.find_element(By.PARTIAL_LINK_TEXT, "Archive…").click()
    wait_for(browser, lambda d: d.current_url.endswith("/archive"), "the certificate's confirm page")
    assert "This will archive the certificate" in main_text(browser)
    shot(browser, "tunnel-certificate-archive-confirm")
    assert_accessible(browser, "/console/tunnels/{id}/certificates/{id}/archive")
    click(browser, "form.confirm-form button.danger")
    wait_for(browser, lambda d: "notice=certificate_archived" in d.current_url, "the certificate archived")
    assert "archived" in browser.find_element(By.CSS_SELECTOR, "table.certificates").text

    browser.find_element(By.LINK_TEXT, "Archive tunnel…").click()
    wait_for(browser, lambda d: d.current_url.endswith(f"/{tunnel_id}/archive"), "the tunnel's confirm page")
    page = main_text(browser)
    assert "cannot be undone" in page
    assert "no longer open the tunnel" in page
    shot(browser, "tunnel-archive-confirm")
    assert_accessible(browser, "/console/tunnels/{id}/archive")
    click(browser, "form.confirm-form button.danger")
    wait_for(browser, lambda d: "notice=tunnel_archived" in d.current_url, "the tunnel archived")
    assert "Tunnel archived" in main_text(browser)
    assert not browser.find_elements(By.CSS_SELECTOR, f"form[action='/console/tunnels/{tunnel_id}/reveal']")
    assert check_token(console_world, rotated)["valid"] is False
    assert events(console_world, "tunnel.archive", tunnel_id)
    shot(browser, "tunnel-archived")
    assert_accessible(browser, "/console/tunnels/{id} (archived)")

    wait_page(browser, f"{base}/console/tunnels?include_archived=true")
    assert name in main_text(browser)
    wait_page(browser, f"{base}/console/tunnels")
    assert name not in main_text(browser)


def test_a_bad_certificate_is_refused_with_a_page_naming_the_problem(console_world: ConsoleWorld) -> None:
    with console_world.admin() as api:
        tunnel = api.post("/v1/organizations/tunnels", json={"display_name": "pem-check"}, headers=BETA).json()
    with http_session(console_world, ADMIN) as client:
        response = client.post(
            f"{console_world.base_url}/console/tunnels/{tunnel['id']}/certificates",
            data={"csrf_token": csrf_token(client, console_world), "ca_certificate_pem": "not a certificate"},
        )
    assert response.status_code == 400, response.text
    assert "ca_certificate_pem" in response.text or "PEM" in response.text


def test_a_member_sees_tunnels_without_controls_and_is_refused_when_forcing_them(
    console_world: ConsoleWorld, browser: WebDriver
) -> None:
    base = console_world.base_url
    login = f"user-{uuid.uuid4().hex[:6]}@acme.test"
    console_world.invite(login, "user")
    with console_world.admin() as api:
        tunnel = api.post("/v1/organizations/tunnels", json={"display_name": "shared-mcp"}, headers=BETA).json()
    tunnel_id = tunnel["id"]

    sign_in(browser, console_world, login, "/console/tunnels")
    assert "shared-mcp" in main_text(browser)
    assert not browser.find_elements(By.CSS_SELECTOR, "form.create-tunnel")
    shot(browser, "tunnels-list-member")
    assert_accessible(browser, "/console/tunnels (member)")
    wait_page(browser, f"{base}/console/tunnels/{tunnel_id}")
    assert browser.find_element(By.TAG_NAME, "h1").text == "shared-mcp"
    assert not browser.find_elements(By.CSS_SELECTOR, "main form")  # no reveal, certificate or other form
    assert "Archive" not in main_text(browser)
    assert "Rotate" not in main_text(browser)
    assert "audit log" not in main_text(browser)  # no link to a page they may not open
    shot(browser, "tunnel-detail-member")
    assert_accessible(browser, "/console/tunnels/{id} (member)")

    with http_session(console_world, login) as client:
        token = csrf_token(client, console_world)
        for path in (f"/console/tunnels/{tunnel_id}/reveal", f"/console/tunnels/{tunnel_id}/rotate",
                     f"/console/tunnels/{tunnel_id}/archive", f"/console/tunnels/{tunnel_id}/certificates",
                     "/console/tunnels"):  # fmt: skip
            refused = client.post(base + path, data={"csrf_token": token, "display_name": "x"})
            assert refused.status_code == 403, (path, refused.status_code)
            assert "tunnels:write" in refused.text
        for path in (f"/console/tunnels/{tunnel_id}/rotate", f"/console/tunnels/{tunnel_id}/archive"):
            assert client.get(base + path).status_code == 403
    assert not events(console_world, "tunnel.token.reveal", tunnel_id)
    assert not events(console_world, "tunnel.archive", tunnel_id)
    with console_world.admin() as api:
        assert api.get(f"/v1/organizations/tunnels/{tunnel_id}", headers=BETA).json()["archived_at"] is None


def test_an_unknown_tunnel_is_a_404_page(console_world: ConsoleWorld) -> None:
    with http_session(console_world, ADMIN) as client:
        response = client.get(f"{console_world.base_url}/console/tunnels/tunnel_nope")
    assert response.status_code == 404
    assert "not found" in response.text
