"""Request bodies of the Admin API. Unknown fields are refused; types are strict (no "1" for 1).

Fields the official SDK may send but orgwarden does not support (``external_key_id``,
``user_profile_id``, ``rbac_group_ids``) are accepted here so the service can answer with a message
naming them, rather than a generic "unknown field".
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, field_validator


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CreateInvite(Body):
    email: str
    role: str
    rbac_group_ids: list[str] | None = None


class AcceptInvite(Body):
    token: str
    name: str


class UpdateUser(Body):
    role: str


class UpdateOrganizationSettings(Body):
    offboarding_key_policy: str | None = None


class ResidencyIn(Body):
    workspace_geo: str | None = None
    allowed_inference_geos: list[str] | str | None = None
    default_inference_geo: str | None = None


class CreateWorkspace(Body):
    name: str
    data_residency: ResidencyIn | None = None
    tags: dict[str, str] | None = None
    display_color: str | None = None
    external_key_id: str | None = None
    user_profile_id: str | None = None


class UpdateWorkspace(Body):
    name: str | None = None
    data_residency: ResidencyIn | None = None
    tags: dict[str, str | None] | None = None
    display_color: str | None = None
    external_key_id: str | None = None
    user_profile_id: str | None = None


class Empty(Body):
    pass


class AddMember(Body):
    user_id: str
    workspace_role: str


class UpdateMember(Body):
    workspace_role: str


class CreateApiKey(Body):
    name: str
    workspace_id: str | None = None
    expires_at: datetime | None = None

    @field_validator("expires_at", mode="before")
    @classmethod
    def _rfc3339(cls, value: object) -> object:
        if isinstance(value, str):
            from orgwarden.domain.clock import parse_rfc3339

            return parse_rfc3339(value)
        return value


class UpdateApiKey(Body):
    name: str | None = None
    status: str | None = None


class UpstreamKey(Body):
    api_key: str
