"""Repositories: the queries the services need, one class per aggregate, over one session.

They add and find rows; they never commit (the unit of work does) and hold no business rules.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Boolean, ColumnElement, Select, Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from orgwarden.storage.pagination import Cursor, Page, paginate
from orgwarden.storage.tables import (
    AdminApiKey,
    ApiKey,
    CacheEvent,
    Invite,
    Organization,
    RateLimitValue,
    SpendLimit,
    UsageRecord,
    User,
    Workspace,
    WorkspaceMember,
)
from orgwarden.storage.types import UTCDateTime


class _Repo:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, row: Any) -> None:
        self.session.add(row)


class Organizations(_Repo):
    async def first(self) -> Organization | None:
        return await self.session.scalar(select(Organization).order_by(Organization.created_at).limit(1))

    async def get(self, organization_id: str) -> Organization | None:
        return await self.session.get(Organization, organization_id)

    async def lock(self, organization_id: str) -> None:
        """Serialize changes in one organization: members, workspaces, their members and keys
        (PostgreSQL row lock; SQLite already serializes writers with ``BEGIN IMMEDIATE``).

        ``FOR NO KEY UPDATE`` serializes the lockers as ``FOR UPDATE`` would, but does not block the
        ``FOR KEY SHARE`` lock every foreign-key insert takes on the organization row, so gateway
        batches (usage records, audit events) do not wait for a control-plane change to commit."""
        if self.session.get_bind().dialect.name == "postgresql":
            await self.session.execute(
                select(Organization.id).where(Organization.id == organization_id).with_for_update(key_share=True)
            )


class Users(_Repo):
    def _active(self, organization_id: str) -> Select[User]:
        return select(User).where(User.organization_id == organization_id, User.removed_at.is_(None))

    async def get(self, organization_id: str, user_id: str) -> User | None:
        return await self.session.scalar(self._active(organization_id).where(User.id == user_id))

    async def by_email(self, organization_id: str, email: str) -> User | None:
        return await self.session.scalar(self._active(organization_id).where(User.email == email))

    async def by_ids(self, organization_id: str, user_ids: Sequence[str]) -> list[User]:
        """The organization's members among ``user_ids`` (removed users are not), in id order."""
        if not user_ids:
            return []
        stmt = self._active(organization_id).where(User.id.in_(list(user_ids))).order_by(User.id)
        return list((await self.session.scalars(stmt)).all())

    async def with_removed(self, organization_id: str, user_ids: Sequence[str]) -> list[User]:
        """The organization's users among ``user_ids``, removed ones included (reports name the
        users whose past usage they show, members or not)."""
        if not user_ids:
            return []
        stmt = select(User).where(User.organization_id == organization_id, User.id.in_(list(user_ids)))
        return list((await self.session.scalars(stmt)).all())

    async def members(self, organization_id: str) -> list[User]:
        """Every member (not removed), in email order."""
        return list((await self.session.scalars(self._active(organization_id).order_by(User.email, User.id))).all())

    async def page(
        self, organization_id: str, cursor: Cursor, *, email: str | None, roles: Sequence[str]
    ) -> Page[User]:
        stmt = self._active(organization_id)
        if email is not None:
            stmt = stmt.where(User.email == email)
        if roles:
            stmt = stmt.where(User.role.in_(roles))
        return await paginate(self.session, stmt, User.id, cursor)

    async def first_admin(self, organization_id: str) -> User | None:
        """The longest-standing admin who is not deactivated."""
        stmt = self._active(organization_id).where(User.role == "admin", User.deactivated_at.is_(None))
        return await self.session.scalar(stmt.order_by(User.id))

    async def count(self, organization_id: str, *, role: str | None = None, enabled_only: bool = False) -> int:
        """Users not removed (and, with ``enabled_only``, not deactivated either)."""
        stmt = select(func.count()).select_from(User)
        stmt = stmt.where(User.organization_id == organization_id, User.removed_at.is_(None))
        if role is not None:
            stmt = stmt.where(User.role == role)
        if enabled_only:
            stmt = stmt.where(User.deactivated_at.is_(None))
        return int(await self.session.scalar(stmt) or 0)


