"""Tunnel certificates: the CA certificates a tunnel's data plane would trust for its gateway.

At most two non-archived certificates per tunnel (one in use and its successor), counted under the
tunnel's row lock so that two concurrent creates on PostgreSQL cannot both take the last slot. A
certificate is parsed and checked before any database work (``domain.tunnel_certificates``); the
same certificate twice on one tunnel is refused (409), since it would only take up a slot. Archiving
keeps the record and is idempotent.
"""

from __future__ import annotations

from orgwarden import ids
from orgwarden.domain.clock import rfc3339, utcnow
from orgwarden.domain.tunnel_certificates import parse_ca_certificate
from orgwarden.domain.tunnels import MAX_CERTIFICATES
from orgwarden.errors import Conflict, InvalidRequest, NotFound
from orgwarden.services import audit, cursors
from orgwarden.services.context import Context
from orgwarden.services.cursors import CursorPage
from orgwarden.services.tunnels import Reach, require_live, require_live_workspace, require_tunnel
from orgwarden.services.validation import checked
from orgwarden.storage.tables import TunnelCertificate
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory


async def _require(uow: UnitOfWork, tunnel_id: str, certificate_id: str) -> TunnelCertificate:
    row = await uow.tunnel_certificates.get(tunnel_id, certificate_id)
    if row is None:
        raise NotFound(f"certificate {certificate_id!r} not found on tunnel {tunnel_id}")
    return row


class TunnelCertificateService:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def create(self, ctx: Context, reach: Reach, tunnel_id: str, ca_certificate_pem: str) -> TunnelCertificate:
        now = utcnow()
        parsed = checked(parse_ca_certificate, ca_certificate_pem, now)
        async with self._uow() as uow:
            tunnel = await require_tunnel(uow, ctx, reach, tunnel_id, lock=True)
            require_live(tunnel, "certificates cannot be added to it")
            await require_live_workspace(uow, ctx, tunnel, "certificates cannot be added to its tunnels")
            active = await uow.tunnel_certificates.active(tunnel.id)
            same = next((row for row in active if row.fingerprint == parsed.fingerprint), None)
            if same is not None:
                raise Conflict(f"this certificate is already registered on tunnel {tunnel.id} as {same.id}")
            if len(active) >= MAX_CERTIFICATES:
                raise InvalidRequest(
                    f"a tunnel holds at most {MAX_CERTIFICATES} non-archived certificates and tunnel {tunnel.id} "
                    f"has {len(active)} ({', '.join(row.id for row in active)}); archive one before adding another"
                )
            row = TunnelCertificate(
                id=ids.new_id(ids.TUNNEL_CERTIFICATE), tunnel_id=tunnel.id, fingerprint=parsed.fingerprint,
                certificate_pem=parsed.pem, expires_at=parsed.expires_at, created_at=now, archived_at=None,
            )  # fmt: skip
            uow.tunnel_certificates.add(row)
            audit.record(
                uow, ctx, "tunnel_certificate.create", "tunnel_certificate", row.id, workspace_id=tunnel.workspace_id,
                details={"tunnel_id": tunnel.id, "fingerprint": row.fingerprint, "expires_at": rfc3339(row.expires_at)},
            )  # fmt: skip
            await uow.commit()
            return row

    async def get(self, ctx: Context, reach: Reach, tunnel_id: str, certificate_id: str) -> TunnelCertificate:
        async with self._uow() as uow:
            tunnel = await require_tunnel(uow, ctx, reach, tunnel_id)
            return await _require(uow, tunnel.id, certificate_id)

    async def list(
        self,
        ctx: Context,
        reach: Reach,
        tunnel_id: str,
        *,
        include_archived: bool = False,
        limit: int = 20,
        page: str | None = None,
    ) -> CursorPage[TunnelCertificate]:
        """Newest first, like tunnels."""
        before = cursors.decode(page)
        if before is not None and not ids.looks_like(ids.TUNNEL_CERTIFICATE, before):
            raise InvalidRequest("page: the cursor does not belong to this list (use next_page of a previous response)")
        async with self._uow() as uow:
            tunnel = await require_tunnel(uow, ctx, reach, tunnel_id)
            rows = await uow.tunnel_certificates.before(tunnel.id, before, limit + 1, include_archived=include_archived)
        return CursorPage(rows[:limit], cursors.encode(rows[limit - 1].id) if len(rows) > limit else None)

    async def archive(self, ctx: Context, reach: Reach, tunnel_id: str, certificate_id: str) -> TunnelCertificate:
        """Takes the certificate out of the trusted set; the record stays. A repeat changes nothing.
        Archiving the last one is allowed: the tunnel then trusts no gateway until one is added."""
        now = utcnow()
        async with self._uow() as uow:
            tunnel = await require_tunnel(uow, ctx, reach, tunnel_id, lock=True)
            row = await _require(uow, tunnel.id, certificate_id)
            if row.archived_at is None:
                row.archived_at = now
                audit.record(
                    uow, ctx, "tunnel_certificate.archive", "tunnel_certificate", row.id,
                    workspace_id=tunnel.workspace_id, details={"tunnel_id": tunnel.id, "fingerprint": row.fingerprint},
                )  # fmt: skip
                await uow.commit()
            return row
