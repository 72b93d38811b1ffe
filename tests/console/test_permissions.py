"""Every console route (``CONSOLE_ROUTES``: every page module, whoever wrote it) refuses what the
permission table refuses: a signed-in ``developer`` (and a ``user``) gets a 403 page for each GET route whose
permission ``may_use`` refuses, sees no menu link to it, and is refused every such POST even with a
valid CSRF token; a POST without the CSRF token is refused; without a session, pages send you to
sign in and actions are refused; every answer carries the security headers."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from orgwarden.console import app as console_app
from orgwarden.console.pages import CONSOLE_ROUTES
from orgwarden.console.render import NAV
from orgwarden.domain.policy import Actor, Permission, allows, may_use
from tests.conftest import TLS
from tests.console.conftest import ADMIN, ConsoleWorld, csrf_token, http_session

ROLES = ["developer", "user"]  # the brief's developer; "user" (no usage:read) is refused even A's own pages
HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
assert console_app.PAGE_MODULES  # importing the console registers every page module's routes


def concrete(path: str) -> str:
    """A path template with its parameters filled in (ids that name nothing)."""
    return re.sub(r"\{[^}]+\}", "nothing_here_0000", path)


def role_may(role: str, permission: Permission) -> bool:
    return may_use(Actor("user", "session", "org", "user", role), permission)


GETS = sorted(path for method, path in CONSOLE_ROUTES if method == "GET")
POSTS = sorted(path for method, path in CONSOLE_ROUTES if method == "POST")


@pytest.fixture(scope="module", params=ROLES)
def member(request: pytest.FixtureRequest, console_world: ConsoleWorld) -> Iterator[tuple[str, httpx.Client]]:
    """A signed-in member with org role ``developer`` or ``user`` (invited through the Admin API)."""
    role = request.param
    email = f"{role}.permissions@acme.test"
    console_world.invite(email, role)
    with http_session(console_world, email) as client:
        yield role, client


@pytest.fixture(scope="module")
def admin(console_world: ConsoleWorld) -> Iterator[httpx.Client]:
    with http_session(console_world, ADMIN) as client:
        yield client


def assert_secure(response: httpx.Response) -> None:
    for name, value in HEADERS.items():
        assert response.headers.get(name) == value, (response.request.url, name, response.headers.get(name))


def test_the_route_table_is_complete() -> None:
    assert ("GET", "/console") in CONSOLE_ROUTES
    for path in ("/console/usage", "/console/cost", "/console/usage.csv", "/console/cost.csv", "/console/claude-code"):
        assert CONSOLE_ROUTES[("GET", path)] is Permission.USAGE_READ
    assert all(isinstance(p, Permission) for p in CONSOLE_ROUTES.values())


def test_registering_a_route_without_a_permission_fails() -> None:
    from orgwarden.console.pages import ConsolePages

    with pytest.raises(TypeError, match="must declare a Permission"):
        ConsolePages().page("GET", "/console/nothing", permission="usage:read")  # type: ignore[arg-type]


def test_a_member_is_refused_every_page_the_table_refuses(
    console_world: ConsoleWorld, member: tuple[str, httpx.Client]
) -> None:
    role, client = member
    refused = [path for path in GETS if not role_may(role, CONSOLE_ROUTES[("GET", path)])]
    if role == "user":
        assert "/console/usage" in refused  # the table-driven check below is not vacuous
    for path in GETS:
        permission = CONSOLE_ROUTES[("GET", path)]
        page = client.get(console_world.base_url + concrete(path))
        assert_secure(page)
        assert page.status_code != 500, (path, page.text)
        if path in refused:
            assert page.status_code == 403, (path, page.status_code)
            assert permission.value in page.text
            assert f"({role})" in page.text
        elif "{" not in path and allows(Actor("user", "t", "o", "u", role), permission):
            assert page.status_code == 200, (path, page.status_code, page.text[:500])
        elif "{" not in path:  # granted only in some workspaces: open, or a 403 saying there is none here
            assert page.status_code in (200, 403), (path, page.status_code, page.text[:500])
    # The menu links only to what the role may use.
    overview = client.get(f"{console_world.base_url}/console")
    menu = re.search(r'<nav aria-label="Console">(.*?)</nav>', overview.text, re.S)
    assert menu is not None
    links = set(re.findall(r'href="([^"]+)"', menu.group(1)))
    assert links == {item.path for item in NAV if role_may(role, item.permission)}
    assert not links & set(refused)


def test_a_member_is_refused_every_action_the_table_refuses(
    console_world: ConsoleWorld, member: tuple[str, httpx.Client]
) -> None:
    role, client = member
    token = csrf_token(client, console_world)
    for path in POSTS:
        if role_may(role, CONSOLE_ROUTES[("POST", path)]):
            continue  # allowed in some workspace: the service decides (its own tests)
        response = client.post(console_world.base_url + concrete(path), data={"csrf_token": token})
        assert response.status_code == 403, (path, response.status_code, response.text[:300])
        assert_secure(response)
        assert CONSOLE_ROUTES[("POST", path)].value in response.text


def test_an_action_without_the_csrf_token_is_refused(console_world: ConsoleWorld, admin: httpx.Client) -> None:
    if not POSTS:
        pytest.skip("no console action is registered yet (they come with the workspace, key and audit pages)")
    for path in POSTS:
        for data in ({}, {"csrf_token": "0" * 64}):
            response = admin.post(console_world.base_url + concrete(path), data=data)
            assert response.status_code == 403, (path, data, response.status_code, response.text[:300])
            assert "CSRF" in response.text
            assert_secure(response)


def test_without_a_session_pages_send_you_to_sign_in_and_actions_are_refused(console_world: ConsoleWorld) -> None:
    with httpx.Client(base_url=console_world.base_url, follow_redirects=False, timeout=30, verify=TLS) as anonymous:
        for path in GETS:
            response = anonymous.get(concrete(path))
            assert response.status_code == 303, (path, response.status_code)
            assert response.headers["location"].startswith("/auth/login?next=%2Fconsole")
            assert_secure(response)
        for path in POSTS:
            response = anonymous.post(concrete(path), data={"csrf_token": "x"})
            assert response.status_code == 401, (path, response.status_code)
            assert_secure(response)
        # A cookie that opens no session is no session.
        anonymous.cookies.set("ow_session", "ows_forged")
        assert anonymous.get("/console").status_code == 303


def test_every_page_carries_the_security_headers(console_world: ConsoleWorld, admin: httpx.Client) -> None:
    for path in [*GETS, "/console/static/console.css", "/console/static/console.js", "/console/no-such-page"]:
        response = admin.get(console_world.base_url + concrete(path))
        assert response.status_code != 500, (path, response.text[:300])
        assert_secure(response)
    assert admin.get(f"{console_world.base_url}/console/no-such-page").status_code == 404
    assert admin.get(f"{console_world.base_url}/console/static/..%2Fpages.py").status_code == 404


def test_the_tenant_restriction_applies_to_the_console(console_world: ConsoleWorld, admin: httpx.Client) -> None:
    url = f"{console_world.base_url}/console"
    other = admin.get(url, headers={"anthropic-allowed-org-ids": str(uuid.uuid4())})
    assert other.status_code == 403
    assert "Access restricted by network policy" in other.text
    assert_secure(other)
    malformed = admin.get(url, headers={"anthropic-allowed-org-ids": "not-a-uuid"})
    assert malformed.status_code == 400
    assert_secure(malformed)
