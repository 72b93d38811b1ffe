"""People signing in: browser sessions after OpenID Connect, and the RFC 8628 device flow.

Sign-in (``sign_in``) takes what the identity provider vouched for (``identity.oidc.Identity``) and
finds the member with that email. A first sign-in by an email with a pending invite accepts the invite;
an unknown email is refused unless just-in-time users are on (then a user with org role ``user`` is
made). Removed or deactivated users, unverified emails and emails outside the allowed domains are
refused. Every outcome, refusals included, is an audit event (``auth.sign_in``).

A session is a row (hash of the cookie's secret) so it can be listed and revoked; its CSRF token is an
HMAC of the secret, so it needs no storage and cannot be computed without the HttpOnly cookie.

The device flow: a terminal asks for a code (``start_device``), the person confirms it at ``/device``
in a signed-in browser (``decide_device``), the terminal polls (``poll_device``) and gets tokens from
``UserTokenService``. The workspace the tokens are for is settled at confirmation: one the user
belongs to with a role that may call the API (``workspace_user`` or above; org admins: any), or, when
none is asked for, the user's default (``default_workspace``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from orgwarden import ids
from orgwarden.domain.clock import utcnow
from orgwarden.domain.policy import Actor
from orgwarden.domain.roles import effective_workspace_role, workspace_role_at_least
from orgwarden.errors import AuthenticationFailed, NotFound, PermissionDenied
from orgwarden.identity import groups as group_claims
from orgwarden.identity import recheck
from orgwarden.services import audit
from orgwarden.services.context import Context
from orgwarden.services.user_tokens import (
    IssuedTokens,
    OAuthError,
    UserTokenService,
    user_is_active,
    user_state,
)
from orgwarden.storage.tables import DeviceAuthorization, Invite, User, UserSession, Workspace
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory

if TYPE_CHECKING:  # the OIDC client (Authlib, httpx) is the app's, not every CLI command's, to import
    from orgwarden.crypto import SecretBox
    from orgwarden.identity.oidc import Identity

__all__ = ["DEVICE_GRANT", "OAuthError", "SessionView", "SignInService", "SignedIn"]

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 §6.1: no vowels, no look-alikes
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_DEFAULT_WORKSPACE_ORG_ROLES = frozenset({"admin", "developer"})
MAX_USER_AGENT = 255


# The device authorization endpoint needs no credentials, so what it may store is capped: past this
# many pending (unexpired, undecided) authorizations, new ones are refused with 429 until some end.
MAX_PENDING_DEVICES = 10_000


@dataclass(frozen=True, slots=True)
class SignedIn:
    user: User
    session_id: str
    session_secret: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SessionView:
    """A live browser session, as the routes see it."""

    session_id: str
    user_id: str
    organization_id: str
    email: str
    name: str
    org_role: str
    expires_at: datetime
    csrf_token: str


@dataclass(frozen=True, slots=True)
class DeviceStart:
    device_code: str
    user_code: str
    expires_in: int
    interval: int


@dataclass(frozen=True, slots=True)
class DeviceRequest:
    """A pending device authorization, shown on the confirmation page."""

    user_code: str
    client_id: str
    scope: str
    workspace_id: str | None
    expires_at: datetime


def csrf_token_for(session_secret: str) -> str:
    return hmac.new(session_secret.encode(), b"orgwarden csrf v1", hashlib.sha256).hexdigest()


def normalize_user_code(text: str) -> str:
    """``bcdf-ghjk``, ``BCDFGHJK`` and ``BCDF GHJK`` are the same code: ``BCDF-GHJK``."""
    letters = "".join(ch for ch in text.upper()[:32] if ch.isalnum())
    return f"{letters[:4]}-{letters[4:]}" if len(letters) == 8 else letters[:16]


def _new_user_code() -> str:
    letters = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(8))
    return f"{letters[:4]}-{letters[4:]}"


def _bounded(value: str | None, limit: int) -> str | None:
    return value[:limit] if value is not None else None


class SignInService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        tokens: UserTokenService,
        *,
        session_ttl_seconds: int,
        jit_users: bool,
        allowed_email_domains: Sequence[str],
        device_ttl_seconds: int,
        device_interval_seconds: int,
        box: SecretBox | None = None,
    ) -> None:
        self._uow = uow
        self._box = box  # seals the IdP's refresh token on the session and the device authorization
        self._tokens = tokens
        self._session_ttl = timedelta(seconds=session_ttl_seconds)
        self._jit = jit_users
        self._domains = frozenset(allowed_email_domains)
        self._device_ttl = device_ttl_seconds
        self.device_interval = device_interval_seconds

    # --- refusals -------------------------------------------------------------------------------

    async def record_refusal(
        self,
        action: str,
        reason: str,
        message: str,
        *,
        request_id: str | None,
        source_ip: str | None,
        user: User | None = None,
        details: dict[str, object] | None = None,
    ) -> None:
        """An audit event for a refused sign-in step, in its own transaction (nothing else commits)."""
        async with self._uow() as uow:
            organization = await uow.organizations.first()
            if organization is None:
                return
            if user is not None:
                actor = Actor("user", user.id, organization.id, user.id)
            else:
                actor = Actor("system", "oidc", organization.id)
            ctx = Context(actor, request_id, _bounded(source_ip, 64))
            audit.record(
                uow,
                ctx,
                action,
                "user" if user is not None else "sign_in",
                user.id if user is not None else reason[:64],
                outcome="refused",
                details={"reason": reason, "message": message[:500], **(details or {})},
            )
            await uow.commit()

    async def _refuse(
        self, error: PermissionDenied | AuthenticationFailed, identity: Identity, request_id: str | None, ip: str | None
    ) -> PermissionDenied | AuthenticationFailed:
        await self.record_refusal(
            "auth.sign_in",
            error.error_code or "refused",
            error.message,
            request_id=request_id,
            source_ip=ip,
            details={"email": identity.email, "subject": identity.subject},
        )
        return error

    # --- browser sign-in ------------------------------------------------------------------------

    async def sign_in(
        self, identity: Identity, *, request_id: str | None, source_ip: str | None, user_agent: str | None
    ) -> SignedIn:
        """Find (or, by invite or just in time, make) the member the IdP vouched for, and open a session."""
        email = identity.email
        if not email or "@" not in email:
            raise await self._refuse(
                PermissionDenied(
                    "the identity provider did not say which email address signed in (ask for the email scope)",
                    error_code="no_email",
                ),
                identity,
                request_id,
                source_ip,
            )
        if identity.email_verified is False:
            raise await self._refuse(
                PermissionDenied(f"the identity provider has not verified {email}", error_code="email_unverified"),
                identity,
                request_id,
                source_ip,
            )
        domain = email.rsplit("@", 1)[1]
        if self._domains and domain not in self._domains:
            raise await self._refuse(
                PermissionDenied(
                    f"{email} is not in a domain allowed to sign in ({', '.join(sorted(self._domains))})",
                    error_code="domain_not_allowed",
                ),
                identity,
                request_id,
                source_ip,
            )
        try:
            return await self._open_session(identity, email, request_id, source_ip, user_agent)
        except PermissionDenied as refused:  # recorded in a transaction of its own, once this one is over
            raise await self._refuse(refused, identity, request_id, source_ip) from None

    async def _open_session(
        self, identity: Identity, email: str, request_id: str | None, source_ip: str | None, user_agent: str | None
    ) -> SignedIn:
        now = utcnow()
        async with self._uow() as uow:
            organization = await uow.organizations.first()
            if organization is None:
                raise AuthenticationFailed("orgwarden is not initialized yet: run `orgwarden init`")
            await uow.organizations.lock(organization.id)
            user = await uow.users.by_email(organization.id, email)
            how = "member"
            if user is None:
                invite = await uow.invites.pending_for(organization.id, email, now)
                if invite is not None:
                    user = self._accept_invite(uow, invite, identity, now, request_id, source_ip)
                    await group_claims.join_invite_groups(uow, invite.id, user, now)  # its rbac_group_ids
                    how = "invite"
                elif self._jit:
                    user = self._new_jit_user(uow, organization.id, identity, now, request_id, source_ip)
                    how = "just_in_time"
            if user is None:
                raise PermissionDenied(
                    f"{email} is not a member of this organization; ask an admin for an invite",
                    error_code="unknown_user",
                )
            if not user_is_active(user):
                state = user_state(user)
                raise PermissionDenied(
                    f"the account of {email} is {state}; sign-in refused", error_code=f"user_{state}"
                )
            if identity.groups is not None:
                await group_claims.apply_claim(uow, user, identity.groups)
            secret = ids.new_session_secret()
            session = UserSession(
                id=ids.new_id(ids.USER_SESSION),
                organization_id=organization.id,
                user_id=user.id,
                secret_hash=ids.hash_secret(secret),
                created_at=now,
                expires_at=now + self._session_ttl,
                last_seen_at=now,
                source_ip=_bounded(source_ip, 64),
                user_agent=_bounded(user_agent, MAX_USER_AGENT),
            )
            if identity.refresh_token is not None and self._box is not None:
                session.idp_refresh_token = recheck.seal(self._box, identity.refresh_token, session.id)
            uow.user_sessions.add(session)
            ctx = Context(Actor("user", user.id, organization.id, user.id), request_id, _bounded(source_ip, 64))
            audit.record(
                uow,
                ctx,
                "auth.sign_in",
                "user",
                user.id,
                details={
                    "session_id": session.id,
                    "email": email,
                    "subject": identity.subject,
                    "via": how,
                    "groups": identity.groups,
                    "idp_refresh_token": session.idp_refresh_token is not None,  # whether one is kept, never it
                },
            )
            await uow.commit()
            return SignedIn(user, session.id, secret, session.expires_at)

    def _accept_invite(
        self,
        uow: UnitOfWork,
        invite: Invite,
        identity: Identity,
        now: datetime,
        request_id: str | None,
        source_ip: str | None,
    ) -> User:
        user = self._user(invite.organization_id, identity, invite.role, now)
        uow.users.add(user)
        invite.status, invite.accepted_at, invite.user_id = "accepted", now, user.id
        ctx = Context(Actor("user", user.id, invite.organization_id, user.id), request_id, _bounded(source_ip, 64))
        audit.record(
            uow,
            ctx,
            "invite.accept",
            "user",
            user.id,
            details={"invite_id": invite.id, "role": invite.role, "via": "sign_in"},
        )
        return user

    def _new_jit_user(
        self,
        uow: UnitOfWork,
        organization_id: str,
        identity: Identity,
        now: datetime,
        request_id: str | None,
        source_ip: str | None,
    ) -> User:
        user = self._user(organization_id, identity, "user", now)
        uow.users.add(user)
        ctx = Context(Actor("system", "oidc", organization_id, user.id), request_id, _bounded(source_ip, 64))
        audit.record(
            uow,
            ctx,
            "user.create",
            "user",
            user.id,
            details={"email": user.email, "role": "user", "via": "just_in_time"},
        )
        return user

    @staticmethod
    def _user(organization_id: str, identity: Identity, role: str, now: datetime) -> User:
        email = identity.email or ""
        name = (identity.name or "").strip() or email.split("@", 1)[0]
        return User(
            id=ids.new_id(ids.USER),
            organization_id=organization_id,
            email=email,
            name=name[:255],
            role=role,
            added_at=now,
            removed_at=None,
        )

    # --- sessions -------------------------------------------------------------------------------

    async def session(self, secret: str | None) -> SessionView | None:
        """The live session this cookie value opens, or ``None`` (unknown, expired, revoked, user gone)."""
        if not secret or len(secret) > 128 or not secret.startswith(ids.USER_SESSION_PREFIX):
            return None
        async with self._uow() as uow:
            found = await uow.user_sessions.with_user_by_hash(ids.hash_secret(secret))
        if found is None:
            return None
        row, user = found
        if (
            row.revoked_at is not None
            or row.expires_at <= utcnow()
            or not user_is_active(user)
            or not ids.secret_matches(secret, row.secret_hash)
        ):
            return None
        return SessionView(
            session_id=row.id,
            user_id=user.id,
            organization_id=user.organization_id,
            email=user.email,
            name=user.name,
            org_role=user.role,
            expires_at=row.expires_at,
            csrf_token=csrf_token_for(secret),
        )

    async def sign_out(
        self, secret: str | None, csrf_token: str | None, *, request_id: str | None, source_ip: str | None
    ) -> None:
        """Revoke the session; refused (and audited) without the session's CSRF token."""
        view = await self.session(secret)
        if view is None or secret is None:
            raise AuthenticationFailed("not signed in (no valid session cookie)", error_code="no_session")
        if not csrf_token or not hmac.compare_digest(csrf_token.encode()[:128], view.csrf_token.encode()):
            message = "sign-out refused: the CSRF token is missing or wrong"
            async with self._uow() as uow:
                user = await uow.users.get(view.organization_id, view.user_id)
            await self.record_refusal(
                "auth.sign_out", "csrf", message, request_id=request_id, source_ip=source_ip, user=user
            )
            raise PermissionDenied(message, error_code="csrf")
        now = utcnow()
        async with self._uow() as uow:
            found = await uow.user_sessions.with_user_by_hash(ids.hash_secret(secret))
            if found is None:  # pragma: no cover - it was there a moment ago
                return
            row, user = found
            await uow.user_sessions.revoke(row, now)
            ctx = Context(Actor("user", user.id, user.organization_id, user.id), request_id, _bounded(source_ip, 64))
            audit.record(uow, ctx, "auth.sign_out", "user", user.id, details={"session_id": row.id})
            await uow.commit()

    # --- device flow ----------------------------------------------------------------------------

    async def start_device(self, *, client_id: str, scope: str, workspace_id: str | None) -> DeviceStart:
        """RFC 8628 §3.1-3.2: a device code (secret, for polling) and a user code (typed by a person)."""
        if not _CLIENT_ID.fullmatch(client_id):
            raise OAuthError("invalid_client", "client_id must be 1-128 letters, digits or ._:-", status=401)
        if len(scope) > 255:
            raise OAuthError("invalid_scope", "scope is longer than 255 characters")
        if workspace_id is not None and not ids.looks_like(ids.WORKSPACE, workspace_id):
            raise OAuthError("invalid_request", f"workspace_id {workspace_id[:80]!r} is not a workspace id")
        now = utcnow()
        device_code = secrets.token_urlsafe(32)
        async with self._uow() as uow:
            if await uow.device_authorizations.count_pending(now) >= MAX_PENDING_DEVICES:
                raise OAuthError(
                    "slow_down",
                    f"too many device sign-ins are pending ({MAX_PENDING_DEVICES}); try again when some have"
                    " been completed or have expired",
                    status=429,
                )
            for _ in range(5):  # 20**8 codes: a collision with a live one is rare; retry a few times
                user_code = _new_user_code()
                if await uow.device_authorizations.by_user_code(user_code) is None:
                    break
            await uow.device_authorizations.delete_expired(now - timedelta(hours=1))
            uow.device_authorizations.add(
                DeviceAuthorization(
                    id=ids.new_id(ids.DEVICE_AUTHORIZATION),
                    device_code_hash=ids.hash_secret(device_code),
                    user_code=user_code,
                    client_id=client_id,
                    scope=scope or "user",
                    workspace_id=workspace_id,
                    status="pending",
                    interval_seconds=self.device_interval,
                    created_at=now,
                    expires_at=now + timedelta(seconds=self._device_ttl),
                )
            )
            await uow.commit()
        return DeviceStart(device_code, user_code, self._device_ttl, self.device_interval)

    async def device_request(self, user_code: str) -> DeviceRequest:
        """The pending request behind a user code (what the confirmation page shows)."""
        code = normalize_user_code(user_code)
        async with self._uow() as uow:
            row = await uow.device_authorizations.by_user_code(code)
        if row is None or row.status != "pending" or row.expires_at <= utcnow():
            raise NotFound(f"code {code!r} is unknown, expired or already used; start again with `orgwarden login`")
        return DeviceRequest(row.user_code, row.client_id, row.scope, row.workspace_id, row.expires_at)

    async def decide_device(
        self,
        view: SessionView,
        user_code: str,
        *,
        approve: bool,
        csrf_token: str | None,
        request_id: str | None,
        source_ip: str | None,
    ) -> str:
        """Approve or deny a device code as the signed-in user; returns the workspace the tokens will be for."""
        code = normalize_user_code(user_code)
        if not csrf_token or not hmac.compare_digest(csrf_token.encode()[:128], view.csrf_token.encode()):
            message = "confirmation refused: the CSRF token is missing or wrong"
            await self._record_user_refusal(view, "auth.device", "csrf", message, request_id, source_ip)
            raise PermissionDenied(message, error_code="csrf")
        try:
            return await self._decide(view, code, approve=approve, request_id=request_id, source_ip=source_ip)
        except NotFound as refused:  # recorded once the deciding transaction is over (SQLite: one writer)
            await self._record_user_refusal(view, "auth.device", "unknown_code", refused.message, request_id, source_ip)
            raise

    async def _decide(
        self, view: SessionView, code: str, *, approve: bool, request_id: str | None, source_ip: str | None
    ) -> str:
        now = utcnow()
        async with self._uow() as uow:
            row = await uow.device_authorizations.by_user_code(code, lock=True)
            user = await uow.users.get(view.organization_id, view.user_id)
            if user is None or not user_is_active(user):
                raise AuthenticationFailed("not signed in (the session's user is no longer active)")
            if row is None or row.status != "pending" or row.expires_at <= now:
                raise NotFound(
                    f"code {code!r} is unknown, expired or already used; start again with `orgwarden login`",
                    error_code="unknown_code",
                )
            ctx = Context(Actor("user", user.id, user.organization_id, user.id), request_id, _bounded(source_ip, 64))
            if not approve:
                row.status, row.user_id, row.organization_id = "denied", user.id, user.organization_id
                audit.record(uow, ctx, "auth.device_deny", "user", user.id, details={"client_id": row.client_id})
                await uow.commit()
                return ""
            try:
                workspace = await self.api_workspace(uow, user, row.workspace_id)
            except PermissionDenied as refused:
                row.status, row.user_id, row.organization_id = "denied", user.id, user.organization_id
                audit.record(
                    uow,
                    ctx,
                    "auth.device_approve",
                    "user",
                    user.id,
                    workspace_id=row.workspace_id,
                    outcome="refused",
                    details={"client_id": row.client_id, "reason": refused.error_code, "message": refused.message},
                )
                await uow.commit()
                raise
            row.status, row.user_id, row.organization_id = "approved", user.id, user.organization_id
            row.workspace_id = workspace.id
            row.idp_refresh_token = await self._idp_copy(uow, view.session_id, row.id)
            audit.record(
                uow,
                ctx,
                "auth.device_approve",
                "user",
                user.id,
                workspace_id=workspace.id,
                details={"client_id": row.client_id, "scope": row.scope},
            )
            await uow.commit()
            return workspace.id

    async def _idp_copy(self, uow: UnitOfWork, session_id: str, device_id: str) -> str | None:
        """The approving session's IdP refresh token, sealed again for the device authorization (the
        token family gets it when the device collects its tokens)."""
        if self._box is None:
            return None
        session = await uow.user_sessions.get(session_id)
        token = recheck.unseal(self._box, session.idp_refresh_token if session else None, session_id)
        return recheck.seal(self._box, token, device_id) if token is not None else None

    async def _record_user_refusal(
        self, view: SessionView, action: str, reason: str, message: str, request_id: str | None, ip: str | None
    ) -> None:
        async with self._uow() as uow:
            user = await uow.users.get(view.organization_id, view.user_id)
        await self.record_refusal(action, reason, message, request_id=request_id, source_ip=ip, user=user)

    async def api_workspace(self, uow: UnitOfWork, user: User, workspace_id: str | None) -> Workspace:
        """The workspace a user's token calls the API in: the one asked for, if the user may call the
        API there, else (none asked) the first workspace they may call it in, else the default
        workspace for org admins and developers. Refused with a message that says what to do."""
        memberships = await uow.user_workspaces.of_user(user.id)
        if workspace_id is not None:
            workspace = await uow.workspaces.get(user.organization_id, workspace_id)
            if workspace is None or workspace.archived_at is not None:
                raise PermissionDenied(
                    f"workspace {workspace_id} does not exist or is archived", error_code="workspace"
                )
            member_role = next((m.role for m, w in memberships if w.id == workspace.id), None)
            role = effective_workspace_role(user.role, member_role)
            if not workspace_role_at_least(role, "workspace_user"):
                have = f"your role there is {role}" if role else "you are not a member"
                raise PermissionDenied(
                    f"you may not call the API in workspace {workspace_id} ({have}; workspace_user or above is needed)",
                    error_code="workspace",
                )
            return workspace
        for member, workspace in memberships:
            if not workspace.is_default and workspace_role_at_least(
                effective_workspace_role(user.role, member.role), "workspace_user"
            ):
                return workspace
        if user.role in _DEFAULT_WORKSPACE_ORG_ROLES:
            return await uow.workspaces.default(user.organization_id)
        raise PermissionDenied(
            "you belong to no workspace where you may call the API; ask an admin to add you to one",
            error_code="workspace",
        )

    async def poll_device(
        self, device_code: str, *, client_id: str | None, request_id: str | None, source_ip: str | None
    ) -> IssuedTokens:
        """RFC 8628 §3.4-3.5: tokens once approved; else the RFC's error for where the code stands.
        Refusals other than "not yet" (``authorization_pending``, ``slow_down``) are audited. ``client_id``
        ``None`` (Claude Code sends none; the secret device code is what binds the poll) skips the check."""
        try:
            return await self._poll(device_code, client_id=client_id, request_id=request_id, source_ip=source_ip)
        except OAuthError as refused:
            if refused.error_code not in ("authorization_pending", "slow_down"):
                await self.record_refusal(
                    "oauth.token",
                    refused.error_code or "refused",
                    refused.message,
                    request_id=request_id,
                    source_ip=source_ip,
                    details={"grant_type": DEVICE_GRANT, "client_id": (client_id or "")[:128]},
                )
            raise

    async def _poll(
        self, device_code: str, *, client_id: str | None, request_id: str | None, source_ip: str | None
    ) -> IssuedTokens:
        if not device_code or len(device_code) > 128:
            raise OAuthError("invalid_grant", "device_code is missing or not one of ours")
        now = utcnow()
        async with self._uow() as uow:
            row = await uow.device_authorizations.by_device_code_hash(ids.hash_secret(device_code), lock=True)
            if row is None or not ids.secret_matches(device_code, row.device_code_hash):
                raise OAuthError("invalid_grant", "device_code is not recognised")
            if client_id is not None and row.client_id != client_id:
                raise OAuthError("invalid_grant", "device_code was issued to another client_id")
            if row.status == "used":
                raise OAuthError("invalid_grant", "device_code was already exchanged for tokens")
            if row.expires_at <= now:
                raise OAuthError(
                    "expired_token", "the code expired before it was confirmed; run `orgwarden login` again"
                )
            if row.status == "denied":
                raise OAuthError("access_denied", "the sign-in was refused at the verification page")
            last = row.last_polled_at
            row.last_polled_at = now
            if row.status == "pending":
                if last is not None and (now - last).total_seconds() < row.interval_seconds:
                    row.interval_seconds += 5  # RFC 8628 §3.5: slow_down adds 5 seconds to the interval
                    await uow.commit()
                    raise OAuthError("slow_down", f"polling too fast; wait {row.interval_seconds} s between polls")
                await uow.commit()
                raise OAuthError("authorization_pending", "waiting for the code to be confirmed in a browser")
            # approved: the user and the workspace are checked again, as of now
            assert row.user_id is not None
            assert row.organization_id is not None
            user = await uow.users.get(row.organization_id, row.user_id)
            if user is None or not user_is_active(user):
                row.status, row.idp_refresh_token = "denied", None
                await uow.commit()
                raise OAuthError("access_denied", "the user who confirmed the code is no longer active")
            try:
                workspace = await self.api_workspace(uow, user, row.workspace_id)
            except PermissionDenied as refused:
                row.status, row.idp_refresh_token = "denied", None
                await uow.commit()
                raise OAuthError("access_denied", refused.message) from None
            row.status = "used"
            idp_token = recheck.unseal(self._box, row.idp_refresh_token, row.id) if self._box else None
            row.idp_refresh_token = None  # handed to the token family
            ctx = Context(Actor("user", user.id, user.organization_id, user.id), request_id, _bounded(source_ip, 64))
            issued = await self._tokens.issue_in(
                uow,
                organization_id=user.organization_id,
                user_id=user.id,
                workspace_id=workspace.id,
                client_id=row.client_id,
                scope=row.scope,
                ctx=ctx,
                idp_refresh_token=idp_token,
            )
            await uow.commit()
            return issued
