"""Sign-in routes: the OpenID Connect browser flow (``/auth/*``), the device flow's verification page
(``/device``) and the OAuth endpoints for terminals (``/oauth/*``, RFC 8414 metadata).

Browser pages answer in HTML when the client accepts it, else in the Anthropic error envelope. The
OAuth endpoints answer as RFC 6749 §5.2 says (``{"error": ..., "error_description": ...}``, status 400
or 401, ``Cache-Control: no-store``), not in the Anthropic envelope: that is what OAuth clients parse.
"""

from __future__ import annotations

import base64
import hmac
import html
import json
import re
import time
from importlib import resources
from string import Template
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from orgwarden.api.errors import envelope, request_id_of
from orgwarden.api.routing import attempt, services, source_ip, tenant_guard
from orgwarden.crypto import SecretBox
from orgwarden.domain.clock import rfc3339
from orgwarden.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    OrgwardenError,
    PermissionDenied,
    StorageUnavailable,
)
from orgwarden.gateway.restriction import Caller
from orgwarden.identity.oidc import OidcClient, OidcRefused
from orgwarden.services.signin import DEVICE_GRANT, OAuthError, SessionView, SignInService

# Signing out and revoking a token only take access away: the tenant restriction never blocks them.
_UNRESTRICTED = frozenset({"/auth/logout", "/oauth/revoke"})


async def _tenant_restriction(request: Request) -> None:
    """Signing in (in a browser, at ``/device``, or by a token grant) is an access to the organization,
    so the tenant restriction applies as on every other surface: a malformed header is a 400, a list
    without this installation's organization a 403 in the Anthropic envelope (also on ``/oauth/*``:
    it is the proxy's refusal, not an OAuth one), audited as ``tenant_restriction.check``."""
    if request.url.path in _UNRESTRICTED:
        return
    tenant = tenant_guard(request)
    tried = attempt(request, "sign_in")
    allowed = await tenant.allowed_org_ids(request.headers.raw, tried)
    if (organization_id := tenant.installation()) is not None:
        await tenant.enforce(allowed, tried, Caller(organization_id, "anonymous", "sign_in"))


router = APIRouter(include_in_schema=False, dependencies=[Depends(_tenant_restriction)])

LOGIN_COOKIE = "ow_login"
SESSION_COOKIE = "ow_session"
_LOGIN_TTL_SECONDS = 600
_LOGIN_BOUND = "orgwarden oidc login v1"
_MAX_FORM_BYTES = 16_384
_MAX_PARAM_CHARS = 2048
_PAGE = Template(resources.files("orgwarden.identity").joinpath("templates/page.html").read_text())
_NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
_CLIENT_SURFACE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


# --- helpers ------------------------------------------------------------------------------------


def _signin(request: Request) -> SignInService:
    return services(request).signin


def _oidc(request: Request) -> OidcClient | None:
    client: OidcClient | None = request.app.state.oidc
    return client


def _base_url(request: Request) -> str:
    configured: str | None = request.app.state.settings.public_url
    return configured or str(request.base_url).rstrip("/")


