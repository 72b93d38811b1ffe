"""Which change events drop which cached data-plane credentials (``gateway.keys.KeyCache``)."""

from __future__ import annotations

import asyncio

from orgwarden.gateway.keys import KeyCache
from orgwarden.services.credentials import Answer, KeyGrant

KEY = "sk-ant-api03-" + "k" * 40


class Credentials:
    """Answers every look-up with the same grant, and counts the look-ups."""

    def __init__(self) -> None:
        self.calls = 0

    async def resolve(self, secret: str) -> Answer:
        self.calls += 1
        return KeyGrant(
            key_id="apikey_1",
            organization_id="org_1",
            workspace_id="wrkspc_1",
            status="active",
            expires_at=None,
            workspace_archived=False,
            allowed_inference_geos="unrestricted",
            default_inference_geo="global",
            upstream_api_key=None,
        )


def looked_up_after(entity_type: str, entity_id: str) -> int:
    """How many database look-ups two requests with the key make around one change event."""
    credentials = Credentials()
    cache = KeyCache(credentials, poll_interval=60)  # type: ignore[arg-type]

    async def main() -> None:
        await cache.lookup(KEY)
        cache.invalidate(entity_type, entity_id)
        await cache.lookup(KEY)

    asyncio.run(main())
    return credentials.calls


def test_a_browser_session_ending_leaves_every_cached_key_in_place() -> None:
    assert looked_up_after("user_session", "usess_1") == 1  # signing out is not a reason to forget keys


def test_the_keys_own_change_and_an_unknown_kind_of_change_drop_it() -> None:
    assert looked_up_after("api_key", "apikey_1") == 2
    assert looked_up_after("workspace", "wrkspc_1") == 2
    assert looked_up_after("something_new", "x") == 2  # unknown: everything is dropped, to be safe
    assert looked_up_after("api_key", "apikey_other") == 1
