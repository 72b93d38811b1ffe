"""OAuth tokens of signed-in users: issue, refresh (rotating), revoke, resolve.

An access token (``ow-at01-``) is short-lived; a refresh token (``ow-rt01-``) is exchanged for a new
pair on use and is then spent. Tokens of one grant share a family: presenting a spent refresh token
again means it leaked (RFC 6819 §5.2.2.3, OAuth 2.1 §4.3.1), so the whole family is revoked and the
reuse audited. Refresh and resolve re-check the user: removed or deactivated users get nothing.
Only SHA-256 hashes of the tokens are stored.

Refusals raise ``InvalidRequest`` with ``error_code="invalid_grant"`` (what RFC 6749 §5.2 calls it), so
the OAuth endpoint can answer in its own format while others see the usual error tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from orgwarden import ids
from orgwarden.domain.clock import utcnow
from orgwarden.domain.policy import Actor
from orgwarden.errors import InvalidRequest
from orgwarden.services import audit
from orgwarden.services.context import Context
from orgwarden.storage.tables import User, UserToken
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory

_MAX_TOKEN_CHARS = 128  # ours are 51 characters; anything much longer is not one of ours


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    scope: str
    token_type: str = "Bearer"  # noqa: S105 - the RFC 6750 token type
    email: str | None = None  # the account the tokens act for (Claude Code shows it before storing them)


@dataclass(frozen=True, slots=True)
class UserGrant:
    """What a presented access token stands for, as of the look-up."""

    token_id: str
    user_id: str
    organization_id: str
    workspace_id: str | None
    expires_at: datetime
    org_role: str  # the user's organization role at look-up time


def user_is_active(user: User) -> bool:
    """A user may act only while neither removed nor deactivated."""
    return user.removed_at is None and user.deactivated_at is None


def user_state(user: User) -> str:
    return "removed" if user.removed_at is not None else "deactivated" if user.deactivated_at is not None else "active"


class _Unknown(Exception):
    """No refresh token has this hash."""


def _invalid_grant(message: str) -> InvalidRequest:
    return InvalidRequest(message, error_code="invalid_grant")


class UserTokenService:
    def __init__(self, uow: UnitOfWorkFactory, access_ttl_seconds: int, refresh_ttl_seconds: int) -> None:
        self._uow = uow
        self.access_ttl = access_ttl_seconds
        self.refresh_ttl = refresh_ttl_seconds

    def _pair(
        self, uow: UnitOfWork, user: User, *, family_id: str, workspace_id: str | None, client_id: str, now: datetime
    ) -> tuple[IssuedTokens, UserToken, UserToken]:
        access, refresh = ids.new_user_access_token(), ids.new_user_refresh_token()
        rows = []
        for kind, secret, ttl in (("access", access, self.access_ttl), ("refresh", refresh, self.refresh_ttl)):
            row = UserToken(
                id=ids.new_id(ids.USER_TOKEN),
                organization_id=user.organization_id,
                user_id=user.id,
                workspace_id=workspace_id,
                kind=kind,
                secret_hash=ids.hash_secret(secret),
                family_id=family_id,
                client_id=client_id[:255],
                created_at=now,
                expires_at=now + timedelta(seconds=ttl),
            )
            uow.user_tokens.add(row)
            rows.append(row)
        return IssuedTokens(access, refresh, self.access_ttl, "user", email=user.email), rows[0], rows[1]

    async def issue(
        self, *, organization_id: str, user_id: str, workspace_id: str | None, client_id: str, scope: str
    ) -> IssuedTokens:
        """A new grant (a new family) for an active user. ``scope`` is recorded in the audit event."""
        async with self._uow() as uow:
            issued = await self.issue_in(
                uow,
                organization_id=organization_id,
                user_id=user_id,
                workspace_id=workspace_id,
                client_id=client_id,
                scope=scope,
            )
            await uow.commit()
            return issued

    async def issue_in(
        self,
        uow: UnitOfWork,
        *,
        organization_id: str,
        user_id: str,
        workspace_id: str | None,
        client_id: str,
        scope: str,
        ctx: Context | None = None,
    ) -> IssuedTokens:
        """``issue`` inside the caller's unit of work (the device flow marks its code used in the same one)."""
        now = utcnow()
        user = await uow.users.get(organization_id, user_id)
        if user is None or not user_is_active(user):
            raise _invalid_grant(f"user {user_id} is not an active member of the organization")
        family_id = ids.new_id(ids.USER_TOKEN_FAMILY)
        issued, _access, _refresh = self._pair(
            uow, user, family_id=family_id, workspace_id=workspace_id, client_id=client_id, now=now
        )
        ctx = ctx or Context(Actor("user", user.id, organization_id, user.id))
        audit.record(
            uow,
            ctx,
            "user_token.issue",
            "user",
            user.id,
            workspace_id=workspace_id,
            details={"family_id": family_id, "client_id": client_id[:255], "scope": scope[:255]},
        )
        return IssuedTokens(issued.access_token, issued.refresh_token, issued.expires_in, scope, email=issued.email)

    async def refresh(
        self, refresh_token: str, *, client_id: str | None, request_id: str | None = None, source_ip: str | None = None
    ) -> IssuedTokens:
        """A new pair for a live refresh token, which is spent; reuse of a spent one revokes the family.
        ``client_id`` ``None`` (Claude Code sends none) means the client the token was issued to."""
        if not refresh_token.startswith(ids.USER_REFRESH_TOKEN_PREFIX) or len(refresh_token) > _MAX_TOKEN_CHARS:
            refused = _invalid_grant("refresh_token is not an orgwarden refresh token")
        else:
            try:
                return await self._refresh(refresh_token, client_id, request_id, source_ip)
            except _Unknown:
                refused = _invalid_grant("refresh_token is not recognised")
        # A token nobody was issued: audited as the system's (refusals of known tokens are the user's).
        async with self._uow() as uow:
            organization = await uow.organizations.first()
            if organization is not None:
                ctx = Context(Actor("system", "oauth", organization.id), request_id, source_ip)
                details = {"reason": "unknown_token", "client_id": (client_id or "")[:255]}
                audit.record(
                    uow, ctx, "user_token.refresh", "user_token", "unknown", outcome="refused", details=details
                )
                await uow.commit()
        raise refused

    async def _refresh(
        self, refresh_token: str, client_id: str | None, request_id: str | None, source_ip: str | None
    ) -> IssuedTokens:
        now = utcnow()
        async with self._uow() as uow:
            found = await uow.user_tokens.with_user_by_hash(ids.hash_secret(refresh_token), lock=True)
            if (
                found is None
                or found[0].kind != "refresh"
                or not ids.secret_matches(refresh_token, found[0].secret_hash)
            ):
                raise _Unknown
            token, user = found
            ctx = Context(Actor("user", user.id, user.organization_id, user.id), request_id, source_ip)

            async def refuse(why: str, message: str, *, family: bool) -> InvalidRequest:
                revoked = await uow.user_tokens.revoke_family(token.family_id, now) if family else []
                audit.record(
                    uow,
                    ctx,
                    "user_token.refresh",
                    "user",
                    user.id,
                    outcome="refused",
                    details={"reason": why, "token_id": token.id, "family_id": token.family_id, "revoked": revoked},
                )
                await uow.commit()
                return _invalid_grant(message)

            if token.revoked_at is not None:
                if token.replaced_by is not None:
                    raise await refuse(
                        "reused",
                        "refresh_token was already used; every token of this sign-in is now revoked: sign in again",
                        family=True,
                    )
                raise await refuse("revoked", "refresh_token was revoked: sign in again", family=False)
            if token.expires_at <= now:
                raise await refuse("expired", "refresh_token expired: sign in again", family=False)
            if not user_is_active(user):
                raise await refuse(
                    f"user_{user_state(user)}", f"user {user.id} is {user_state(user)}; sign-in refused", family=True
                )
            if client_id is not None and client_id != token.client_id:
                raise await refuse("client_mismatch", "refresh_token was issued to another client_id", family=False)
            issued, _access, new_refresh = self._pair(
                uow,
                user,
                family_id=token.family_id,
                workspace_id=token.workspace_id,
                client_id=token.client_id,
                now=now,
            )
            token.revoked_at, token.replaced_by = now, new_refresh.id
            uow.cache_events.changed("user_token", token.id, now)
            audit.record(
                uow,
                ctx,
                "user_token.refresh",
                "user",
                user.id,
                workspace_id=token.workspace_id,
                details={"family_id": token.family_id, "spent": token.id, "issued": new_refresh.id},
            )
            await uow.commit()
            return issued

    async def revoke(self, token: str, *, request_id: str | None = None, source_ip: str | None = None) -> None:
        """Revoke an access or refresh token (a refresh token takes its whole family with it: RFC 7009
        §2.1 lets it). An unknown or already revoked token is a no-op, as RFC 7009 §2.2 says."""
        if len(token) > _MAX_TOKEN_CHARS or not token.startswith(
            (ids.USER_ACCESS_TOKEN_PREFIX, ids.USER_REFRESH_TOKEN_PREFIX)
        ):
            return
        now = utcnow()
        async with self._uow() as uow:
            found = await uow.user_tokens.with_user_by_hash(ids.hash_secret(token))
            if found is None or found[0].revoked_at is not None:
                return
            row, user = found
            if row.kind == "refresh":
                revoked = await uow.user_tokens.revoke_family(row.family_id, now)
            else:
                await uow.user_tokens.revoke(row, now)
                revoked = [row.id]
            ctx = Context(Actor("user", user.id, user.organization_id, user.id), request_id, source_ip)
            audit.record(
                uow, ctx, "user_token.revoke", "user", user.id, details={"family_id": row.family_id, "revoked": revoked}
            )
            await uow.commit()

    async def resolve(self, access_token: str) -> UserGrant | None:
        """What a presented access token stands for; ``None`` unless unrevoked, unexpired and its user active."""
        if len(access_token) > _MAX_TOKEN_CHARS or not access_token.startswith(ids.USER_ACCESS_TOKEN_PREFIX):
            return None
        async with self._uow() as uow:
            found = await uow.user_tokens.with_user_by_hash(ids.hash_secret(access_token))
        if found is None:
            return None
        token, user = found
        if (
            token.kind != "access"
            or token.revoked_at is not None
            or token.expires_at <= utcnow()
            or not user_is_active(user)
            or not ids.secret_matches(access_token, token.secret_hash)
        ):
            return None
        return UserGrant(
            token_id=token.id,
            user_id=user.id,
            organization_id=user.organization_id,
            workspace_id=token.workspace_id,
            expires_at=token.expires_at,
            org_role=user.role,
        )
