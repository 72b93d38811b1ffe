"""The OpenID Connect browser flow end to end: a real IdP (npm oidc-provider), a real orgwarden server,
and an httpx "browser" that fills the IdP's sign-in form. Nothing in the flow is mocked; bad ID
tokens come from the IdP itself (its test hook re-signs or alters the next ID token it issues)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import select

from orgwarden.api.routes.auth import open_login_state, seal_login_state
from orgwarden.crypto import SecretBox
from orgwarden.domain.clock import utcnow
from orgwarden.storage.tables import AuditEvent, Invite, User
from orgwarden.storage.uow import UnitOfWork
from tests.conftest import TLS, Server, query_db, unique
from tests.identity.conftest import SignInWorld, browser, csrf_of, location, sign_in


def audit_events(server: Server, action: str) -> list[AuditEvent]:
    async def read(uow: UnitOfWork) -> list[AuditEvent]:
        stmt = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        return list((await uow.audit.session.scalars(stmt)).all())

    return query_db(server.db, read)


def last_refusal(server: Server, action: str = "auth.sign_in") -> dict[str, Any]:
    refused = [e for e in audit_events(server, action) if e.outcome == "refused"]
    assert refused, f"no refused {action} event"
    return dict(refused[-1].details)


def set_user(server: Server, email: str, **values: Any) -> None:
    async def write(uow: UnitOfWork) -> None:
        user = await uow.users.by_email(server.organization["id"], email)
        assert user is not None
        for name, value in values.items():
            setattr(user, name, value)
        await uow.commit()

    query_db(server.db, write)


def add_user(server: Server, email: str, role: str = "developer") -> None:
    from orgwarden import ids

    async def write(uow: UnitOfWork) -> None:
        uow.users.add(
            User(
                id=ids.new_id(ids.USER),
                organization_id=server.organization["id"],
                email=email,
                name=email,
                role=role,
                added_at=utcnow(),
                removed_at=None,
            )
        )
        await uow.commit()

    query_db(server.db, write)


def test_a_member_signs_in_gets_a_session_cookie_and_signs_out_with_csrf(world: SignInWorld) -> None:
    srv = world.server
    world.idp.account("root@acme.test", groups=["engineering", "admins"])
    with browser() as b:
        callback = sign_in(b, srv.base_url, "root@acme.test", stop_at_callback=True)
        landed = b.get(location(callback))
        assert landed.status_code == 303, landed.text
        cookie = next(v for k, v in landed.headers.multi_items() if k == "set-cookie" and v.startswith("ow_session="))
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie or "SameSite=Lax" in cookie
        assert "Path=/" in cookie
        assert "Secure" not in cookie  # served over plain http here; https sets it
        assert b.cookies.get("ow_session", path="/").startswith("ow-ses01-")
        me = b.get(f"{srv.base_url}/auth/session", headers={"accept": "application/json"})
        assert me.status_code == 200
        assert me.json()["user"]["email"] == "root@acme.test"
        assert me.json()["user"]["role"] == "admin"
        signed_in = [e for e in audit_events(srv, "auth.sign_in") if e.outcome == "success"][-1]
        assert signed_in.details["groups"] == ["engineering", "admins"]  # what the IdP said, on record

        # CSRF: no token, a wrong token → refused and audited; the session lives on.
        refused = b.post(f"{srv.base_url}/auth/logout", headers={"accept": "application/json"})
        assert refused.status_code == 403
        assert refused.json()["error"]["type"] == "permission_error"
        assert "csrf" in refused.json()["error"]["message"].lower()
        wrong = b.post(f"{srv.base_url}/auth/logout", data={"csrf_token": "0" * 64})
        assert wrong.status_code == 403
        assert "CSRF" in wrong.text
        assert last_refusal(srv, "auth.sign_out")["reason"] == "csrf"
        assert b.get(f"{srv.base_url}/auth/session", headers={"accept": "application/json"}).status_code == 200

        token = csrf_of(b, srv.base_url)
        out = b.post(f"{srv.base_url}/auth/logout", data={"csrf_token": token})
        assert out.status_code == 200, out.text
        assert "signed out" in out.text.lower()
        assert [e for e in audit_events(srv, "auth.sign_out") if e.outcome == "success"]
        after = b.get(f"{srv.base_url}/auth/session", headers={"accept": "application/json"})
        assert after.status_code == 401


def test_a_revoked_session_cookie_stops_working_even_if_kept(world: SignInWorld) -> None:
    srv = world.server
    with browser() as b:
        sign_in(b, srv.base_url, "root@acme.test")
        kept = b.cookies.get("ow_session", path="/")
        b.post(f"{srv.base_url}/auth/logout", headers={"x-csrf-token": csrf_of(b, srv.base_url)})
    with httpx.Client(cookies={"ow_session": kept}, verify=TLS) as thief:
        assert thief.get(f"{srv.base_url}/auth/session").status_code == 401


def test_a_pending_invite_is_accepted_on_first_sign_in(world: SignInWorld) -> None:
    srv = world.server
    email = f"{unique('invitee')}@acme.test"
    with srv.http() as admin:
        created = admin.post("/v1/organizations/invites", json={"email": email, "role": "developer"})
        assert created.status_code == 200, created.text
    with browser() as b:
        landed = sign_in(b, srv.base_url, email)
        assert landed.status_code == 200, landed.text
        me = b.get(f"{srv.base_url}/auth/session", headers={"accept": "application/json"}).json()
    assert me["user"]["email"] == email
    assert me["user"]["role"] == "developer"

    async def invite_status(uow: UnitOfWork) -> str:
        invite = await uow.invites.session.scalar(select(Invite).where(Invite.email == email))
        assert invite is not None
        return invite.status

    assert query_db(srv.db, invite_status) == "accepted"


def test_an_unknown_email_is_refused_with_a_clear_page_and_an_audit_event(world: SignInWorld) -> None:
    srv = world.server
    with browser() as b:
        page = sign_in(b, srv.base_url, "stranger@elsewhere.test")
        assert page.status_code == 403
        assert "stranger@elsewhere.test is not a member of this organization" in page.text
        assert page.headers["content-type"].startswith("text/html")
        assert "ow_session" not in b.cookies
    refusal = last_refusal(srv)
    assert refusal["reason"] == "unknown_user"
    assert refusal["email"] == "stranger@elsewhere.test"


@pytest.mark.parametrize("state", ["deactivated_at", "removed_at"])
def test_deactivated_or_removed_users_are_refused(world: SignInWorld, state: str) -> None:
    srv = world.server
    email = f"{unique('leaver')}@acme.test"
    add_user(srv, email)
    with browser() as b:
        assert sign_in(b, srv.base_url, email).status_code == 200
        set_user(srv, email, **{state: utcnow()})
        # the live session is refused at once, and signing in again too
        assert b.get(f"{srv.base_url}/auth/session", headers={"accept": "application/json"}).status_code == 401
        again = sign_in(b, srv.base_url, email)
    assert again.status_code == 403
    if state == "deactivated_at":
        assert "deactivated" in again.text
        assert last_refusal(srv)["reason"] == "user_deactivated"
    else:  # a removed user is no member any more
        assert "not a member" in again.text


@pytest.mark.parametrize(
    ("mode", "reason", "says"),
    [
        ("forged", "id_token_signature", "signature"),
        ("bad_signature", "id_token_signature", "signature"),
        ("unsigned", "id_token_signature", "signature"),
        ("expired", "id_token_expired", "expired"),
        ("wrong_audience", "id_token_audience", "aud"),
        ("wrong_issuer", "id_token_issuer", "iss"),
        ("wrong_nonce", "id_token_nonce", "nonce"),
    ],
)
def test_bad_id_tokens_are_refused_with_a_clear_error_and_audited(
    world: SignInWorld, mode: str, reason: str, says: str
) -> None:
    srv = world.server
    world.idp.tamper_next_id_token(mode)
    with browser() as b:
        b.headers["accept"] = "application/json"
        refused = sign_in(b, srv.base_url, "root@acme.test")
        assert refused.status_code == 401, refused.text
        body = refused.json()
        assert body["type"] == "error"
        assert body["error"]["type"] == "authentication_error"
        assert says in body["error"]["message"]
        assert body["error"]["details"]["error_code"] == reason
        assert "ow_session" not in b.cookies
    assert last_refusal(srv)["reason"] == reason


def test_a_replayed_authorization_code_is_refused(world: SignInWorld) -> None:
    srv = world.server
    with browser() as b:
        callback = sign_in(b, srv.base_url, "root@acme.test", stop_at_callback=True)
        login_cookie = b.cookies.get("ow_login", path="/auth")
        url = location(callback)
        assert b.get(url).status_code == 303  # the first use signs in
        b.cookies.set("ow_login", login_cookie, domain="127.0.0.1", path="/auth")  # same browser state
        replay = b.get(url)
    assert replay.status_code == 401, replay.text
    assert "refused the code" in replay.text
    assert last_refusal(srv)["reason"] == "token_invalid_grant"


def test_a_wrong_pkce_verifier_is_refused(world: SignInWorld) -> None:
    srv = world.server
    box = SecretBox((Path(srv.db.env["ORGWARDEN_DATA_DIR"]) / "secret.key").read_text().strip())
    with browser() as b:
        callback = sign_in(b, srv.base_url, "root@acme.test", stop_at_callback=True)
        sealed = b.cookies.get("ow_login", path="/auth")
        state = open_login_state(box, sealed)
        assert state is not None
        state["verifier"] = "x" * 64  # an attacker who injects a code of their own cannot know it
        b.cookies.set("ow_login", seal_login_state(box, state), domain="127.0.0.1", path="/auth")
        refused = b.get(location(callback))
    assert refused.status_code == 401
    assert "invalid_grant" in refused.text
    assert last_refusal(srv)["reason"] == "token_invalid_grant"


def test_a_tampered_or_missing_login_cookie_and_a_wrong_state_are_refused(world: SignInWorld) -> None:
    srv = world.server
    with browser() as b:
        callback = sign_in(b, srv.base_url, "root@acme.test", stop_at_callback=True)
        url = location(callback)
        sealed = b.cookies.get("ow_login", path="/auth")
        query = parse_qs(urlsplit(url).query)
        wrong_state = f"{srv.base_url}/auth/callback?" + urlencode({"code": query["code"][0], "state": "forged"})
        mismatch = b.get(wrong_state)
        assert mismatch.status_code == 400
        assert "state" in mismatch.text
        assert last_refusal(srv)["reason"] == "state_mismatch"
        flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
        b.cookies.set("ow_login", flipped, domain="127.0.0.1", path="/auth")
        tampered = b.get(url)
        assert tampered.status_code == 400
        assert "altered" in tampered.text
        assert last_refusal(srv)["reason"] == "no_login_state"
    with browser() as fresh:  # a callback this browser never started
        assert fresh.get(url).status_code == 400


def test_a_tampered_session_cookie_is_refused(world: SignInWorld) -> None:
    srv = world.server
    with browser() as b:
        sign_in(b, srv.base_url, "root@acme.test")
        cookie = b.cookies.get("ow_session", path="/")
    for bad in (cookie[:-1] + ("A" if cookie[-1] != "A" else "B"), "ow-ses01-nonsense", "x" * 5000):
        with httpx.Client(cookies={"ow_session": bad}, verify=TLS) as other:
            response = other.get(f"{srv.base_url}/auth/session")
            assert response.status_code == 401
            assert response.json()["error"]["type"] == "authentication_error"
            assert last_refusal(srv, "auth.session")["reason"] == "invalid_session_cookie"
            logout = other.post(f"{srv.base_url}/auth/logout", headers={"x-csrf-token": "whatever"})
            assert logout.status_code == 401


def test_an_error_from_the_identity_provider_is_shown_and_audited(world: SignInWorld) -> None:
    srv = world.server
    with browser() as b:
        callback = sign_in(b, srv.base_url, "root@acme.test", stop_at_callback=True)
        state = parse_qs(urlsplit(location(callback)).query)["state"][0]
        denied = b.get(
            f"{srv.base_url}/auth/callback",
            params={"error": "access_denied", "error_description": "user said no", "state": state},
        )
    assert denied.status_code == 403
    assert "access_denied" in denied.text
    assert last_refusal(srv)["reason"] == "idp_access_denied"


def test_next_only_goes_to_a_local_path(world: SignInWorld) -> None:
    srv = world.server
    with browser() as b:
        callback = sign_in(b, srv.base_url, "root@acme.test", next_path="//evil.example/x", stop_at_callback=True)
        landed = b.get(location(callback))
    assert landed.headers["location"] == "/auth/session"


def test_just_in_time_users_are_made_with_role_user_and_other_domains_are_refused(world: SignInWorld) -> None:
    srv = world.jit_server
    email = f"{unique('newcomer')}@acme.test"
    with browser() as b:
        assert sign_in(b, srv.base_url, email).status_code == 200
        me = b.get(f"{srv.base_url}/auth/session", headers={"accept": "application/json"}).json()
    assert me["user"]["role"] == "user"
    assert [e for e in audit_events(srv, "user.create") if e.details.get("via") == "just_in_time"]
    with browser() as b:
        refused = sign_in(b, srv.base_url, "someone@other.test")
    assert refused.status_code == 403
    assert "not in a domain allowed" in refused.text
    assert last_refusal(srv)["reason"] == "domain_not_allowed"


def test_an_unverified_email_is_refused(world: SignInWorld) -> None:
    srv = world.jit_server
    world.idp.account("unverified@acme.test", email_verified=False)
    with browser() as b:
        refused = sign_in(b, srv.base_url, "unverified@acme.test")
    assert refused.status_code == 403
    assert "not verified" in refused.text
    assert last_refusal(srv)["reason"] == "email_unverified"


def test_sign_in_is_off_without_an_issuer(server_without_oidc: Server) -> None:
    for path in ("/auth/login", "/device"):
        response = httpx.get(f"{server_without_oidc.base_url}{path}", verify=TLS)
        assert response.status_code == 404
        assert "ORGWARDEN_OIDC_ISSUER" in response.json()["error"]["message"]
    polled = httpx.post(
        f"{server_without_oidc.base_url}/oauth/device_authorization", data={"client_id": "x"}, verify=TLS
    )
    assert polled.status_code == 400
    assert polled.json()["error"] == "invalid_request"


@pytest.fixture(scope="module")
def server_without_oidc() -> Any:
    from tests.conftest import dedicated_server

    with dedicated_server("sqlite", {}) as srv:
        yield srv
