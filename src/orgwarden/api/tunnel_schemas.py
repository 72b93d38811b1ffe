"""Request bodies of the tunnel endpoints (strict, unknown fields refused).

The SDK's create sends only ``display_name`` (the workspace comes from ``anthropic-workspace-id``);
the spec's family, where create is an orgwarden extension, also takes ``workspace_id``. Values are
checked by the services; these models only fix the shapes.
"""

from __future__ import annotations

from orgwarden.api.schemas import Body


class CreateTunnel(Body):
    display_name: str | None = None


class CreateOrganizationTunnel(CreateTunnel):
    workspace_id: str | None = None


class RotateTunnelToken(Body):
    reason: str | None = None


class CreateTunnelCertificate(Body):
    ca_certificate_pem: str


class CheckTunnelToken(Body):
    tunnel_token: str
