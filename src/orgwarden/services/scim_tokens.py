"""SCIM tokens: what an identity provider presents on ``/scim/v2`` (``Authorization: Bearer``).

``ow-scim01-`` + 256 random bits, shown once at creation; only the SHA-256 is stored. Created, listed
and revoked with the CLI (``orgwarden scim-token``); every change is audited, and so is every refused
token (``scim.authenticate``), under the organization it would have acted in.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from orgwarden import ids
from orgwarden.domain import workspaces as rules
from orgwarden.domain.clock import utcnow
from orgwarden.domain.policy import Actor
from orgwarden.errors import AuthenticationFailed, NotFound
from orgwarden.services import audit
from orgwarden.services.context import Context
from orgwarden.services.validation import checked
from orgwarden.storage.tables import ScimToken
from orgwarden.storage.uow import UnitOfWorkFactory

SCIM_TOKEN_PREFIX = "ow-scim01-"  # noqa: S105 - a prefix, not a secret
SCIM_TOKEN_ID = "scimtok"  # noqa: S105 - an id prefix
LAST_USED_RESOLUTION = timedelta(minutes=1)  # ``last_used_at`` is written at most this often


@dataclass(frozen=True, slots=True)
class CreatedScimToken:
    token: ScimToken
    secret: str


class ScimTokenService:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def create(self, ctx: Context, *, name: str = "scim") -> CreatedScimToken:
        clean_name = checked(rules.check_name, name)
        secret = SCIM_TOKEN_PREFIX + secrets.token_urlsafe(32)
        async with self._uow() as uow:
            token = ScimToken(
                id=ids.new_id(SCIM_TOKEN_ID),
                organization_id=ctx.organization_id,
                name=clean_name,
                secret_hash=ids.hash_secret(secret),
                partial_hint=f"{secret[: len(SCIM_TOKEN_PREFIX) + 3]}...{secret[-4:]}",
                created_at=utcnow(),
            )
            uow.scim_tokens.add(token)
            audit.record(uow, ctx, "scim_token.create", "scim_token", token.id, details={"name": clean_name})
            await uow.commit()
        return CreatedScimToken(token, secret)

    async def list(self, ctx: Context) -> list[ScimToken]:
        async with self._uow() as uow:
            return await uow.scim_tokens.all(ctx.organization_id)

    async def revoke(self, ctx: Context, token_id: str) -> ScimToken:
        async with self._uow() as uow:
            token = await uow.scim_tokens.get(ctx.organization_id, token_id)
            if token is None:
                raise NotFound(f"SCIM token {token_id!r} not found")
            if token.revoked_at is None:
                token.revoked_at = utcnow()
                audit.record(uow, ctx, "scim_token.revoke", "scim_token", token.id)
            await uow.commit()
            return token

    async def authenticate(self, secret: str | None, *, request_id: str | None, source_ip: str | None) -> Context:
        """The context a presented SCIM token acts in; 401 (audited) for a missing, unknown or revoked one."""
        now = utcnow()
        async with self._uow() as uow:
            token = None
            if secret:
                token = await uow.scim_tokens.by_secret_hash(ids.hash_secret(secret))
            if token is not None and ids.secret_matches(secret or "", token.secret_hash) and token.revoked_at is None:
                if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
                    token.last_used_at = now
                    await uow.commit()
                return Context(Actor("scim_token", token.id, token.organization_id), request_id, source_ip)
            reason = "missing" if not secret else ("revoked" if token is not None else "unknown")
            org = await uow.organizations.get(token.organization_id) if token else await uow.organizations.first()
            if org is not None:
                ctx = Context(Actor("system", "scim", org.id), request_id, source_ip)
                target = token.id if token is not None else "unknown"
                audit.record(
                    uow, ctx, "scim.authenticate", "scim_token", target, outcome="denied", details={"reason": reason}
                )
                await uow.commit()
        messages = {
            "missing": "missing credentials: send a SCIM token as Authorization: Bearer",
            "revoked": "this SCIM token has been revoked",
            "unknown": "invalid SCIM token",
        }
        raise AuthenticationFailed(messages[reason])
