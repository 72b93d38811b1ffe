"""What the data plane needs to know about a presented key, and what changed since it last looked.

The gateway caches the answers (``gateway.keys``); these are the only database round trips it makes
for authentication: one per key on first use, and one small poll of ``cache_events`` a few times a
second per worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from orgwarden import ids
from orgwarden.crypto import SecretBox
from orgwarden.storage.tables import CacheEvent
from orgwarden.storage.uow import UnitOfWorkFactory


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """A data-plane key and its workspace, as of the look-up."""

    key_id: str
    organization_id: str
    workspace_id: str
    status: str  # stored status; "expired" is derived from expires_at at use
    expires_at: datetime | None
    workspace_archived: bool
    allowed_inference_geos: list[str] | str
    default_inference_geo: str
    upstream_api_key: str | None  # the workspace's own, decrypted; None: use the global one
    # A user's access token (``services.user_access``): the user it stands for. ``key_id`` is then ""
    # (no API key: usage records carry ``user_id`` instead) and ``expires_at`` is the token's expiry.
    user_id: str | None = None
    user_email: str | None = None
    token_id: str | None = None


@dataclass(frozen=True, slots=True)
class AdminKeyPresented:
    """The secret is an admin key: refused on the data plane with 403, not 401."""

    key_id: str


@dataclass(frozen=True, slots=True)
class UserTokenRefused:
    """A valid user access token that may not call the data plane (no workspace, no role there):
    refused with 403 ``permission_error`` and ``message``. Cached like a grant, and dropped on the
    same changes (``user_token``, ``user``, ``workspace``)."""

    token_id: str
    user_id: str
    workspace_id: str | None
    message: str


Answer = KeyGrant | AdminKeyPresented | UserTokenRefused | None


class UserTokenResolver(Protocol):
    async def resolve(self, secret: str) -> KeyGrant | UserTokenRefused | None: ...


class CredentialService:
    def __init__(self, uow: UnitOfWorkFactory, box: SecretBox, user_tokens: UserTokenResolver | None = None) -> None:
        self._uow = uow
        self._box = box
        self._user_tokens = user_tokens

    async def resolve(self, secret: str) -> Answer:
        if self._user_tokens is not None and secret.startswith(ids.USER_ACCESS_TOKEN_PREFIX):
            return await self._user_tokens.resolve(secret)
        digest = ids.hash_secret(secret)
        async with self._uow() as uow:
            if secret.startswith(ids.ADMIN_KEY_PREFIX):
                admin = await uow.admin_keys.by_secret_hash(digest)
                if admin is not None and admin.status == "active" and ids.secret_matches(secret, admin.secret_hash):
                    return AdminKeyPresented(admin.id)
                return None
            found = await uow.api_keys.with_workspace_by_hash(digest)
        if found is None:
            return None
        key, workspace = found
        if not ids.secret_matches(secret, key.secret_hash):
            return None
        upstream = None
        if workspace.upstream_api_key_encrypted:
            upstream = self._box.open(workspace.upstream_api_key_encrypted, workspace.id)
        return KeyGrant(
            key_id=key.id,
            organization_id=key.organization_id,
            workspace_id=workspace.id,
            status=key.status,
            expires_at=key.expires_at,
            workspace_archived=workspace.archived_at is not None,
            allowed_inference_geos=workspace.allowed_inference_geos,
            default_inference_geo=workspace.default_inference_geo,
            upstream_api_key=upstream,
        )

    async def changes_since(self, low_seq: int) -> list[CacheEvent]:
        async with self._uow() as uow:
            return await uow.cache_events.since(low_seq)

    async def prune_changes(self, before: datetime) -> None:
        async with self._uow() as uow:
            await uow.cache_events.prune(before)
            await uow.commit()

    async def last_change(self) -> int:
        async with self._uow() as uow:
            return await uow.cache_events.last_seq()
