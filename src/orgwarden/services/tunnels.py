"""MCP tunnels: create, read, list, reveal and rotate the token, archive; and check a token.

orgwarden manages tunnels, it does not carry their traffic: it allocates each tunnel a hostname under
``tunnel_base_domain`` and a connection token, and keeps the CA certificates that the data plane
would trust (``services.tunnel_certificates``). What gives the token a meaning here is
``check_token``: a connector gateway (or a test) can ask whether a presented token is the current
token of a live tunnel. A rotated or archived token answers no.

The token is kept encrypted with the server secret (reveal must return it) and as a SHA-256 for
look-up; it is never logged, never in an audit event, and only reveal and rotate return it.

Two path families share these use cases (``Reach``): the spec's ``/v1/organizations/tunnels`` sees the
whole organization; the SDK's ``/v1/tunnels`` sees one workspace. Every change writes its audit event
in its own transaction; so does a reveal, since it hands out a credential.
"""

from __future__ import annotations

from dataclasses import dataclass

from orgwarden import ids
from orgwarden.crypto import SecretBox
from orgwarden.domain import tunnels as rules
from orgwarden.domain.clock import utcnow
from orgwarden.errors import Conflict, InternalError, InvalidRequest, NotFound
from orgwarden.services import audit, cursors
from orgwarden.services.context import Context
from orgwarden.services.cursors import CursorPage
from orgwarden.services.validation import checked
from orgwarden.services.workspaces import require_workspace
from orgwarden.storage.tables import Tunnel, Workspace
from orgwarden.storage.tunnels import archive_tunnel
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory

WORKSPACE_HEADER = "anthropic-workspace-id"
_DOMAIN_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class Reach:
    """Which tunnels a call sees. ``scoped`` (the SDK's family) limits it to one workspace: the one
    ``anthropic-workspace-id`` names (``workspace_header``), or the default workspace without the
    header, which is where the spec puts tunnels with a null ``workspace_id``. Unscoped (the spec's
    family) is the whole organization, and the header is not read."""

    scoped: bool = False
    workspace_header: str | None = None


ORGANIZATION = Reach()


@dataclass(frozen=True, slots=True)
class Shown:
    """A tunnel as the API shows it: ``workspace_id`` is null for the default workspace (spec)."""

    tunnel: Tunnel
    workspace_id: str | None


@dataclass(frozen=True, slots=True)
class RevealedToken:
    token_id: str
    token: str


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """Whether a presented token opens a tunnel now; the tunnel when it does."""

    valid: bool
    tunnel: Tunnel | None = None


async def reach_workspace(uow: UnitOfWork, ctx: Context, reach: Reach) -> Workspace | None:
    """The one workspace a scoped call is limited to; ``None`` for the whole organization."""
    if not reach.scoped:
        return None
    header = reach.workspace_header
    if header is None:
        return await uow.workspaces.default(ctx.organization_id)
    if not ids.looks_like(ids.WORKSPACE, header):
        raise InvalidRequest(f"{WORKSPACE_HEADER}: {header!r} is not a workspace id (wrkspc_...)")
    workspace = await uow.workspaces.get(ctx.organization_id, header)
    if workspace is None:
        raise NotFound(f"workspace {header!r} (named by the {WORKSPACE_HEADER} header) not found")
    return workspace


async def require_tunnel(uow: UnitOfWork, ctx: Context, reach: Reach, tunnel_id: str, *, lock: bool = False) -> Tunnel:
    """The tunnel, if this call may see it (404 otherwise); ``lock`` takes its row lock."""
    workspace = await reach_workspace(uow, ctx, reach)
    row = await uow.tunnels.get(ctx.organization_id, tunnel_id, lock=lock)
    if row is None or (workspace is not None and row.workspace_id != workspace.id):
        where = f" in workspace {workspace.id}" if workspace is not None else ""
        raise NotFound(f"tunnel {tunnel_id!r} not found{where}")
    return row


def require_live(tunnel: Tunnel, doing: str) -> None:
    if tunnel.archived_at is not None:
        raise InvalidRequest(f"tunnel {tunnel.id} is archived: {doing}")


