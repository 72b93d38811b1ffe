"""The Admin API's cache of user access-token look-ups (``api.user_auth``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from orgwarden.api.user_auth import UserTokenCache
from orgwarden.domain.clock import utcnow

TOKEN = "ow-at01-" + "x" * 43


@dataclass(frozen=True)
class FakeGrant:
    token_id: str
    user_id: str
    organization_id: str
    expires_at: datetime
    org_role: str


class Resolver:
    def __init__(self, grant: FakeGrant | None) -> None:
        self.grant = grant
        self.calls = 0

    async def __call__(self, token: str) -> FakeGrant | None:
        self.calls += 1
        return self.grant


def grant(role: str = "developer", expires_in: float = 3600) -> FakeGrant:
    return FakeGrant("utok_1", "user_1", "org_1", utcnow() + timedelta(seconds=expires_in), role)


def test_a_token_is_looked_up_once_then_served_from_memory() -> None:
    resolve = Resolver(grant())
    cache = UserTokenCache(resolve)

    async def run() -> None:
        for _ in range(5):
            actor = await cache.actor(TOKEN)
            assert actor is not None
            assert actor.kind == "user"
            assert actor.org_role == "developer"
            assert actor.user_id == "user_1"
            assert actor.id == "utok_1"

    asyncio.run(run())
    assert resolve.calls == 1


def test_a_user_change_or_a_token_revocation_drops_the_entry() -> None:
    resolve = Resolver(grant())
    cache = UserTokenCache(resolve)

    async def run() -> None:
        await cache.actor(TOKEN)
        resolve.grant = grant("billing")
        cache.invalidate("user", "user_1")
        actor = await cache.actor(TOKEN)
        assert actor is not None
        assert actor.org_role == "billing"
        resolve.grant = None
        cache.invalidate("user_token", "utok_1")
        assert await cache.actor(TOKEN) is None
        cache.invalidate("api_key", "whatever")  # others' changes leave it alone

    asyncio.run(run())
    assert resolve.calls == 3


def test_an_expired_token_is_refused_even_from_the_cache() -> None:
    cache = UserTokenCache(Resolver(grant(expires_in=-1)))
    assert asyncio.run(cache.actor(TOKEN)) is None


def test_an_overlong_token_is_refused_without_a_look_up() -> None:
    resolve = Resolver(grant())
    assert asyncio.run(UserTokenCache(resolve).actor(TOKEN + "y" * 200)) is None
    assert resolve.calls == 0