class Invites(_Repo):
    async def get(self, organization_id: str, invite_id: str) -> Invite | None:
        return await self.session.scalar(
            select(Invite).where(Invite.organization_id == organization_id, Invite.id == invite_id)
        )

    async def by_token_hash(self, token_hash: str) -> Invite | None:
        return await self.session.scalar(select(Invite).where(Invite.token_hash == token_hash))

    async def reload(self, invite: Invite) -> None:
        """Read the row again, e.g. once the organization lock is held, to see a racing change."""
        await self.session.refresh(invite)

    async def pending_for(self, organization_id: str, email: str, now: datetime) -> Invite | None:
        return await self.session.scalar(
            select(Invite).where(
                Invite.organization_id == organization_id,
                Invite.email == email,
                Invite.status == "pending",
                Invite.expires_at > now,
            )
        )

    async def count_pending(self, organization_id: str, now: datetime) -> int:
        """Invites still open: pending and not expired."""
        stmt = select(func.count()).select_from(Invite)
        stmt = stmt.where(
            Invite.organization_id == organization_id, Invite.status == "pending", Invite.expires_at > now
        )
        return int(await self.session.scalar(stmt) or 0)

    async def page(
        self,
        organization_id: str,
        cursor: Cursor,
        *,
        now: datetime,
        email: str | None,
        roles: Sequence[str],
        statuses: Sequence[str],
    ) -> Page[Invite]:
        stmt = select(Invite).where(Invite.organization_id == organization_id)
        if email is not None:
            stmt = stmt.where(Invite.email == email)
        if roles:
            stmt = stmt.where(Invite.role.in_(roles))
        wanted = set(statuses) or {"pending", "accepted", "expired"}
        clauses: list[ColumnElement[bool]] = []
        if "pending" in wanted:
            clauses.append(and_(Invite.status == "pending", Invite.expires_at > now))
        if "expired" in wanted:
            clauses.append(and_(Invite.status == "pending", Invite.expires_at <= now))
        if "accepted" in wanted:
            clauses.append(Invite.status == "accepted")
        if "deleted" in wanted:
            clauses.append(Invite.status == "deleted")
        stmt = stmt.where(or_(*clauses))
        return await paginate(self.session, stmt, Invite.id, cursor)


class Workspaces(_Repo):
    async def get(self, organization_id: str, workspace_id: str) -> Workspace | None:
        return await self.session.scalar(
            select(Workspace).where(Workspace.organization_id == organization_id, Workspace.id == workspace_id)
        )

    async def default(self, organization_id: str) -> Workspace:
        row = await self.session.scalar(
            select(Workspace).where(Workspace.organization_id == organization_id, Workspace.is_default.is_(True))
        )
        if row is None:  # pragma: no cover - every organization is created with one
            raise LookupError(f"organization {organization_id} has no default workspace")
        return row

    async def active_by_name(self, organization_id: str, name: str) -> Workspace | None:
        return await self.session.scalar(
            select(Workspace).where(
                Workspace.organization_id == organization_id,
                Workspace.archived_at.is_(None),
                func.lower(Workspace.name) == name.lower(),
            )
        )

    async def page(
        self,
        organization_id: str,
        cursor: Cursor,
        *,
        include_archived: bool,
        include_default: bool,
        ids: Sequence[str],
    ) -> Page[Workspace]:
        stmt = select(Workspace).where(Workspace.organization_id == organization_id)
        if not include_archived:
            stmt = stmt.where(Workspace.archived_at.is_(None))
        if not include_default:
            stmt = stmt.where(Workspace.is_default.is_(False))
        if ids:
            stmt = stmt.where(Workspace.id.in_(ids))
        return await paginate(self.session, stmt, Workspace.id, cursor)


class Members(_Repo):
    async def get(self, workspace_id: str, user_id: str) -> WorkspaceMember | None:
        return await self.session.get(WorkspaceMember, (workspace_id, user_id))

    async def page(self, workspace_id: str, cursor: Cursor) -> Page[WorkspaceMember]:
        stmt = select(WorkspaceMember).where(WorkspaceMember.workspace_id == workspace_id)
        return await paginate(self.session, stmt, WorkspaceMember.user_id, cursor)

    async def for_user(self, user_id: str) -> list[WorkspaceMember]:
        """Every membership of one user (their workspace roles, for the policy)."""
        stmt = select(WorkspaceMember).where(WorkspaceMember.user_id == user_id)
        return list((await self.session.scalars(stmt)).all())

    async def delete_for_user(self, user_id: str) -> list[WorkspaceMember]:
        rows = list(
            (await self.session.scalars(select(WorkspaceMember).where(WorkspaceMember.user_id == user_id))).all()
        )
        for row in rows:
            await self.session.delete(row)
        return rows

    async def delete(self, row: WorkspaceMember) -> None:
        await self.session.delete(row)


