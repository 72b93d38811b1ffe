"""``identity.groups.apply_claim``: the OpenID Connect groups claim at sign-in (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import select

from orgwarden.config import load_settings
from orgwarden.domain.policy import Actor
from orgwarden.identity.groups import apply_claim
from orgwarden.services.container import Services
from orgwarden.services.context import Context
from orgwarden.storage.engine import create_engine, session_factory
from orgwarden.storage.tables import AuditEvent, RbacGroupMember
from orgwarden.storage.uow import UnitOfWorkFactory
from tests.conftest import Database, cli


def test_the_groups_claim_sets_sign_in_memberships_and_roles(database: Database) -> None:
    init = json.loads(cli(database, "init", "--json", "--admin-email", "root@acme.test").stdout)
    org_id = init["organization"]["id"]

    async def main() -> None:
        engine = create_engine(load_settings(**database.settings_kwargs))
        uow = UnitOfWorkFactory(session_factory(engine))
        try:
            from orgwarden.crypto import SecretBox, resolve_secret

            settings = load_settings(**database.settings_kwargs)
            services = Services.build(uow, settings, SecretBox(resolve_secret(settings)))
            ctx = Context(Actor("cli", "cli:test", org_id, init["user"]["id"]))
            devs = await services.rbac_groups.create(ctx, name="devs")
            money = await services.rbac_groups.create(ctx, name="money")
            idp = await services.rbac_groups.create(ctx, name="idp-managed")
            workspace = await services.workspaces.create(ctx, name="claims")
            await services.rbac_groups.set_roles(
                ctx, devs.group.id, org_role="developer", workspace_roles={workspace.id: "workspace_admin"}
            )
            await services.rbac_groups.set_roles(ctx, money.group.id, org_role="billing", workspace_roles={})
            invite = await services.invites.create(ctx, email="ada@acme.test", role="user")
            user = await services.invites.accept(token=invite.token, name="Ada", request_id=None, source_ip=None)
            # a membership SCIM made stays whatever the claim says
            async with uow() as u:
                u.rbac_groups.add(
                    RbacGroupMember(group_id=idp.group.id, user_id=user.id, source="scim", created_at=user.added_at)
                )
                await u.commit()

            async def claim(names: list[str]) -> tuple[str, set[str], Any]:
                async with uow() as u:
                    row = await u.users.get(org_id, user.id)
                    assert row is not None
                    await apply_claim(u, row, names)
                    await u.commit()
                async with uow() as u:
                    row = await u.users.get(org_id, user.id)
                    assert row is not None
                    groups = {g.name for _, g in await u.rbac_groups.groups_of(user.id)}
                    member = await u.members.get(workspace.id, user.id)
                    return row.role, groups, member.role if member else None

            assert await claim(["devs", "money", "unknown-group"]) == (
                "developer",
                {"devs", "money", "idp-managed"},
                "workspace_admin",
            )
            assert await claim(["money"]) == ("billing", {"money", "idp-managed"}, None)
            assert await claim([]) == ("user", {"idp-managed"}, None)
            assert await claim([]) == ("user", {"idp-managed"}, None)  # nothing changes: no event
            async with uow() as u:
                found = await u.audit.session.scalars(
                    select(AuditEvent).where(AuditEvent.action == "user.groups_sync", AuditEvent.target_id == user.id)
                )
                synced = list(found.all())
            assert [e.details["added_to"] for e in synced] == [sorted([devs.group.id, money.group.id]), [], []]
            assert synced[1].details["roles"]["organization"] == ["developer", "billing"]
            assert {e.actor_type for e in synced} == {"system"}
        finally:
            await engine.dispose()

    asyncio.run(main())
