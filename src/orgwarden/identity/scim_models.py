"""The SCIM 2.0 resources orgwarden serves, described with ``scim2-models`` (RFC 7643/7644).

Users are ``User`` with the enterprise extension; groups are ``Group``. What is published on
``/Schemas``, ``/ResourceTypes`` and ``/ServiceProviderConfig`` is generated from the same models that
validate requests, so the two cannot drift. ``password`` is left out: orgwarden has no passwords
(people sign in at the identity provider), and one sent is dropped, never stored.
"""

from __future__ import annotations

from typing import Any, Final

from scim2_models import (
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    EnterpriseUser,
    ETag,
    Filter,
    Group,
    Patch,
    ResourceType,
    Schema,
    ScimPolicy,
    ServiceProviderConfig,
    Sort,
    User,
)

UserModel = User[EnterpriseUser]
GroupModel = Group
USER_SCHEMA: Final = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_SCHEMA: Final = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GROUP_SCHEMA: Final = "urn:ietf:params:scim:schemas:core:2.0:Group"

# What is tolerated beyond RFC 7644's letter, for Microsoft Entra ID: a PATCH ``remove`` that names
# its targets in ``value`` (``{"op": "Remove", "path": "members", "value": [{"value": id}]}``), and a
# ``replace`` through a filter that matches nothing (``emails[type eq "work"].value``) adding the entry.
POLICY: Final = ScimPolicy(
    remove_value_as_filter=ScimPolicy.RemoveValue.apply,
    unmatched_path_filter=ScimPolicy.UnmatchedPathFilter.create,
)

MAX_RESULTS: Final = 200  # a page holds at most this many resources (``count`` is capped here)
MAX_RESOURCE_BYTES: Final = 64 * 1024  # a user's stored attributes, as JSON
MAX_BODY_BYTES: Final = 1024 * 1024  # a request body on /scim/v2


def _without_password(schema: Schema) -> Schema:
    schema.attributes = [a for a in (schema.attributes or []) if a.name != "password"]
    return schema


def schemas() -> list[Schema]:
    return [_without_password(UserModel.to_schema()), EnterpriseUser.to_schema(), GroupModel.to_schema()]


def resource_types() -> list[ResourceType]:
    return [ResourceType.from_resource(UserModel), ResourceType.from_resource(GroupModel)]


def service_provider_config() -> ServiceProviderConfig:
    """What is supported, declared (RFC 7643 §5): PATCH, filters, ETags; not bulk, sort or passwords."""
    return ServiceProviderConfig(
        documentation_uri=None,
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=MAX_RESULTS),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=False),
        etag=ETag(supported=True),
        authentication_schemes=[
            AuthenticationScheme(
                type="oauthbearertoken",
                name="OAuth Bearer Token",
                description="A SCIM token from `orgwarden scim-token create`, as Authorization: Bearer",
                primary=True,
            )
        ],
    )


def stored(model: Any) -> dict[str, Any]:
    """A resource as kept in the database: its attributes by SCIM name, without what orgwarden owns."""
    payload: dict[str, Any] = model.model_dump(scim_ctx=None, mode="json", by_alias=True, exclude_none=True)
    for key in ("id", "meta", "groups", "password", "members"):
        payload.pop(key, None)
    return payload
