"""Signed-in users' access tokens (``ow-at01-...``) on the Admin API, looked up without a database
round trip per request.

Each worker keeps what ``UserTokenService.resolve`` answered for a token (by the token's SHA-256,
never the token) for at most ``MAX_AGE`` seconds, and never past the token's own expiry. The key
cache's poll of ``cache_events`` (``gateway.keys.KeyCache.listeners``) tells it what changed anywhere:
``user_token`` drops that token, ``user`` every token of that user (a role change, a removal, a
deactivation), so a revocation or a new role is seen within a poll interval on every instance.
Unknown tokens are remembered for ``NEGATIVE_TTL`` seconds, and the map is bounded. A look-up that ran
while an invalidation arrived is used once but not kept. When the database cannot be reached, an
entry past ``MAX_AGE`` (but not past the token's expiry) is served stale, as the key cache does.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

from orgwarden import ids
from orgwarden.domain.clock import utcnow
from orgwarden.domain.policy import Actor
from orgwarden.storage.failures import is_unavailable

PREFIX: Final = ids.USER_ACCESS_TOKEN_PREFIX
MAX_TOKEN_CHARS: Final = 128  # ours are 51 characters; longer is not one of ours
MAX_AGE: Final = 30.0
NEGATIVE_TTL: Final = 1.0
MAX_ENTRIES: Final = 50_000


class Grant(Protocol):
    """What ``UserTokenService.resolve`` answers (``services.user_tokens.UserGrant``)."""

    @property
    def token_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def organization_id(self) -> str: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def org_role(self) -> str: ...


Resolve = Callable[[str], Awaitable[Grant | None]]


def is_user_token(secret: str) -> bool:
    return secret.startswith(PREFIX)


@dataclass(slots=True)
class _Entry:
    actor: Actor | None
    expires_at: datetime | None  # the token's own expiry
    fresh_until: float  # monotonic


class UserTokenCache:
    def __init__(self, resolve: Resolve) -> None:
        self._resolve = resolve
        self._entries: dict[str, _Entry] = {}
        self._digest_of_token: dict[str, str] = {}
        self._digests_of_user: dict[str, set[str]] = {}
        self._generation = 0

    async def actor(self, token: str) -> Actor | None:
        """The user acting with ``token``, or ``None`` if it is unknown, expired or revoked, or its user
        is no longer active."""
        if len(token) > MAX_TOKEN_CHARS:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        entry = self._entries.get(digest)
        if entry is not None and entry.fresh_until > now:
            return _live(entry)
        generation = self._generation
        try:
            grant = await self._resolve(token)
        except Exception as exc:
            if entry is not None and entry.actor is not None and is_unavailable(exc):
                return _live(entry)  # stale, but nobody can revoke it while the database is away
            raise
        actor = None
        if grant is not None:
            actor = Actor("user", grant.token_id, grant.organization_id, grant.user_id, grant.org_role)
        fresh = _Entry(actor, grant.expires_at if grant else None, now + (MAX_AGE if grant else NEGATIVE_TTL))
        if generation == self._generation:
            self._store(digest, fresh)
        return _live(fresh)

    def _store(self, digest: str, entry: _Entry) -> None:
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
            self._digest_of_token.clear()
            self._digests_of_user.clear()
        self._entries[digest] = entry
        if entry.actor is not None and entry.actor.user_id is not None:
            self._digest_of_token[entry.actor.id] = digest
            self._digests_of_user.setdefault(entry.actor.user_id, set()).add(digest)

    def invalidate(self, entity_type: str, entity_id: str) -> None:
        """A change announced by ``cache_events`` (any instance)."""
        if entity_type == "user_token":
            self._generation += 1
            if entity_id in self._digest_of_token:
                self._entries.pop(self._digest_of_token.pop(entity_id), None)
        elif entity_type == "user":
            self._generation += 1
            for digest in self._digests_of_user.pop(entity_id, set()):
                self._entries.pop(digest, None)

    def __len__(self) -> int:
        return len(self._entries)


def _live(entry: _Entry) -> Actor | None:
    if entry.actor is None or entry.expires_at is None:
        return None
    expires = entry.expires_at if entry.expires_at.tzinfo else entry.expires_at.replace(tzinfo=UTC)
    return entry.actor if expires > utcnow() else None
