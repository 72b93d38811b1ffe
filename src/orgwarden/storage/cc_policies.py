"""The repository of Claude Code policies: an organization's configuration row and its ordered
policies. It never commits."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from orgwarden.storage.tables import CcPolicy, CcPolicyConfig


class CcPolicies:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, row: object) -> None:
        self.session.add(row)

    async def config(self, organization_id: str) -> CcPolicyConfig | None:
        return await self.session.get(CcPolicyConfig, organization_id)

    async def ordered(self, organization_id: str) -> list[CcPolicy]:
        stmt = select(CcPolicy).where(CcPolicy.organization_id == organization_id).order_by(CcPolicy.position)
        return list((await self.session.scalars(stmt)).all())

    async def get(self, organization_id: str, rbac_group_id: str) -> CcPolicy | None:
        return await self.session.get(CcPolicy, (organization_id, rbac_group_id))

    async def delete(self, row: CcPolicy) -> None:
        await self.session.execute(
            delete(CcPolicy).where(
                CcPolicy.organization_id == row.organization_id, CcPolicy.rbac_group_id == row.rbac_group_id
            )
        )
