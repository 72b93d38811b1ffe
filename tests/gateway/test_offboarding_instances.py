"""Offboarding closes every door on every instance within one second (PostgreSQL + Redis).

Two ``orgwarden serve`` processes share one PostgreSQL database and Redis. A second admin holds an
admin key and data-plane keys they created with it; both instances have every credential cached
(the data-plane answers come from each worker's key cache). The user is then removed through the
Admin API of instance A (or deactivated by the service, as the CLI and SCIM do), and both instances
are polled until every credential is refused: the admin key on the Admin API and on the data plane,
each data-plane key, the user's browser session (``/auth/session``), and — where this build accepts
it on those surfaces (the roles and attrib branches) — the user's access token.
The poll stops at a 1 s deadline counted from the moment the change was committed; the test asserts
that every credential was refused before it (by a request sent before it), and stays refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import pytest

from orgwarden.config import load_settings
from orgwarden.domain.policy import Actor
from orgwarden.services.context import Context
from orgwarden.services.users import UserService
from orgwarden.storage.engine import create_engine, session_factory
from orgwarden.storage.uow import UnitOfWorkFactory
from tests.api.test_offboarding import PROBE, admin_with_keys, after_offboarding, sign_in
from tests.conftest import TLS, Server, another_instance, dedicated_server, redis_settings, stop_server

LIMIT = 1.0  # seconds: the bound


@pytest.fixture(scope="module")
def instances() -> Iterator[list[Server]]:
    """[instance A, instance B] on one fresh PostgreSQL database, sharing Redis."""
    with dedicated_server("postgres", redis_settings()) as first:
        second = another_instance(first, first.log_path.parent)
        try:
            yield [first, second]
        finally:
            stop_server(second)


@dataclass
class Door:
    """One credential on one surface of one instance: how to knock, and what refusal looks like."""

    name: str
    knock: Callable[[], httpx.Response]
    refused: int = 401


def doors(instances: list[Server], who: dict[str, Any], grant: dict[str, Any]) -> list[Door]:
    """Every way in the user had, on both instances, each checked open (and so cached) first."""
    found: list[Door] = []
    for label, server in zip("AB", instances, strict=True):
        http = httpx.Client(
            base_url=server.base_url, timeout=10, headers={"anthropic-version": "2023-06-01"}, verify=TLS
        )

        def knock(path: str, secret: str, http: httpx.Client = http, bearer: bool = False) -> httpx.Response:
            header = {"authorization": f"Bearer {secret}"} if bearer else {"x-api-key": secret}
            return http.get(path, headers=header)

        def session(cookie: str = grant["session_cookie"], http: httpx.Client = http) -> httpx.Response:
            return http.get("/auth/session", headers={"cookie": f"ow_session={cookie}"})

        admin = who["admin_key"]
        found.append(
            Door(f"{label}: admin key on the Admin API", lambda k=knock, s=admin: k("/v1/organizations/me", s))
        )
        # on the data plane an admin key is refused while valid (403), and unknown once revoked (401)
        found.append(Door(f"{label}: admin key on the data plane", lambda k=knock, s=admin: k(PROBE, s)))
        for key in who["keys"]:
            found.append(Door(f"{label}: API key {key['id']}", lambda k=knock, s=key["key"]: k(PROBE, s)))
        token = grant["access"]
        for surface, path in (("data plane", PROBE), ("Admin API", "/v1/organizations/me")):
            door = Door(
                f"{label}: access token on the {surface}", lambda k=knock, p=path, t=token: k(p, t, bearer=True)
            )
            if door.knock().status_code == 200:  # accepted here once the roles and attrib branches are in
                found.append(door)
        found.append(Door(f"{label}: browser session", session))
    return found


def warm(doors: list[Door]) -> None:
    """Knock on every door twice: the first answer may come from the database, the second from the cache."""
    for _ in range(2):
        for door in doors:
            status = door.knock().status_code
            assert status in (200, 403), f"{door.name}: {status} before offboarding"
            assert status == 200 or "admin key on the data plane" in door.name


def poll_until_refused(doors: list[Door], since: float) -> dict[str, float]:
    """Knock on every door until each is refused, for at most LIMIT seconds after ``since``.

    Returns, per door, how long after ``since`` the request that first got the refusal was sent. A
    door refused once must stay refused. Fails, naming the doors, if the deadline passes first."""
    refused_at: dict[str, float] = {}
    while len(refused_at) < len(doors):
        if time.monotonic() - since > LIMIT:
            still_open = [door.name for door in doors if door.name not in refused_at]
            pytest.fail(f"still accepted {LIMIT}s after the change: {still_open}")
        for door in doors:
            sent = time.monotonic() - since
            status = door.knock().status_code
            if status == door.refused:
                refused_at.setdefault(door.name, sent)
            else:
                assert door.name not in refused_at, f"{door.name}: accepted again ({status}) after a refusal"
        time.sleep(0.01)
    return refused_at


def assert_stays_refused(doors: list[Door]) -> None:
    for door in doors:
        response = door.knock()
        assert response.status_code == door.refused, f"{door.name}: {response.status_code} {response.text}"
        assert response.json()["error"]["type"] == "authentication_error"


def deactivate(server: Server, user_id: str) -> None:
    """``UserService.deactivate`` in this process (what ``orgwarden users deactivate`` and SCIM call),
    so that the clock starts when the change is committed, not when a CLI process has exited."""

    async def main() -> None:
        engine = create_engine(load_settings(**server.db.settings_kwargs))
        try:
            users = UserService(UnitOfWorkFactory(session_factory(engine)))
            actor = Actor("cli", "cli:test", server.organization["id"], server.user["id"])
            await users.deactivate(Context(actor, None, "cli"), user_id)
        finally:
            await engine.dispose()

    asyncio.run(main())


def test_a_user_removed_on_one_instance_is_refused_on_every_instance_within_one_second(
    instances: list[Server],
) -> None:
    a, _b = instances
    client: anthropic.Anthropic = a.client()
    who = admin_with_keys(a, client, n_keys=2)
    grant = sign_in(a, who["user"].id, who["keys"][0]["workspace_id"])
    every = doors(instances, who, grant)
    warm(every)

    removed = client.organization.users.remove(who["user"].id)
    since = time.monotonic()
    assert removed.type == "user_deleted"

    took = poll_until_refused(every, since)
    print(f"\nremoval effective on both instances after {max(took.values()):.3f}s: {took}")
    assert max(took.values()) < LIMIT
    assert_stays_refused(every)
    after_offboarding(a, grant)


def test_a_user_deactivated_is_refused_on_every_instance_within_one_second(instances: list[Server]) -> None:
    a, _b = instances
    who = admin_with_keys(a, a.client(), n_keys=2)
    grant = sign_in(a, who["user"].id, who["keys"][0]["workspace_id"])
    every = doors(instances, who, grant)
    warm(every)

    deactivate(a, who["user"].id)
    since = time.monotonic()

    took = poll_until_refused(every, since)
    print(f"\ndeactivation effective on both instances after {max(took.values()):.3f}s: {took}")
    assert max(took.values()) < LIMIT
    assert_stays_refused(every)
    after_offboarding(a, grant)
