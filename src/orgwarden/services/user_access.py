"""A user's access token on the data plane: what it may do there, as the gateway caches it.

``orgwarden login`` gives a developer an access token (``ow-at01-…``) bound to one workspace; sent as
``x-api-key`` or ``Authorization: Bearer`` (Claude Code's ``apiKeyHelper`` sends both) it works on
``/v1/messages``, ``/v1/messages/count_tokens`` and ``/v1/models`` of that workspace, if the user's
role there allows it (``domain.user_access``). The answer is a ``KeyGrant`` like an API key's, with
``key_id`` "" and the user's id, so that the pipeline treats both alike: limits of the organization
and workspace apply, spend limits of the user too, and usage is recorded for the user.

The gateway's key cache (``gateway.keys``) keeps the answer, so this runs once per token and
worker, and again after a change it hears of: the token (``user_token``: revoked), the user
(``user``: removed, deactivated, role or memberships changed) or the workspace (``workspace``).
"""

from __future__ import annotations

from orgwarden.crypto import SecretBox
from orgwarden.domain import user_access
from orgwarden.services.credentials import KeyGrant, UserTokenRefused
from orgwarden.services.user_tokens import UserTokenService
from orgwarden.storage.uow import UnitOfWorkFactory


class UserTokenGrants:
    """Resolves access tokens for ``CredentialService`` (``UserTokenResolver``)."""

    def __init__(self, uow: UnitOfWorkFactory, tokens: UserTokenService, box: SecretBox) -> None:
        self._uow = uow
        self._tokens = tokens
        self._box = box

    async def resolve(self, secret: str) -> KeyGrant | UserTokenRefused | None:
        """The grant of a live token whose user may call the API in its workspace; a refusal for a
        live token that may not; ``None`` for a token that is unknown, expired or revoked, or whose
        user is removed or deactivated."""
        grant = await self._tokens.resolve(secret)
        if grant is None:
            return None
        org, user_id, workspace_id = grant.organization_id, grant.user_id, grant.workspace_id
        if workspace_id is None:
            message = user_access.refusal(grant.org_role, None, None)
            assert message is not None
            return UserTokenRefused(grant.token_id, user_id, None, message)
        async with self._uow() as uow:
            workspace = await uow.workspaces.get(org, workspace_id)
            member = await uow.members.get(workspace_id, user_id) if workspace is not None else None
            user = await uow.users.get(org, user_id)
        if user is None or user.deactivated_at is not None:
            return None  # removed or deactivated since the look-up
        if workspace is None:
            message = f"workspace {workspace_id} does not exist; sign in to another with `orgwarden login --workspace`"
            return UserTokenRefused(grant.token_id, user_id, workspace_id, message)
        refused = user_access.refusal(
            user.role,
            member.role if member else None,
            workspace_id,
            workspace.archived_at is not None,
            is_default=workspace.is_default,
        )
        if refused is not None:
            return UserTokenRefused(grant.token_id, user_id, workspace_id, refused)
        upstream = None
        if workspace.upstream_api_key_encrypted:
            upstream = self._box.open(workspace.upstream_api_key_encrypted, workspace.id)
        return KeyGrant(
            key_id="",
            organization_id=org,
            workspace_id=workspace.id,
            status="active",
            expires_at=grant.expires_at,
            workspace_archived=False,
            allowed_inference_geos=workspace.allowed_inference_geos,
            default_inference_geo=workspace.default_inference_geo,
            upstream_api_key=upstream,
            user_id=user_id,
            user_email=user.email,
            token_id=grant.token_id,
        )