class ApiKeys(_Repo):
    async def get(self, organization_id: str, key_id: str) -> ApiKey | None:
        return await self.session.scalar(
            select(ApiKey).where(ApiKey.organization_id == organization_id, ApiKey.id == key_id)
        )

    async def by_secret_hash(self, secret_hash: str) -> ApiKey | None:
        return await self.session.scalar(select(ApiKey).where(ApiKey.secret_hash == secret_hash))

    async def with_workspace_by_hash(self, secret_hash: str) -> tuple[ApiKey, Workspace] | None:
        stmt = select(ApiKey, Workspace).join(Workspace, Workspace.id == ApiKey.workspace_id)
        row = (await self.session.execute(stmt.where(ApiKey.secret_hash == secret_hash))).first()
        return (row[0], row[1]) if row else None

    async def page(
        self,
        organization_id: str,
        cursor: Cursor,
        *,
        now: datetime,
        workspace_id: str | None,
        status: str | None,
        created_by_user_id: str | None,
        workspace_ids: Collection[str] | None = None,
    ) -> Page[ApiKey]:
        stmt = select(ApiKey).where(ApiKey.organization_id == organization_id)
        if workspace_ids is not None:  # only these (the ones the caller may see)
            stmt = stmt.where(ApiKey.workspace_id.in_(sorted(workspace_ids)))
        if workspace_id is not None:
            stmt = stmt.where(ApiKey.workspace_id == workspace_id)
        if created_by_user_id is not None:
            stmt = stmt.where(ApiKey.created_by_type == "user", ApiKey.created_by_id == created_by_user_id)
        not_expired = or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now)
        live = ApiKey.status.in_(("active", "inactive"))
        if status == "expired":
            stmt = stmt.where(live, ApiKey.expires_at.is_not(None), ApiKey.expires_at <= now)
        elif status in ("active", "inactive"):
            stmt = stmt.where(ApiKey.status == status, not_expired)
        elif status == "archived":
            stmt = stmt.where(ApiKey.status == "archived")
        return await paginate(self.session, stmt, ApiKey.id, cursor)

    async def unarchived_after(
        self,
        organization_id: str,
        after_id: str | None,
        limit: int,
        *,
        ids: Sequence[str],
        created_by_user_ids: Sequence[str],
        workspace_ids: Sequence[str] | None = None,
        or_ids: Sequence[str] = (),
    ) -> list[ApiKey]:
        """Up to ``limit`` keys that are not archived, after ``after_id`` in id (creation) order; when
        ``workspace_ids`` is given, only the keys in those workspaces or among ``or_ids``."""
        stmt = select(ApiKey).where(ApiKey.organization_id == organization_id, ApiKey.status != "archived")
        if workspace_ids is not None:
            stmt = stmt.where(or_(ApiKey.workspace_id.in_(workspace_ids), ApiKey.id.in_(or_ids)))
        if ids:
            stmt = stmt.where(ApiKey.id.in_(ids))
        if created_by_user_ids:
            stmt = stmt.where(ApiKey.created_by_type == "user", ApiKey.created_by_id.in_(created_by_user_ids))
        if after_id is not None:
            stmt = stmt.where(ApiKey.id > after_id)
        return list((await self.session.scalars(stmt.order_by(ApiKey.id).limit(limit))).all())

    async def active_created_by(self, organization_id: str, user_id: str) -> list[ApiKey]:
        """The keys a user created that are ``active`` (offboarding's concern), in id order."""
        stmt = select(ApiKey).where(
            ApiKey.organization_id == organization_id,
            ApiKey.created_by_type == "user",
            ApiKey.created_by_id == user_id,
            ApiKey.status == "active",
        )
        return list((await self.session.scalars(stmt.order_by(ApiKey.id))).all())

    async def archive_in_workspace(self, workspace_id: str, now: datetime) -> list[str]:
        ids = list(
            (
                await self.session.scalars(
                    select(ApiKey.id).where(ApiKey.workspace_id == workspace_id, ApiKey.status != "archived")
                )
            ).all()
        )
        if ids:
            await self.session.execute(
                update(ApiKey).where(ApiKey.id.in_(ids)).values(status="archived", archived_at=now)
            )
        return ids


