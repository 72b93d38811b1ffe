"""HTTP-level checks of the keys, users, invites and groups pages: sign-in required, security headers,
refusals named, a form error shown on the form (not a 500), nothing secret in a redirect."""

from __future__ import annotations

import re

import httpx

from orgwarden.console import app as console_app
from orgwarden.console.pages import CONSOLE_ROUTES
from tests.conftest import TLS, unique
from tests.console.conftest import ADMIN, ConsoleWorld, csrf_token, http_session

MINE = ("/console/keys", "/console/users", "/console/invites", "/console/groups")
assert console_app.PAGE_MODULES  # importing the app registers every console route


def _mine() -> list[tuple[str, str]]:
    return sorted(key for key in CONSOLE_ROUTES if key[1].startswith(MINE))


def _concrete(path: str) -> str:
    return re.sub(r"\{[a-z_]+\}", "x_1", path)


def test_every_keys_and_people_route_needs_a_session(console_world: ConsoleWorld) -> None:
    routes = _mine()
    assert len(routes) >= 20
    with httpx.Client(base_url=console_world.base_url, follow_redirects=False, timeout=30, verify=TLS) as anonymous:
        for method, path in routes:
            response = anonymous.request(
                method, _concrete(path), data={"csrf_token": "x"} if method == "POST" else None
            )
            if method == "GET":
                assert response.status_code == 303, (path, response.status_code)
                assert response.headers["location"].startswith("/auth/login?next=%2Fconsole%2F"), path
            else:
                assert response.status_code == 401, (path, response.status_code)
            assert response.headers["x-frame-options"] == "DENY"


def test_pages_carry_the_security_headers_and_refusals_name_the_problem(console_world: ConsoleWorld) -> None:
    world = console_world
    with http_session(world, ADMIN) as admin:
        for path in ("/console/keys", "/console/keys/new", "/console/users", "/console/invites", "/console/groups"):
            page = admin.get(world.base_url + path)
            assert page.status_code == 200, (path, page.text)
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert page.headers["cache-control"] == "no-store"
            assert "<script>" not in page.text
            assert ' style="' not in page.text
        missing = admin.get(f"{world.base_url}/console/keys/apikey_nope")
        assert missing.status_code == 404
        assert "apikey_nope" in missing.text
        assert admin.get(f"{world.base_url}/console/users/user_nope").status_code == 404
        assert admin.get(f"{world.base_url}/console/groups/rbacgrp_nope").status_code == 404
        too_long = admin.get(f"{world.base_url}/console/keys", params={"workspace": "w" * 500})
        assert too_long.status_code == 400
        assert "workspace" in too_long.text


def test_a_refused_invite_is_shown_on_its_form_and_nothing_leaks(console_world: ConsoleWorld) -> None:
    world = console_world
    email = f"{unique('twice')}@acme.test"
    with http_session(world, ADMIN) as admin:
        token = csrf_token(admin, world)
        first = admin.post(
            f"{world.base_url}/console/invites", data={"csrf_token": token, "email": email, "role": "user"}
        )
        assert first.status_code == 200, first.text
        assert "#token=" in first.text
        again = admin.post(
            f"{world.base_url}/console/invites", data={"csrf_token": token, "email": email, "role": "user"}
        )
        assert again.status_code == 400
        assert "pending invite" in again.text
        assert f'value="{email}"' in again.text  # the form keeps what was typed
        assert "#token=" not in again.text
        admin_role = admin.post(
            f"{world.base_url}/console/invites",
            data={"csrf_token": token, "email": f"{unique('boss')}@acme.test", "role": "admin"},
        )
        assert admin_role.status_code == 400
        assert "admin" in admin_role.text
        bad_key = admin.post(
            f"{world.base_url}/console/keys/new", data={"csrf_token": token, "name": "x", "expires": "2001-01-01"}
        )
        assert bad_key.status_code == 400
        assert "in the past" in bad_key.text
        assert "sk-ant-api03-" not in bad_key.text


def test_a_member_without_key_rights_is_refused_the_new_key_page(console_world: ConsoleWorld) -> None:
    world = console_world
    email = f"{unique('plain')}@acme.test"
    world.invite(email, "user")
    with http_session(world, email) as member:
        page = member.get(f"{world.base_url}/console/keys/new")
        assert page.status_code == 403
        assert "api_keys:write" in page.text
        listing = member.get(f"{world.base_url}/console/keys")
        assert listing.status_code == 200  # workspace roles may grant api_keys:read: the list is theirs, empty
        assert "Create an API key" not in listing.text
