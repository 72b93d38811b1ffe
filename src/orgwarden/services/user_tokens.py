"""OAuth tokens of signed-in users: issue, refresh (rotating), revoke, resolve.

An access token (``ow-at01-``) is short-lived; a refresh token (``ow-rt01-``) is exchanged for a new
pair on use and is then spent. Tokens of one grant share a family: presenting a spent refresh token
again means it leaked (RFC 6819 §5.2.2.3, OAuth 2.1 §4.3.1), so the whole family is revoked and the
reuse audited. Refresh and resolve re-check the user: removed or deactivated users get nothing.
Only SHA-256 hashes of the tokens are stored.

A sign-in (a family) is bounded in age (``signin_max_age_seconds``): no token of it outlives that.
When the identity provider gave a refresh token at the browser sign-in the device was approved from,
the family carries it (sealed) and every refresh asks the IdP first (``identity.recheck``): the IdP
refusing it (``invalid_grant``: the person was deactivated or deleted there) revokes the family; an
IdP that cannot be reached answers ``temporarily_unavailable`` (503) and spends nothing, so the
client can retry. The IdP is never called inside a transaction.

Refusals raise ``InvalidRequest`` with ``error_code="invalid_grant"`` (what RFC 6749 §5.2 calls it), so
the OAuth endpoint can answer in its own format while others see the usual error tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from orgwarden import ids
from orgwarden.domain.clock import utcnow
from orgwarden.domain.policy import Actor
from orgwarden.errors import InvalidRequest
from orgwarden.identity import recheck
from orgwarden.services import audit
from orgwarden.services.context import Context
from orgwarden.storage.tables import User, UserToken, UserTokenFamily
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory

if TYPE_CHECKING:
    from orgwarden.crypto import SecretBox

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


class OAuthError(InvalidRequest):
    """A refusal of the OAuth endpoints; ``error_code`` is the RFC 6749 §5.2 / RFC 8628 §3.5 error."""

    def __init__(self, error: str, message: str, *, status: int = 400) -> None:
        super().__init__(message, error_code=error)
        self.http_status = status


@dataclass(frozen=True, slots=True)
class _Live:
    """A refresh token that passed every check, with what the refresh needs of it."""

    token: UserToken
    user: User
    family: UserTokenFamily | None
    ends_at: datetime  # the sign-in's age limit


class UserTokenService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        access_ttl_seconds: int,
        refresh_ttl_seconds: int,
        *,
        max_age_seconds: int = 30 * 86_400,
        box: SecretBox | None = None,
    ) -> None:
        self._uow = uow
        self.access_ttl = access_ttl_seconds
        self.refresh_ttl = refresh_ttl_seconds
        self.max_age = timedelta(seconds=max_age_seconds)
        self._box = box
        # The identity provider that refreshes re-check the person with; set by the app when OIDC is on
        # and ``oidc_recheck_on_refresh`` (the CLI never refreshes, so it never sets one).
        self.idp: recheck.IdpRechecker | None = None

    def _pair(
        self,
        uow: UnitOfWork,
        user: User,
        *,
        family_id: str,
        workspace_id: str | None,
        client_id: str,
        now: datetime,
        ends_at: datetime,
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
                expires_at=min(now + timedelta(seconds=ttl), ends_at),  # never past the sign-in's age limit
            )
            uow.user_tokens.add(row)
            rows.append(row)
        expires_in = max(1, int((rows[0].expires_at - now).total_seconds()))
        return IssuedTokens(access, refresh, expires_in, "user", email=user.email), rows[0], rows[1]

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
        idp_refresh_token: str | None = None,
    ) -> IssuedTokens:
        """``issue`` inside the caller's unit of work (the device flow marks its code used in the same one).
        ``idp_refresh_token``: the identity provider's, which every refresh of this family re-checks with."""
        now = utcnow()
        user = await uow.users.get(organization_id, user_id)
        if user is None or not user_is_active(user):
            raise _invalid_grant(f"user {user_id} is not an active member of the organization")
        family_id = ids.new_id(ids.USER_TOKEN_FAMILY)
        sealed = None
        if idp_refresh_token is not None and self._box is not None:
            sealed = recheck.seal(self._box, idp_refresh_token, family_id)
        uow.user_tokens.add_family(
            UserTokenFamily(
                id=family_id,
                organization_id=user.organization_id,
                user_id=user.id,
                created_at=now,
                idp_refresh_token=sealed,
            )
        )
        issued, _access, _refresh = self._pair(
            uow,
            user,
            family_id=family_id,
            workspace_id=workspace_id,
            client_id=client_id,
            now=now,
            ends_at=now + self.max_age,
        )
        ctx = ctx or Context(Actor("user", user.id, organization_id, user.id))
        audit.record(
            uow,
            ctx,
            "user_token.issue",
            "user",
            user.id,
            workspace_id=workspace_id,
            details={
                "family_id": family_id,
                "client_id": client_id[:255],
                "scope": scope[:255],
                "idp_recheck": sealed is not None,
            },
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

    async def _live(
        self,
        uow: UnitOfWork,
        refresh_token: str,
        client_id: str | None,
        ctx_of: tuple[str | None, str | None],
        now: datetime,
        *,
        lock: bool,
    ) -> _Live:
        """The refresh token's row, checked: refused (audited, committed) unless it may be refreshed now."""
        found = await uow.user_tokens.with_user_by_hash(ids.hash_secret(refresh_token), lock=lock)
        if found is None or found[0].kind != "refresh" or not ids.secret_matches(refresh_token, found[0].secret_hash):
            raise _Unknown
        token, user = found
        family = await uow.user_tokens.family(token.family_id)
        ends_at = (family.created_at if family is not None else token.created_at) + self.max_age

        async def refuse(why: str, message: str, *, family: bool) -> InvalidRequest:
            await self._refuse(uow, token, user, ctx_of, now, why, family=family)
            return _invalid_grant(message)

        if token.revoked_at is not None:
            if token.replaced_by is not None:
                raise await refuse(
                    "reused",
                    "refresh_token was already used; every token of this sign-in is now revoked: sign in again",
                    family=True,
                )
            raise await refuse("revoked", "refresh_token was revoked: sign in again", family=False)
        if ends_at <= now:
            days = self.max_age.total_seconds() / 86_400
            raise await refuse(
                "max_age",
                f"this sign-in is older than the longest a sign-in may last ({days:g} days,"
                " ORGWARDEN_SIGNIN_MAX_AGE_SECONDS): sign in again",
                family=True,
            )
        if token.expires_at <= now:
            raise await refuse("expired", "refresh_token expired: sign in again", family=False)
        if not user_is_active(user):
            raise await refuse(
                f"user_{user_state(user)}", f"user {user.id} is {user_state(user)}; sign-in refused", family=True
            )
        if client_id is not None and client_id != token.client_id:
            raise await refuse("client_mismatch", "refresh_token was issued to another client_id", family=False)
        return _Live(token, user, family, ends_at)

    async def _refuse(
        self,
        uow: UnitOfWork,
        token: UserToken,
        user: User,
        ctx_of: tuple[str | None, str | None],
        now: datetime,
        why: str,
        *,
        family: bool,
        detail: str | None = None,
    ) -> None:
        """Audit a refused refresh (``user_token.refresh``, ``details.reason``), revoking the family if asked."""
        revoked = await uow.user_tokens.revoke_family(token.family_id, now) if family else []
        details: dict[str, object] = {
            "reason": why,
            "token_id": token.id,
            "family_id": token.family_id,
            "revoked": revoked,
        }
        if detail is not None:
            details["idp_said"] = detail
        ctx = Context(Actor("user", user.id, user.organization_id, user.id), *ctx_of)
        audit.record(uow, ctx, "user_token.refresh", "user", user.id, outcome="refused", details=details)
        await uow.commit()

    async def _refresh(
        self, refresh_token: str, client_id: str | None, request_id: str | None, source_ip: str | None
    ) -> IssuedTokens:
        ctx_of = (request_id, source_ip)
        idp_token: str | None = None
        async with self._uow() as uow:  # checked first, read only: the IdP is not called in a transaction
            live = await self._live(uow, refresh_token, client_id, ctx_of, utcnow(), lock=False)
            if self.idp is not None and self._box is not None and live.family is not None:
                idp_token = recheck.unseal(self._box, live.family.idp_refresh_token, live.family.id)
        rotated: str | None = None
        if idp_token is not None and self.idp is not None:
            answer = await self.idp.recheck(idp_token)
            if answer.outcome != "ok":
                raise await self._idp_said_no(refresh_token, client_id, ctx_of, answer)
            rotated = answer.refresh_token
        now = utcnow()
        async with self._uow() as uow:  # again, locked: a concurrent refresh may have spent it meanwhile
            live = await self._live(uow, refresh_token, client_id, ctx_of, now, lock=True)
            token, user = live.token, live.user
            issued, _access, new_refresh = self._pair(
                uow,
                user,
                family_id=token.family_id,
                workspace_id=token.workspace_id,
                client_id=token.client_id,
                now=now,
                ends_at=live.ends_at,
            )
            token.revoked_at, token.replaced_by = now, new_refresh.id
            uow.cache_events.changed("user_token", token.id, now)
            if idp_token is not None and live.family is not None and self._box is not None:
                live.family.idp_checked_at = now
                if rotated is not None and rotated != idp_token:  # the IdP rotated its token: keep the new one
                    live.family.idp_refresh_token = recheck.seal(self._box, rotated, live.family.id)
            audit.record(
                uow,
                Context(Actor("user", user.id, user.organization_id, user.id), request_id, source_ip),
                "user_token.refresh",
                "user",
                user.id,
                workspace_id=token.workspace_id,
                details={
                    "family_id": token.family_id,
                    "spent": token.id,
                    "issued": new_refresh.id,
                    "idp_recheck": idp_token is not None,
                },
            )
            await uow.commit()
            return issued

    async def _idp_said_no(
        self,
        refresh_token: str,
        client_id: str | None,
        ctx_of: tuple[str | None, str | None],
        answer: recheck.IdpRecheck,
    ) -> InvalidRequest:
        """The IdP refused the person (the family is revoked: ``invalid_grant``) or could not answer
        (nothing is spent: ``temporarily_unavailable``, 503, to be retried). Audited either way."""
        now = utcnow()
        async with self._uow() as uow:
            live = await self._live(uow, refresh_token, client_id, ctx_of, now, lock=True)
            refused = answer.outcome == "refused"
            await self._refuse(
                uow,
                live.token,
                live.user,
                ctx_of,
                now,
                "idp_refused" if refused else "idp_unavailable",
                family=refused,
                detail=answer.detail,
            )
        if refused:
            return _invalid_grant(
                f"the identity provider no longer accepts {live.user.email} (it refused to refresh this sign-in:"
                " the account may be deactivated or deleted there); every token of this sign-in is revoked"
            )
        return OAuthError(
            "temporarily_unavailable",
            "the identity provider could not be asked whether this sign-in is still valid; try again shortly"
            " (the refresh token was not used and still works)",
            status=503,
        )

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