class AdminApiKeys(_Repo):
    async def get(self, organization_id: str, key_id: str) -> AdminApiKey | None:
        return await self.session.scalar(
            select(AdminApiKey).where(AdminApiKey.organization_id == organization_id, AdminApiKey.id == key_id)
        )

    async def by_secret_hash(self, secret_hash: str) -> AdminApiKey | None:
        return await self.session.scalar(select(AdminApiKey).where(AdminApiKey.secret_hash == secret_hash))

    async def all(self, organization_id: str) -> list[AdminApiKey]:
        stmt = select(AdminApiKey).where(AdminApiKey.organization_id == organization_id).order_by(AdminApiKey.id)
        return list((await self.session.scalars(stmt)).all())

    async def active_for_user(self, user_id: str) -> list[AdminApiKey]:
        stmt = select(AdminApiKey).where(AdminApiKey.user_id == user_id, AdminApiKey.status == "active")
        return list((await self.session.scalars(stmt)).all())


class CacheEvents(_Repo):
    def changed(self, entity_type: str, entity_id: str, now: datetime) -> None:
        """Tell every worker's caches that this entity changed (committed with the change)."""
        self.session.add(CacheEvent(entity_type=entity_type, entity_id=entity_id, created_at=now))

    async def since(self, low_seq: int, limit: int = 5000) -> list[CacheEvent]:
        stmt = select(CacheEvent).where(CacheEvent.seq > low_seq).order_by(CacheEvent.seq).limit(limit)
        return list((await self.session.scalars(stmt)).all())

    async def last_seq(self) -> int:
        return int(await self.session.scalar(select(func.max(CacheEvent.seq))) or 0)

    async def prune(self, before: datetime) -> None:
        await self.session.execute(delete(CacheEvent).where(CacheEvent.created_at < before))


_UsageInsert = tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]], tuple[tuple[int, Callable[[Any], Any]], ...]]
_usage_inserts: dict[str, _UsageInsert] = {}


def _usage_insert(dialect: Dialect) -> _UsageInsert:
    """The INSERT of a whole usage record as the dialect's driver takes it: its SQL, a function that
    picks a record's values in the order of its positional parameters (an ``itemgetter``: one C call
    instead of a Python step per column), and the columns' own bind processors (``UTCDateTime`` to
    naive UTC and, on SQLite, to SQLAlchemy's text form; booleans, except on SQLite), compiled once
    per dialect.

    The processors are the dialect's own types' (what a compiled statement binds with), not the
    generic types': on SQLite a time is then the text SQLAlchemy stores, fraction and all, not the
    driver's (which has no fraction for a whole second, and so sorts before that second's bound)."""
    found = _usage_inserts.get(dialect.name)
    if found is None:
        table = cast(Table, UsageRecord.__table__)
        compiled = insert(table).compile(dialect=dialect)
        names = tuple(compiled.positiontup or ())
        processors: list[tuple[int, Callable[[Any], Any]]] = []
        for i, name in enumerate(names):
            kind = table.c[name].type
            process = kind.dialect_impl(dialect).bind_processor(dialect)
            if process is None or (dialect.name == "sqlite" and isinstance(kind, Boolean)):
                continue  # (the driver binds True and False as 1 and 0, as the processor would)
            processors.append(
                (i, _sqlite_time(process) if dialect.name == "sqlite" and isinstance(kind, UTCDateTime) else process)
            )
        found = _usage_inserts[dialect.name] = (compiled.string, operator.itemgetter(*names), tuple(processors))
    return found


