"""The unit of work owns the transaction: ``async with uow: ...; await uow.commit()``.

Leaving the block without ``commit()`` rolls everything back, so a request that fails half-way leaves
nothing half-written. Audit events are queued in the unit of work and sealed into their
organization's hash chain by ``commit()``, right before COMMIT (``storage.audit_log``), so they commit
or roll back with the change they describe, and every writer is chained without doing anything.
"""

from __future__ import annotations

from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from orgwarden.storage import repositories as repos
from orgwarden.storage.audit_log import AuditEvents
from orgwarden.storage.cc_policies import CcPolicies
from orgwarden.storage.claude_code import ClaudeCodeUsage
from orgwarden.storage.groups import ManagedRoles, RbacGroups, ScimTokens, ScimUsers
from orgwarden.storage.identity import DeviceAuthorizations, UserSessions, UserTokens, UserWorkspaces
from orgwarden.storage.rollups import UsageRollups
from orgwarden.storage.tunnels import TunnelCertificates, Tunnels


class UnitOfWork:
    organizations: repos.Organizations
    users: repos.Users
    invites: repos.Invites
    workspaces: repos.Workspaces
    members: repos.Members
    api_keys: repos.ApiKeys
    admin_keys: repos.AdminApiKeys
    audit: AuditEvents
    cache_events: repos.CacheEvents
    usage: repos.UsageRecords
    rollups: UsageRollups
    rate_limits: repos.RateLimitValues
    spend_limits: repos.SpendLimits
    claude_code: ClaudeCodeUsage
    tunnels: Tunnels
    tunnel_certificates: TunnelCertificates
    scim_tokens: ScimTokens
    scim_users: ScimUsers
    rbac_groups: RbacGroups
    managed_roles: ManagedRoles
    user_tokens: UserTokens
    user_sessions: UserSessions
    device_authorizations: DeviceAuthorizations
    user_workspaces: UserWorkspaces
    cc_policies: CcPolicies

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._session: AsyncSession | None = None

    async def __aenter__(self) -> UnitOfWork:
        session = self._session = self._sessions()
        await session.begin()
        self.organizations = repos.Organizations(session)
        self.users = repos.Users(session)
        self.invites = repos.Invites(session)
        self.workspaces = repos.Workspaces(session)
        self.members = repos.Members(session)
        self.api_keys = repos.ApiKeys(session)
        self.admin_keys = repos.AdminApiKeys(session)
        self.audit = AuditEvents(session)
        self.cache_events = repos.CacheEvents(session)
        self.usage = repos.UsageRecords(session)
        self.rollups = UsageRollups(session)
        self.rate_limits = repos.RateLimitValues(session)
        self.spend_limits = repos.SpendLimits(session)
        self.claude_code = ClaudeCodeUsage(session)
        self.tunnels = Tunnels(session)
        self.tunnel_certificates = TunnelCertificates(session)
        self.scim_tokens = ScimTokens(session)
        self.scim_users = ScimUsers(session)
        self.rbac_groups = RbacGroups(session)
        self.managed_roles = ManagedRoles(session)
        self.user_tokens = UserTokens(session)
        self.user_sessions = UserSessions(session)
        self.device_authorizations = DeviceAuthorizations(session)
        self.user_workspaces = UserWorkspaces(session)
        self.cc_policies = CcPolicies(session)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._session is not None
        # close() rolls back an uncommitted transaction without expiring what was loaded, so the
        # rows a read-only use case returns stay readable after the block.
        await self._session.close()
        self._session = None

    async def commit(self) -> None:
        """Seal the queued audit events (the chain head is the transaction's last lock), then commit."""
        assert self._session is not None
        await self.audit.seal()
        await self._session.commit()

    async def flush(self) -> None:
        assert self._session is not None
        await self._session.flush()


class UnitOfWorkFactory:
    """Makes a fresh unit of work per use case; services hold one of these."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    def __call__(self) -> UnitOfWork:
        return UnitOfWork(self._sessions)
