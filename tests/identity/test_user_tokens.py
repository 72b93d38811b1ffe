"""The user token service on a real database (SQLite and PostgreSQL): issue, resolve, rotate on
refresh, family revocation on reuse, RFC 7009 revocation, and refusal of removed/deactivated users."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select

from orgwarden import ids
from orgwarden.config import load_settings
from orgwarden.domain.clock import utcnow
from orgwarden.errors import InvalidRequest
from orgwarden.services.user_tokens import UserTokenService
from orgwarden.storage.engine import create_engine, session_factory
from orgwarden.storage.tables import AuditEvent, CacheEvent, User, UserToken
from orgwarden.storage.uow import UnitOfWorkFactory
from tests.conftest import BACKENDS, Database, cli, drop_database, make_database

T = TypeVar("T")


class Env:
    def __init__(self, db: Database, init: dict[str, Any]) -> None:
        self.db = db
        self.org_id: str = init["organization"]["id"]
        self.user_id: str = init["user"]["id"]

    def run(self, work: Callable[[UserTokenService, UnitOfWorkFactory], Awaitable[T]], access_ttl: int = 3600) -> T:
        async def main() -> T:
            engine = create_engine(load_settings(**self.db.settings_kwargs))
            try:
                uow = UnitOfWorkFactory(session_factory(engine))
                return await work(UserTokenService(uow, access_ttl, 86_400), uow)
            finally:
                await engine.dispose()

        return asyncio.run(main())


@pytest.fixture(scope="module", params=BACKENDS)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    db = make_database(request.param, Path(tmp_path_factory.mktemp("tokens")))
    init = json.loads(cli(db, "init", "--json", "--org-name", "Acme", "--admin-email", "root@acme.test").stdout)
    yield Env(db, init)
    drop_database(db)


def _new_user(env: Env, email: str) -> str:
    async def work(_svc: UserTokenService, uow: UnitOfWorkFactory) -> str:
        async with uow() as u:
            user = User(
                id=ids.new_id(ids.USER),
                organization_id=env.org_id,
                email=email,
                name=email,
                role="developer",
                added_at=utcnow(),
                removed_at=None,
            )
            u.users.add(user)
            await u.commit()
            return user.id

    return env.run(work)


def test_issued_access_token_resolves_to_the_user_and_workspace(env: Env) -> None:
    async def work(svc: UserTokenService, _uow: UnitOfWorkFactory) -> None:
        issued = await svc.issue(
            organization_id=env.org_id, user_id=env.user_id, workspace_id=None, client_id="cli", scope="user"
        )
        assert issued.access_token.startswith(ids.USER_ACCESS_TOKEN_PREFIX)
        assert issued.refresh_token.startswith(ids.USER_REFRESH_TOKEN_PREFIX)
        assert issued.expires_in == 3600
        assert issued.token_type == "Bearer"
        grant = await svc.resolve(issued.access_token)
        assert grant is not None
        assert (grant.user_id, grant.organization_id, grant.org_role) == (env.user_id, env.org_id, "admin")
        assert await svc.resolve(issued.refresh_token) is None  # a refresh token is not an access token
        assert await svc.resolve(issued.access_token + "x") is None
        assert await svc.resolve("ow-at01-" + "A" * 43) is None

    env.run(work)


def test_only_hashes_are_stored(env: Env) -> None:
    async def work(svc: UserTokenService, uow: UnitOfWorkFactory) -> None:
        issued = await svc.issue(
            organization_id=env.org_id, user_id=env.user_id, workspace_id=None, client_id="cli", scope="user"
        )
        async with uow() as u:
            rows = (await u.user_tokens.session.scalars(select(UserToken))).all()
        hashes = {row.secret_hash for row in rows}
        assert ids.hash_secret(issued.access_token) in hashes
        assert all(issued.access_token not in (row.secret_hash, row.id) for row in rows)

    env.run(work)


def test_refresh_rotates_and_reuse_revokes_the_whole_family(env: Env) -> None:
    async def work(svc: UserTokenService, uow: UnitOfWorkFactory) -> None:
        first = await svc.issue(
            organization_id=env.org_id, user_id=env.user_id, workspace_id=None, client_id="cli", scope="user"
        )
        second = await svc.refresh(first.refresh_token, client_id="cli")
        assert second.refresh_token != first.refresh_token
        assert await svc.resolve(second.access_token) is not None
        with pytest.raises(InvalidRequest, match="already used") as refused:
            await svc.refresh(first.refresh_token, client_id="cli")
        assert refused.value.error_code == "invalid_grant"
        # The family is gone: the live refresh token and both access tokens.
        assert await svc.resolve(second.access_token) is None
        assert await svc.resolve(first.access_token) is None
        with pytest.raises(InvalidRequest, match="revoked"):
            await svc.refresh(second.refresh_token, client_id="cli")
        async with uow() as u:
            events = (
                await u.user_tokens.session.scalars(
                    select(AuditEvent).where(AuditEvent.action == "user_token.refresh", AuditEvent.outcome == "refused")
                )
            ).all()
        assert any(e.details["reason"] == "reused" and len(e.details["revoked"]) >= 2 for e in events)

    env.run(work)


def test_refresh_refuses_another_client_and_garbage(env: Env) -> None:
    async def work(svc: UserTokenService, _uow: UnitOfWorkFactory) -> None:
        issued = await svc.issue(
            organization_id=env.org_id, user_id=env.user_id, workspace_id=None, client_id="cli", scope="user"
        )
        with pytest.raises(InvalidRequest, match="another client_id"):
            await svc.refresh(issued.refresh_token, client_id="someone-else")
        with pytest.raises(InvalidRequest, match="not an orgwarden refresh token"):
            await svc.refresh("nonsense", client_id="cli")
        with pytest.raises(InvalidRequest, match="not recognised"):
            await svc.refresh("ow-rt01-" + "B" * 43, client_id="cli")
        assert (await svc.refresh(issued.refresh_token, client_id="cli")).access_token

    env.run(work)


def test_expired_access_tokens_do_not_resolve(env: Env) -> None:
    async def work(svc: UserTokenService, uow: UnitOfWorkFactory) -> None:
        issued = await svc.issue(
            organization_id=env.org_id, user_id=env.user_id, workspace_id=None, client_id="cli", scope="user"
        )
        async with uow() as u:
            found = await u.user_tokens.with_user_by_hash(ids.hash_secret(issued.access_token))
            assert found is not None
            found[0].expires_at = utcnow() - timedelta(seconds=1)
            await u.commit()
        assert await svc.resolve(issued.access_token) is None

    env.run(work)


def test_revoke_access_or_refresh_and_unknown_is_a_no_op(env: Env) -> None:
    async def work(svc: UserTokenService, _uow: UnitOfWorkFactory) -> None:
        one = await svc.issue(
            organization_id=env.org_id, user_id=env.user_id, workspace_id=None, client_id="cli", scope="user"
        )
        await svc.revoke(one.access_token)
        assert await svc.resolve(one.access_token) is None
        assert (await svc.refresh(one.refresh_token, client_id="cli")).access_token  # the grant lives on
        two = await svc.issue(
            organization_id=env.org_id, user_id=env.user_id, workspace_id=None, client_id="cli", scope="user"
        )
        await svc.revoke(two.refresh_token)
        assert await svc.resolve(two.access_token) is None  # the family went with it
        await svc.revoke("ow-rt01-unknown")
        await svc.revoke("whatever")
        await svc.revoke(two.refresh_token)  # twice: still fine

    env.run(work)


@pytest.mark.parametrize("how", ["deactivated", "removed"])
def test_removed_or_deactivated_users_lose_their_tokens(env: Env, how: str) -> None:
    user_id = _new_user(env, f"{how}@acme.test")

    async def work(svc: UserTokenService, uow: UnitOfWorkFactory) -> None:
        issued = await svc.issue(
            organization_id=env.org_id, user_id=user_id, workspace_id=None, client_id="cli", scope="user"
        )
        assert await svc.resolve(issued.access_token) is not None
        async with uow() as u:
            user = await u.users.get(env.org_id, user_id)
            assert user is not None
            setattr(user, f"{how}_at", utcnow())
            await u.commit()
        assert await svc.resolve(issued.access_token) is None
        with pytest.raises(InvalidRequest, match=how):
            await svc.refresh(issued.refresh_token, client_id="cli")
        with pytest.raises(InvalidRequest, match="not an active member"):
            await svc.issue(
                organization_id=env.org_id, user_id=user_id, workspace_id=None, client_id="cli", scope="user"
            )

    env.run(work)


def test_revoke_for_user_revokes_tokens_and_sessions_and_tells_the_caches(env: Env) -> None:
    user_id = _new_user(env, "leaver@acme.test")

    async def work(svc: UserTokenService, uow: UnitOfWorkFactory) -> None:
        issued = await svc.issue(
            organization_id=env.org_id, user_id=user_id, workspace_id=None, client_id="cli", scope="user"
        )
        async with uow() as u:
            now = utcnow()
            revoked = await u.user_tokens.revoke_for_user(user_id, now)
            assert len(revoked) == 2
            assert await u.user_sessions.revoke_for_user(user_id, now) == []
            await u.commit()
        assert await svc.resolve(issued.access_token) is None
        async with uow() as u:
            events = (
                await u.user_tokens.session.scalars(
                    select(CacheEvent).where(CacheEvent.entity_type == "user", CacheEvent.entity_id == user_id)
                )
            ).all()
            assert events

    env.run(work)