def _secure(request: Request) -> bool:
    return _base_url(request).startswith("https://")


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _page(title: str, body: str, *, status: int = 200, kind: str = "ok") -> HTMLResponse:
    text = _PAGE.substitute(title=html.escape(title), body=body, kind=kind)
    headers = {
        **_NO_STORE,
        "x-frame-options": "DENY",
        "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    }
    return HTMLResponse(text, status_code=status, headers=headers)


def _refused(request: Request, error: OrgwardenError, title: str = "Sign-in refused") -> Response:
    """A refusal: a page for browsers, the Anthropic envelope for everything else."""
    if _wants_html(request):
        body = f'<p class="refused">{html.escape(error.message)}</p><p><a href="/auth/login">Sign in again</a></p>'
        response: Response = _page(title, body, status=error.status, kind="refused")
    else:
        payload = envelope(error.error_type, error.message, request_id_of(request), error_code=error.error_code)
        response = JSONResponse(payload, status_code=error.status, headers=_NO_STORE)
    return response


def _not_configured() -> NotFound:
    return NotFound("sign-in is not configured on this server (set ORGWARDEN_OIDC_ISSUER)", error_code="oidc_off")


def _local_path(value: str | None) -> str:
    """Where to go after sign-in: a path on this server only (never another site: no open redirect)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value and len(value) <= 512:
        return value
    return "/auth/session"


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body; a parameter given twice is refused (RFC 6749 §3.1)."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    body = await request.body()
    if content_type != "application/x-www-form-urlencoded" and body:  # an empty body is an empty form
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    if len(body) > _MAX_FORM_BYTES:
        raise OAuthError("invalid_request", f"the body is larger than {_MAX_FORM_BYTES} bytes")
    try:
        parsed = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=False, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the body is not a valid form") from None
    form: dict[str, str] = {}
    for name, values in parsed.items():
        if len(values) > 1:
            raise OAuthError("invalid_request", f"parameter {name[:40]!r} is given more than once")
        if len(values[0]) > _MAX_PARAM_CHARS:
            raise OAuthError("invalid_request", f"parameter {name[:40]!r} is longer than {_MAX_PARAM_CHARS} characters")
        form[name[:64]] = values[0]
    return form


async def _browser_form(request: Request) -> dict[str, str]:
    try:
        return await _form(request)
    except OAuthError as exc:
        raise InvalidRequest(exc.message) from None


def _oauth_error(exc: OrgwardenError) -> JSONResponse:
    error = exc.error_code if isinstance(exc, (OAuthError, InvalidRequest)) and exc.error_code else "invalid_request"
    status = exc.http_status if isinstance(exc, OAuthError) else 400
    headers = {**_NO_STORE, "retry-after": "30"} if status == 503 else _NO_STORE  # the IdP could not be asked
    return JSONResponse({"error": error, "error_description": exc.message}, status_code=status, headers=headers)


async def live_session(request: Request) -> SessionView | None:
    """The live session of the cookie; a cookie that opens none (altered, revoked, expired, its user
    gone) is an audited refusal (``auth.session``)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    view = await _signin(request).session(cookie)
    if view is None and cookie:
        await _signin(request).record_refusal(
            "auth.session",
            "invalid_session_cookie",
            "the session cookie opens no live session (altered, revoked, expired, or its user is no longer active)",
            request_id=request_id_of(request),
            source_ip=source_ip(request),
            details={"path": request.url.path[:200]},
        )
    return view


def seal_login_state(box: SecretBox, state: dict[str, Any]) -> str:
    """The sign-in's state as a cookie value: AES-GCM under the server secret, base64url (cookie-safe)."""
    sealed = box.seal(json.dumps(state), _LOGIN_BOUND)
    return base64.urlsafe_b64encode(sealed.encode()).decode().rstrip("=")


def open_login_state(box: SecretBox, cookie: str | None) -> dict[str, Any] | None:
    """The state sealed by ``seal_login_state``; ``None`` when absent, altered or sealed by another key."""
    if not cookie or len(cookie) > 4096:
        return None
    try:
        sealed = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4)).decode()
        loaded = json.loads(box.open(sealed, _LOGIN_BOUND))
    except (ValueError, UnicodeDecodeError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.box
    return box


# --- browser sign-in ----------------------------------------------------------------------------


@router.get("/auth/login")
async def login(request: Request) -> Response:
    """Start the authorization code flow; ``state``, ``nonce`` and the PKCE verifier ride in a sealed cookie."""
    oidc = _oidc(request)
    if oidc is None:
        return _refused(request, _not_configured())
    try:
        started = await oidc.start(f"{_base_url(request)}/auth/callback")
    except OidcRefused as exc:
        return _refused(request, _unavailable(exc))
    state = {
        "state": started.state,
        "nonce": started.nonce,
        "verifier": started.code_verifier,
        "next": _local_path(request.query_params.get("next")),
        "exp": int(time.time()) + _LOGIN_TTL_SECONDS,
    }
    response = RedirectResponse(started.url, status_code=302, headers=_NO_STORE)
    response.set_cookie(
        LOGIN_COOKIE,
        seal_login_state(_box(request), state),
        max_age=_LOGIN_TTL_SECONDS,
        path="/auth",
        httponly=True,
        secure=_secure(request),
        samesite="lax",
    )
    return response


def _unavailable(exc: OidcRefused) -> OrgwardenError:
    if exc.unavailable:
        return StorageUnavailable(f"sign-in is unavailable: {exc.message}", error_code=exc.reason)
    return AuthenticationFailed(f"sign-in refused: {exc.message}", error_code=exc.reason)


@router.get("/auth/callback")
async def callback(request: Request) -> Response:
    """The identity provider's redirect back: check everything, then open a session."""
    oidc = _oidc(request)
    if oidc is None:
        return _refused(request, _not_configured())
    signin = _signin(request)
    params = request.query_params
    ip, request_id = source_ip(request), request_id_of(request)

    async def refuse(reason: str, message: str, status: int = 401) -> Response:
        await signin.record_refusal("auth.sign_in", reason, message, request_id=request_id, source_ip=ip)
        kinds: dict[int, type[OrgwardenError]] = {400: InvalidRequest, 401: AuthenticationFailed, 403: PermissionDenied}
        response = _refused(request, kinds[status](message, error_code=reason))
        response.delete_cookie(LOGIN_COOKIE, path="/auth")
        return response

    login_state = open_login_state(_box(request), request.cookies.get(LOGIN_COOKIE))
    if login_state is None:
        return await refuse(
            "no_login_state",
            "this sign-in was not started here, or its cookie was altered; start again",
            400,
        )
    if int(login_state.get("exp", 0)) < time.time():
        return await refuse("login_expired", "the sign-in took longer than 10 minutes; start again", 400)
    if "error" in params:
        error = params["error"][:64]
        description = params.get("error_description", "")[:200]
        return await refuse(
            f"idp_{error}", f"the identity provider refused the sign-in: {error} {description}".strip(), 403
        )
    presented_state = params.get("state", "")
    if not hmac.compare_digest(presented_state.encode()[:256], str(login_state.get("state", "")).encode()):
        return await refuse("state_mismatch", "the state parameter does not match this browser's sign-in", 400)
    if "iss" in params and params["iss"] != oidc.issuer:  # RFC 9207: the answer came from our issuer
        return await refuse("issuer_mismatch", f"the answer names issuer {params['iss'][:200]!r}, not ours", 400)
    code = params.get("code", "")
    if not code or len(code) > _MAX_PARAM_CHARS:
        return await refuse("no_code", "the identity provider sent no authorization code", 400)
    try:
        identity = await oidc.finish(
            code=code,
            redirect_uri=f"{_base_url(request)}/auth/callback",
            code_verifier=str(login_state.get("verifier", "")),
            nonce=str(login_state.get("nonce", "")),
        )
    except OidcRefused as exc:
        await signin.record_refusal("auth.sign_in", exc.reason, exc.message, request_id=request_id, source_ip=ip)
        response = _refused(request, _unavailable(exc))
        response.delete_cookie(LOGIN_COOKIE, path="/auth")
        return response
    try:
        signed_in = await signin.sign_in(
            identity, request_id=request_id, source_ip=ip, user_agent=request.headers.get("user-agent")
        )
    except OrgwardenError as exc:  # the service recorded the refusal
        response = _refused(request, exc)
        response.delete_cookie(LOGIN_COOKIE, path="/auth")
        return response
    response = RedirectResponse(_local_path(str(login_state.get("next"))), status_code=303, headers=_NO_STORE)
    response.delete_cookie(LOGIN_COOKIE, path="/auth")
    response.set_cookie(
        SESSION_COOKIE,
        signed_in.session_secret,
        max_age=int(signed_in.expires_at.timestamp() - time.time()),
        path="/",
        httponly=True,
        secure=_secure(request),
        samesite="lax",
    )
    return response


@router.get("/auth/session")
async def session(request: Request) -> Response:
    """Who is signed in (JSON, or a page with the sign-out button); 401 without a live session."""
    view = await live_session(request)
    if view is None:
        return _refused(request, AuthenticationFailed("not signed in", error_code="no_session"), "Not signed in")
    if _wants_html(request):
        body = (
            f"<p>Signed in as <strong>{html.escape(view.name)}</strong> ({html.escape(view.email)}),"
            f" organization role <code>{html.escape(view.org_role)}</code>.</p>"
            '<form method="post" action="/auth/logout">'
            f'<input type="hidden" name="csrf_token" value="{view.csrf_token}"><button>Sign out</button></form>'
        )
        return _page("Signed in", body)
    return JSONResponse(
        {
            "type": "session",
            "id": view.session_id,
            "user": {"id": view.user_id, "email": view.email, "name": view.name, "role": view.org_role},
            "expires_at": rfc3339(view.expires_at),
            "csrf_token": view.csrf_token,
        },
        headers=_NO_STORE,
    )


@router.post("/auth/logout")
async def logout(request: Request) -> Response:
    """Revoke the session. CSRF-protected: the session's token as form field ``csrf_token`` or header
    ``x-csrf-token``; refused (403, audited) without it."""
    csrf = request.headers.get("x-csrf-token")
    if csrf is None and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        try:
            csrf = (await _browser_form(request)).get("csrf_token")
        except InvalidRequest as exc:
            return _refused(request, exc, "Sign-out refused")
    if await live_session(request) is None:
        return _refused(request, AuthenticationFailed("not signed in", error_code="no_session"), "Sign-out refused")
    try:
        await _signin(request).sign_out(
            request.cookies.get(SESSION_COOKIE),
            csrf,
            request_id=request_id_of(request),
            source_ip=source_ip(request),
        )
    except OrgwardenError as exc:
        return _refused(request, exc, "Sign-out refused")
    response: Response
    if _wants_html(request):
        response = _page("Signed out", "<p>You are signed out of orgwarden.</p>")
    else:
        response = JSONResponse({"type": "signed_out"}, headers=_NO_STORE)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- device flow: the verification page -----------------------------------------------------------


@router.get("/device")
async def device_page(request: Request) -> Response:
    """Where a person confirms a terminal's code; signs them in first (and comes back here)."""
    if _oidc(request) is None:
        return _refused(request, _not_configured())
    code = request.query_params.get("user_code", "")[:32]
    view = await live_session(request)
    if view is None:
        back = "/device" + (f"?{urlencode({'user_code': code})}" if code else "")
        return RedirectResponse(f"/auth/login?next={quote(back, safe='')}", status_code=303, headers=_NO_STORE)
    if not code:
        body = (
            '<form method="get" action="/device"><label>Enter the code shown in your terminal<br>'
            '<input name="user_code" required maxlength="16" autocomplete="off"></label>'
            "<button>Continue</button></form>"
        )
        return _page("Connect a device", body)
    try:
        pending = await _signin(request).device_request(code)
    except OrgwardenError as exc:
        return _refused(request, exc, "Unknown code")
    workspace = html.escape(pending.workspace_id or "your default workspace")
    body = (
        f"<p>A terminal (<code>{html.escape(pending.client_id)}</code>) asks to act as "
        f"<strong>{html.escape(view.email)}</strong> in {workspace}.</p>"
        f'<p>Check that your terminal shows this code:</p><p class="code">{html.escape(pending.user_code)}</p>'
        '<form method="post" action="/device">'
        f'<input type="hidden" name="user_code" value="{html.escape(pending.user_code)}">'
        f'<input type="hidden" name="csrf_token" value="{view.csrf_token}">'
        '<button name="action" value="approve">Approve</button> '
        '<button name="action" value="deny">Deny</button></form>'
    )
    return _page("Connect a device", body)


@router.post("/device")
async def device_decide(request: Request) -> Response:
    """Approve or deny the code (CSRF-protected), as the signed-in user."""
    if _oidc(request) is None:
        return _refused(request, _not_configured())
    view = await live_session(request)
    if view is None:
        return _refused(request, AuthenticationFailed("not signed in: open /device again", error_code="no_session"))
    try:
        form = await _browser_form(request)
        action = form.get("action", "")
        if action not in ("approve", "deny"):
            raise InvalidRequest("action must be approve or deny")
        workspace_id = await _signin(request).decide_device(
            view,
            form.get("user_code", ""),
            approve=action == "approve",
            csrf_token=form.get("csrf_token"),
            request_id=request_id_of(request),
            source_ip=source_ip(request),
        )
    except OrgwardenError as exc:
        return _refused(request, exc, "Device not connected")
    if action == "deny":
        return _page("Device refused", "<p>The terminal's request was denied. You can close this page.</p>")
    return _page(
        "Device connected",
        f"<p>Your terminal is signed in (workspace <code>{html.escape(workspace_id)}</code>). "
        "You can close this page and return to it.</p>",
    )


# --- OAuth endpoints for terminals (RFC 8414, 8628, 6749, 7009) ---------------------------------------


@router.get("/.well-known/oauth-authorization-server")
async def metadata(request: Request) -> Response:
    base = _base_url(request)
    return JSONResponse(
        {
            "issuer": base,
            "device_authorization_endpoint": f"{base}/oauth/device_authorization",
            "token_endpoint": f"{base}/oauth/token",
            "revocation_endpoint": f"{base}/oauth/revoke",
            "grant_types_supported": [DEVICE_GRANT, "refresh_token"],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["user"],
            "service_documentation": "https://github.com/orgwarden/orgwarden#sign-in",
        }
    )


def _device_client_id(form: dict[str, str]) -> str:
    """The client a device sign-in is for: its ``client_id``; else (Claude Code sends none, only
    ``surface=claude_code``) its ``surface`` when that reads as a client id; else ``device``."""
    if client_id := form.get("client_id"):
        return client_id
    surface = form.get("surface", "")
    return surface if _CLIENT_SURFACE.fullmatch(surface) else "device"


@router.post("/oauth/device_authorization")
async def device_authorization(request: Request) -> Response:
    try:
        if _oidc(request) is None:
            raise OAuthError("invalid_request", "sign-in is not configured on this server (ORGWARDEN_OIDC_ISSUER)")
        form = await _form(request)
        started = await _signin(request).start_device(
            client_id=_device_client_id(form),
            scope=form.get("scope", "user"),
            workspace_id=form.get("workspace_id") or None,
        )
    except (OAuthError, InvalidRequest) as exc:
        return _oauth_error(exc)
    base = _base_url(request)
    return JSONResponse(
        {
            "device_code": started.device_code,
            "user_code": started.user_code,
            "verification_uri": f"{base}/device",
            "verification_uri_complete": f"{base}/device?{urlencode({'user_code': started.user_code})}",
            "expires_in": started.expires_in,
            "interval": started.interval,
        },
        headers=_NO_STORE,
    )


@router.post("/oauth/token")
async def token(request: Request) -> Response:
    ip, request_id = source_ip(request), request_id_of(request)
    try:
        form = await _form(request)
        grant_type = form.get("grant_type", "")
        # Optional (Claude Code sends none): the device code or refresh token names its client.
        client_id = form.get("client_id") or None
        if grant_type == DEVICE_GRANT:
            issued = await _signin(request).poll_device(
                form.get("device_code", ""), client_id=client_id, request_id=request_id, source_ip=ip
            )
        elif grant_type == "refresh_token":
            issued = await services(request).user_tokens.refresh(
                form.get("refresh_token", ""), client_id=client_id, request_id=request_id, source_ip=ip
            )
        else:
            raise OAuthError(
                "unsupported_grant_type", f"grant_type must be {DEVICE_GRANT} or refresh_token, not {grant_type[:80]!r}"
            )
    except (OAuthError, InvalidRequest) as exc:
        return _oauth_error(exc)
    body: dict[str, Any] = {
        "access_token": issued.access_token,
        "token_type": issued.token_type,
        "expires_in": issued.expires_in,
        "refresh_token": issued.refresh_token,
        "scope": issued.scope,
    }
    if issued.email:  # Claude Code's extension: it asks the person to confirm the account, shows it in /status
        body["email"] = issued.email
    return JSONResponse(body, headers=_NO_STORE)


@router.post("/oauth/revoke")
async def revoke(request: Request) -> Response:
    """RFC 7009: 200 whether or not the token was known."""
    try:
        form = await _form(request)
        token_value = form.get("token", "")
        if not token_value:
            raise OAuthError("invalid_request", "token is required")
        await services(request).user_tokens.revoke(
            token_value, request_id=request_id_of(request), source_ip=source_ip(request)
        )
    except (OAuthError, InvalidRequest) as exc:
        return _oauth_error(exc)
    return Response(status_code=200, headers=_NO_STORE)