def _sqlite_time(general: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """SQLAlchemy's SQLite text of a UTC time (``2026-12-07 05:02:41.000000``) in one call for the
    usual aware UTC value, a third of ``general``'s cost; ``general`` for anything else."""

    def process(value: Any) -> Any:
        if type(value) is datetime and value.tzinfo is UTC:
            return value.isoformat(" ", "microseconds")[:-6]  # without its "+00:00"
        return general(value)

    return process


class UsageRecords(_Repo):
    async def insert_many(self, rows: Sequence[dict[str, Any]]) -> None:
        """One executemany INSERT straight to the driver, this being the metering hot path.

        SQLAlchemy's own executemany spent about 5 µs per row building and processing each row's
        parameters; here the statement is compiled once and each row runs only the bind processors
        of its columns, the same functions SQLAlchemy runs, so what is stored is the same (a test
        compares both, raw). Every row names every column: the table has no defaults."""
        if not rows:
            return
        connection = await self.session.connection()
        sql, values_of, processors = _usage_insert(connection.dialect)
        params = []
        for row in rows:
            values = list(values_of(row))
            for i, process in processors:
                values[i] = process(values[i])
            params.append(tuple(values))
        await connection.exec_driver_sql(sql, params)

    async def existing(self, record_ids: Sequence[str]) -> set[str]:
        """Which of ``record_ids`` are stored already (the recorder writes replayed records only if absent)."""
        if not record_ids:
            return set()
        stmt = select(UsageRecord.id).where(UsageRecord.id.in_(list(record_ids)))
        return set((await self.session.scalars(stmt)).all())

    async def for_organization(self, organization_id: str) -> list[UsageRecord]:
        stmt = select(UsageRecord).where(UsageRecord.organization_id == organization_id).order_by(UsageRecord.id)
        return list((await self.session.scalars(stmt)).all())


class RateLimitValues(_Repo):
    """Rate-limit values: one row per value set, per level (organization, workspace, API key)."""

    async def for_scope(self, organization_id: str, scope_type: str, scope_id: str) -> list[RateLimitValue]:
        stmt = select(RateLimitValue).where(
            RateLimitValue.organization_id == organization_id,
            RateLimitValue.scope_type == scope_type,
            RateLimitValue.scope_id == scope_id,
        )
        return list((await self.session.scalars(stmt)).all())

    async def get(
        self, organization_id: str, scope_type: str, scope_id: str, group_name: str, limiter: str
    ) -> RateLimitValue | None:
        return await self.session.get(RateLimitValue, (organization_id, scope_type, scope_id, group_name, limiter))

    async def all(self, organization_id: str | None = None) -> list[RateLimitValue]:
        """Every value (of one organization, or of all): what a gateway loads to enforce them."""
        stmt = select(RateLimitValue)
        if organization_id is not None:
            stmt = stmt.where(RateLimitValue.organization_id == organization_id)
        return list((await self.session.scalars(stmt)).all())

    async def delete(self, row: RateLimitValue) -> None:
        await self.session.delete(row)


class SpendLimits(_Repo):
    async def get(self, organization_id: str, spend_limit_id: str) -> SpendLimit | None:
        return await self.session.scalar(
            select(SpendLimit).where(SpendLimit.organization_id == organization_id, SpendLimit.id == spend_limit_id)
        )

    async def for_scope(self, organization_id: str, scope_type: str, scope_id: str, period: str) -> SpendLimit | None:
        return await self.session.scalar(
            select(SpendLimit).where(
                SpendLimit.organization_id == organization_id,
                SpendLimit.scope_type == scope_type,
                SpendLimit.scope_id == scope_id,
                SpendLimit.period == period,
            )
        )

    async def after(
        self,
        organization_id: str,
        after_id: str | None,
        limit: int,
        *,
        scope_types: Sequence[str],
        workspace_id: str | None,
    ) -> list[SpendLimit]:
        """Up to ``limit`` limits after ``after_id`` in id (creation) order."""
        stmt = select(SpendLimit).where(SpendLimit.organization_id == organization_id)
        if scope_types:
            stmt = stmt.where(SpendLimit.scope_type.in_(scope_types))
        if workspace_id is not None:
            stmt = stmt.where(SpendLimit.scope_type == "workspace", SpendLimit.scope_id == workspace_id)
        if after_id is not None:
            stmt = stmt.where(SpendLimit.id > after_id)
        return list((await self.session.scalars(stmt.order_by(SpendLimit.id).limit(limit))).all())

    async def all(self, organization_id: str | None = None) -> list[SpendLimit]:
        """Every limit (of one organization, or of all): what a gateway loads to enforce them."""
        stmt = select(SpendLimit).order_by(SpendLimit.id)
        if organization_id is not None:
            stmt = stmt.where(SpendLimit.organization_id == organization_id)
        return list((await self.session.scalars(stmt)).all())

    async def delete(self, row: SpendLimit) -> None:
        await self.session.delete(row)