async def require_live_workspace(uow: UnitOfWork, ctx: Context, tunnel: Tunnel, doing: str) -> None:
    workspace = await require_workspace(uow, ctx.organization_id, tunnel.workspace_id)
    if workspace.archived_at is not None:
        raise InvalidRequest(f"workspace {workspace.id} is archived: {doing}")


async def shown(uow: UnitOfWork, ctx: Context, tunnels: list[Tunnel]) -> list[Shown]:
    default_id = (await uow.workspaces.default(ctx.organization_id)).id
    return [Shown(row, None if row.workspace_id == default_id else row.workspace_id) for row in tunnels]


class TunnelService:
    def __init__(self, uow: UnitOfWorkFactory, box: SecretBox, base_domain: str) -> None:
        self._uow = uow
        self._box = box
        self._base_domain = base_domain

    async def create(
        self, ctx: Context, reach: Reach, *, display_name: str | None = None, workspace_id: str | None = None
    ) -> Shown:
        """A new tunnel with a fresh hostname and token, in ``workspace_id`` (the spec's family) or
        the reach's workspace (the SDK's); the default workspace when neither names one."""
        name = checked(rules.check_display_name, display_name)
        now = utcnow()
        async with self._uow() as uow:
            # The organization's lock, which archiving a workspace holds: a tunnel is created
            # before the archive (and archived with the workspace) or refused after it.
            await uow.organizations.lock(ctx.organization_id)
            workspace = await reach_workspace(uow, ctx, reach)
            if workspace is None:
                if workspace_id is None:
                    workspace = await uow.workspaces.default(ctx.organization_id)
                elif not ids.looks_like(ids.WORKSPACE, workspace_id):
                    raise InvalidRequest(f"workspace_id: {workspace_id!r} is not a workspace id (wrkspc_...)")
                else:
                    workspace = await require_workspace(uow, ctx.organization_id, workspace_id)
            if workspace.archived_at is not None:
                raise InvalidRequest(f"workspace {workspace.id} is archived: tunnels cannot be created in it")
            domain = await self._free_domain(uow)
            token, token_id = rules.new_token(), rules.new_token_id()
            tunnel_id = ids.new_id(ids.TUNNEL)
            row = Tunnel(
                id=tunnel_id, organization_id=ctx.organization_id, workspace_id=workspace.id, display_name=name,
                domain=domain, token_id=token_id, token_encrypted=self._box.seal(token, tunnel_id),
                token_hash=ids.hash_secret(token), created_at=now, archived_at=None,
            )  # fmt: skip
            uow.tunnels.add(row)
            audit.record(
                uow, ctx, "tunnel.create", "tunnel", row.id, workspace_id=workspace.id,
                details={"display_name": name, "domain": domain, "token_id": token_id},
            )  # fmt: skip
            result = (await shown(uow, ctx, [row]))[0]
            await uow.commit()
            return result

    async def get(self, ctx: Context, reach: Reach, tunnel_id: str) -> Shown:
        async with self._uow() as uow:
            return (await shown(uow, ctx, [await require_tunnel(uow, ctx, reach, tunnel_id)]))[0]

    async def list(
        self,
        ctx: Context,
        reach: Reach,
        *,
        workspace_id: str | None = None,
        include_archived: bool = False,
        limit: int = 20,
        page: str | None = None,
    ) -> CursorPage[Shown]:
        """Newest first. ``workspace_id`` filters the whole-organization reach; a scoped reach is
        already one workspace."""
        if workspace_id is not None and not ids.looks_like(ids.WORKSPACE, workspace_id):
            raise InvalidRequest(f"workspace_id: {workspace_id!r} is not a workspace id (wrkspc_...)")
        before = cursors.decode(page)
        if before is not None and not ids.looks_like(ids.TUNNEL, before):
            raise InvalidRequest("page: the cursor does not belong to this list (use next_page of a previous response)")
        async with self._uow() as uow:
            workspace = await reach_workspace(uow, ctx, reach)
            rows = await uow.tunnels.before(
                ctx.organization_id, before, limit + 1, include_archived=include_archived,
                workspace_id=workspace.id if workspace is not None else workspace_id,
            )  # fmt: skip
            items = await shown(uow, ctx, rows[:limit])
        return CursorPage(items, cursors.encode(rows[limit - 1].id) if len(rows) > limit else None)

    async def reveal_token(self, ctx: Context, reach: Reach, tunnel_id: str) -> RevealedToken:
        """The current token: the same value on every call until a rotation."""
        async with self._uow() as uow:
            row = await require_tunnel(uow, ctx, reach, tunnel_id)
            require_live(row, "its token was invalidated when it was archived")
            assert row.token_encrypted is not None
            assert row.token_id is not None
            try:
                token = self._box.open(row.token_encrypted, row.id)
            except ValueError:  # sealed under another ORGWARDEN_SECRET_KEY (or altered in the database)
                raise Conflict(
                    f"the token of tunnel {row.id} cannot be decrypted with this server's ORGWARDEN_SECRET_KEY "
                    "(was the key changed?); rotate the token to issue a new one"
                ) from None
            audit.record(
                uow, ctx, "tunnel.token.reveal", "tunnel", row.id, workspace_id=row.workspace_id,
                details={"token_id": row.token_id},
            )  # fmt: skip
            await uow.commit()
            return RevealedToken(row.token_id, token)

    async def rotate_token(
        self, ctx: Context, reach: Reach, tunnel_id: str, *, reason: str | None = None
    ) -> RevealedToken:
        """A fresh token; the previous one no longer passes ``check_token`` (new connections).
        The reason goes to the audit event, never the token."""
        clean_reason = checked(rules.check_reason, reason)
        async with self._uow() as uow:
            row = await require_tunnel(uow, ctx, reach, tunnel_id, lock=True)
            require_live(row, "its token cannot be rotated")
            await require_live_workspace(uow, ctx, row, "its tunnels' tokens cannot be rotated")
            previous = row.token_id
            token, token_id = rules.new_token(), rules.new_token_id()
            row.token_id, row.token_encrypted = token_id, self._box.seal(token, row.id)
            row.token_hash = ids.hash_secret(token)
            audit.record(
                uow, ctx, "tunnel.token.rotate", "tunnel", row.id, workspace_id=row.workspace_id,
                details={"reason": clean_reason, "previous_token_id": previous, "token_id": token_id},
            )  # fmt: skip
            await uow.commit()
            return RevealedToken(token_id, token)

    async def archive(self, ctx: Context, reach: Reach, tunnel_id: str) -> Shown:
        """Irreversible and idempotent: archives every certificate and forgets the token; the row
        (and so its hostname, under the unique constraint) is kept. A repeat changes nothing."""
        now = utcnow()
        async with self._uow() as uow:
            row = await require_tunnel(uow, ctx, reach, tunnel_id, lock=True)
            result = (await shown(uow, ctx, [row]))[0]
            if row.archived_at is None:
                previous = row.token_id
                certificates = await archive_tunnel(row, uow.tunnel_certificates, now)
                audit.record(
                    uow, ctx, "tunnel.archive", "tunnel", row.id, workspace_id=row.workspace_id,
                    details={"domain": row.domain, "archived_certificates": certificates,
                             "invalidated_token_id": previous},
                )  # fmt: skip
                await uow.commit()
            return result

    async def check_token(self, ctx: Context, token: str) -> TokenCheck:
        """Whether ``token`` is the current token of a live tunnel of this organization, in a live
        workspace. Looked up by its SHA-256, then compared in constant time."""
        async with self._uow() as uow:
            row = await uow.tunnels.by_token_hash(ids.hash_secret(token))
            stored = row.token_hash if row is not None and row.token_hash is not None else "0" * 64
            if row is None or not ids.secret_matches(token, stored) or row.organization_id != ctx.organization_id:
                return TokenCheck(False)
            workspace = await uow.workspaces.get(ctx.organization_id, row.workspace_id)
            if row.archived_at is not None or workspace is None or workspace.archived_at is not None:
                return TokenCheck(False)
            return TokenCheck(True, row)

    async def _free_domain(self, uow: UnitOfWork) -> str:
        """A hostname no tunnel ever had (the unique constraint is the guarantee; this avoids
        tripping it)."""
        for _ in range(_DOMAIN_ATTEMPTS):
            domain = rules.new_domain(self._base_domain)
            if not await uow.tunnels.domain_taken(domain):
                return domain
        raise InternalError("could not allocate a tunnel hostname; try again")  # pragma: no cover
