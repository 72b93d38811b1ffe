"""SCIM 2.0 provisioning (RFC 7644): the use cases behind ``/scim/v2/Users`` and ``/scim/v2/Groups``.

A SCIM user is an orgwarden user plus a ``scim_users`` row holding the SCIM attributes orgwarden does
not model. The mapping (documented in the README):

- ``id`` is the orgwarden user id; ``active`` is "not deactivated" (unassigning it, or never sending
  it, means active: the default); ``groups`` are the user's groups.
- the user's email is ``userName`` when it is an address, else the primary (or first) of ``emails``,
  else ``userName`` itself (such a user can be provisioned but cannot sign in until it has one);
- the user's name is ``displayName``, else ``name.formatted``, else given and family names, else
  ``userName``;
- creating a user makes an organization member with role ``user`` (raised by its groups); a user
  with that email who is not provisioned yet (an invited or earlier member) is adopted instead;
- ``active: false`` deactivates (``UserService.deactivate``), ``active: true`` reactivates, and
  DELETE removes (``UserService.remove``): each closes every door the offboarding use case knows.

Groups are ``rbac_groups`` rows; SCIM members must be users of the organization. A change of
membership recomputes the roles of every user it touches (``identity.groups``).

Errors are SCIM's (``scim2_models`` exceptions, rendered by ``api.scim``); refusals of the user use
cases (last admin, only member) arrive as ``orgwarden.errors`` and are rendered as SCIM errors too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from pydantic import ValidationError
from scim2_models import (
    Context as ScimContext,
)
from scim2_models import (
    Error,
    GroupMember,
    GroupMembership,
    InvalidFilterException,
    InvalidValueException,
    Meta,
    NotFoundException,
    PatchOp,
    PayloadTooLargeException,
    PreconditionFailedException,
    SCIMException,
    ScimFilter,
    UniquenessException,
)
from scim2_models.path.expressions import AttrPath, CompareOperator, Comparison

from orgwarden import ids
from orgwarden.domain.clock import utcnow
from orgwarden.identity import groups as group_roles
from orgwarden.identity.scim_models import MAX_RESOURCE_BYTES, POLICY, GroupModel, UserModel, stored
from orgwarden.services import audit
from orgwarden.services.context import Context
from orgwarden.services.users import UserService
from orgwarden.storage.groups import touch
from orgwarden.storage.tables import RbacGroup, RbacGroupMember, ScimUser, User
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory

GROUP_ID = "rbacgrp"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
T = TypeVar("T")


def _invalid(detail: str) -> InvalidValueException:
    return InvalidValueException(detail=detail)


def etag(version: int) -> str:
    return f'W/"{version}"'


def check_version(if_match: str | None, version: int) -> None:
    """RFC 7644 §3.14: a precondition that names another version is refused (412)."""
    if if_match is None:
        return
    wanted = {tag.strip() for tag in if_match.split(",")}
    if "*" not in wanted and etag(version) not in wanted and f'"{version}"' not in wanted:
        raise PreconditionFailedException(detail=f"the resource is at version {etag(version)}")


def validate(model: type[T], payload: Any, scim_ctx: ScimContext) -> T:
    try:
        return model.model_validate(payload, scim_ctx=scim_ctx, scim_policy=POLICY)  # type: ignore[attr-defined,no-any-return]
    except ValidationError as exc:
        raise _from_validation(exc) from None


def _from_validation(exc: ValidationError) -> SCIMException:
    error = Error.from_validation_errors(exc)[0]
    return SCIMException.from_error(error)


def _bounded(value: str | None, limit: int, what: str) -> str | None:
    if value is not None and len(value) > limit:
        raise _invalid(f"{what}: at most {limit} characters")
    return value


def _email_of(resource: Any) -> str:
    user_name: str = resource.user_name
    if _EMAIL.match(user_name):
        return user_name.lower()
    emails = [e for e in resource.emails or [] if e.value]
    primary = [e for e in emails if e.primary]
    chosen = (primary or emails)[0].value if emails else user_name
    return str(chosen).strip().lower()[:320]


def _name_of(resource: Any) -> str:
    name = resource.name
    parts = [name.given_name, name.family_name] if name is not None else []
    candidates = [
        resource.display_name,
        name.formatted if name is not None else None,
        " ".join(p for p in parts if p) or None,
        resource.user_name,
    ]
    chosen = next((c for c in candidates if c and c.strip()), "")
    return str(chosen).strip()[:255]


def _size_checked(attributes: dict[str, Any]) -> dict[str, Any]:
    if len(json.dumps(attributes)) > MAX_RESOURCE_BYTES:
        raise PayloadTooLargeException(detail=f"a user's attributes may take at most {MAX_RESOURCE_BYTES} bytes")
    return attributes


def _simple_eq(filter_text: str) -> tuple[str, str] | None:
    """``attr eq "value"`` on an attribute orgwarden indexes, else ``None`` (matched in Python)."""
    ast = ScimFilter(filter_text).ast
    if (
        isinstance(ast, Comparison)
        and ast.op == CompareOperator.eq
        and isinstance(ast.attr_path, AttrPath)
        and ast.attr_path.sub_attr is None
        and isinstance(ast.value, str)
    ):
        return ast.attr_path.attr.lower(), ast.value
    return None


class ScimService:
    def __init__(self, uow: UnitOfWorkFactory, users: UserService) -> None:
        self._uow = uow
        self._users = users

    # ---- rendering

    def _user_resource(self, base: str, scim: ScimUser, user: User, groups: Sequence[RbacGroup]) -> Any:
        resource = UserModel.model_validate(scim.attributes)
        resource.id = user.id
        resource.user_name = scim.user_name
        resource.external_id = scim.external_id
        # Deactivated is ``false``; otherwise ``true``, or absent when never sent or removed (active too).
        resource.active = False if user.deactivated_at is not None else (True if "active" in scim.attributes else None)
        resource.groups = [
            GroupMembership(value=g.id, ref=f"{base}/Groups/{g.id}", display=g.name, type="direct") for g in groups
        ] or None
        resource.meta = Meta(
            resource_type="User",
            created=scim.created_at,
            last_modified=scim.updated_at,
            location=f"{base}/Users/{user.id}",
            version=etag(scim.version),
        )
        return resource

    async def _group_resource(self, uow: UnitOfWork, base: str, group: RbacGroup) -> Any:
        rows = await uow.rbac_groups.members(group.id)
        resource = GroupModel(display_name=group.name, external_id=group.external_id)
        resource.id = group.id
        members = [
            GroupMember(value=m.user_id, ref=f"{base}/Users/{m.user_id}", type="User", display=m.display) for m in rows
        ]
        resource.members = members or None
        resource.meta = Meta(
            resource_type="Group",
            created=group.created_at,
            last_modified=group.updated_at,
            location=f"{base}/Groups/{group.id}",
            version=etag(group.version),
        )
        return resource

    # ---- users

    async def get_user(self, ctx: Context, base: str, user_id: str) -> Any:
        async with self._uow() as uow:
            found = await uow.scim_users.get(ctx.organization_id, user_id)
            if found is None:
                raise NotFoundException(detail=f"user {user_id!r} not found")
            groups = [g for _, g in await uow.rbac_groups.groups_of(user_id)]
            return self._user_resource(base, found[0], found[1], groups)

    async def list_users(self, ctx: Context, base: str, filter_text: str | None) -> list[Any]:
        narrow: dict[str, Any] = {}
        if filter_text:
            simple = _simple_eq(filter_text)
            if simple is not None and simple[0] == "username":
                narrow["user_name_key"] = simple[1].lower()
            elif simple is not None and simple[0] == "externalid":
                narrow["external_id"] = simple[1]
            elif simple is not None and simple[0] == "id":
                narrow["user_ids"] = [simple[1]]
        async with self._uow() as uow:
            rows = await uow.scim_users.find(ctx.organization_id, **narrow)
            memberships = await uow.rbac_groups.groups_of_many([u.id for _, u in rows])
            resources = [self._user_resource(base, s, u, memberships.get(u.id, [])) for s, u in rows]
        if filter_text:
            matcher = ScimFilter[UserModel](filter_text)
            resources = [r for r in resources if matcher.match(r)]
        return resources

    async def create_user(self, ctx: Context, base: str, payload: Any) -> Any:
        resource = validate(UserModel, payload, ScimContext.RESOURCE_CREATION_REQUEST)
        deactivate = resource.active is False
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            user_name = _bounded(resource.user_name, 320, "userName") or ""
            if not user_name.strip():
                raise _invalid("userName: required")
            existing = await uow.scim_users.by_user_name(ctx.organization_id, user_name.lower())
            if existing is not None and await uow.users.get(ctx.organization_id, existing.user_id) is not None:
                raise UniquenessException(detail=f"a user with userName {user_name!r} exists already")
            if existing is not None:  # its user was removed (by the Admin API): the name is free again
                await uow.scim_users.delete(existing)
                await uow.flush()
            email, name = _email_of(resource), _name_of(resource)
            user = await uow.users.by_email(ctx.organization_id, email)
            if user is not None and await uow.scim_users.get(ctx.organization_id, user.id) is not None:
                raise UniquenessException(detail=f"a provisioned user with email {email!r} exists already")
            adopted = user is not None
            if user is None:
                user = User(
                    id=ids.new_id(ids.USER),
                    organization_id=ctx.organization_id,
                    email=email,
                    name=name,
                    role="user",
                    added_at=now,
                    removed_at=None,
                )
                uow.users.add(user)
                await uow.flush()  # the user row before the row that references it
            scim = ScimUser(
                user_id=user.id,
                organization_id=ctx.organization_id,
                user_name=user_name,
                user_name_key=user_name.lower(),
                external_id=_bounded(resource.external_id, 255, "externalId"),
                attributes=_size_checked(stored(resource)),
                version=1,
                created_at=now,
                updated_at=now,
            )
            uow.scim_users.add(scim)
            audit.record(
                uow,
                ctx,
                "scim.user.create",
                "user",
                user.id,
                details={"email": email, "user_name": user_name, "adopted": adopted, "role": user.role},
            )
            await uow.commit()
            user_id = user.id
        if deactivate:
            await self._set_active(ctx, user_id, False)
        return await self.get_user(ctx, base, user_id)

    async def replace_user(self, ctx: Context, base: str, user_id: str, payload: Any, if_match: str | None) -> Any:
        resource = validate(UserModel, payload, ScimContext.RESOURCE_REPLACEMENT_REQUEST)
        return await self._save_user(ctx, base, user_id, if_match, lambda _current: resource)

    async def patch_user(self, ctx: Context, base: str, user_id: str, payload: Any, if_match: str | None) -> Any:
        patch = validate(PatchOp[UserModel], payload, ScimContext.RESOURCE_PATCH_REQUEST)
        return await self._save_user(ctx, base, user_id, if_match, _applying(patch))

    async def _save_user(
        self, ctx: Context, base: str, user_id: str, if_match: str | None, change: Callable[[Any], Any]
    ) -> Any:
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            found = await uow.scim_users.get(ctx.organization_id, user_id, lock=True)
            if found is None:
                raise NotFoundException(detail=f"user {user_id!r} not found")
            scim, user = found
            check_version(if_match, scim.version)
            groups = [g for _, g in await uow.rbac_groups.groups_of(user_id)]
            current = self._user_resource(base, scim, user, groups)
            deactivated = user.deactivated_at
            resource = change(current)
            user_name = _bounded(resource.user_name, 320, "userName")
            if not user_name or not user_name.strip():
                raise _invalid("userName: required")
            other = await uow.scim_users.by_user_name(ctx.organization_id, user_name.lower())
            if other is not None and other.user_id != user_id:
                if await uow.users.get(ctx.organization_id, other.user_id) is not None:
                    raise UniquenessException(detail=f"a user with userName {user_name!r} exists already")
                await uow.scim_users.delete(other)  # its user was removed: the name is free again
                await uow.flush()
            email = _email_of(resource)
            holder = await uow.users.by_email(ctx.organization_id, email)
            if holder is not None and holder.id != user_id:
                raise UniquenessException(detail=f"another user has the email {email!r}")
            attributes = _size_checked(stored(resource))
            before = {"email": user.email, "name": user.name, "user_name": scim.user_name}
            scim.user_name, scim.user_name_key = user_name, user_name.lower()
            scim.external_id = _bounded(resource.external_id, 255, "externalId")
            scim.attributes = attributes
            user.email, user.name = email, _name_of(resource)
            touch(scim, now)
            after = {"email": user.email, "name": user.name, "user_name": scim.user_name}
            changed = {k: [before[k], after[k]] for k in before if before[k] != after[k]}
            audit.record(uow, ctx, "scim.user.update", "user", user_id, details={"changed": changed})
            await uow.commit()
        active = resource.active is not False  # unassigned means active, the default
        if active != (deactivated is None):
            await self._set_active(ctx, user_id, active)
        return await self.get_user(ctx, base, user_id)

    async def _set_active(self, ctx: Context, user_id: str, active: bool) -> None:
        """Deactivate or reactivate through the user use cases, which offboard (issue 16 §4)."""
        if active:
            await self._users.reactivate(ctx, user_id)
        else:
            await self._users.deactivate(ctx, user_id)

    async def delete_user(self, ctx: Context, user_id: str, if_match: str | None) -> None:
        async with self._uow() as uow:
            found = await uow.scim_users.get(ctx.organization_id, user_id)
            if found is None:
                raise NotFoundException(detail=f"user {user_id!r} not found")
            check_version(if_match, found[0].version)
        await self._users.remove(ctx, user_id)
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            row = await uow.scim_users.by_user_name(ctx.organization_id, found[0].user_name_key)
            if row is not None and row.user_id == user_id:
                await uow.scim_users.delete(row)
            left = await uow.rbac_groups.remove_user_everywhere(user_id)
            for group_id in left:
                group = await uow.rbac_groups.get(ctx.organization_id, group_id)
                if group is not None:
                    touch(group, utcnow())
            await uow.commit()

    # ---- groups

    async def get_group(self, ctx: Context, base: str, group_id: str) -> Any:
        async with self._uow() as uow:
            group = await uow.rbac_groups.get(ctx.organization_id, group_id)
            if group is None:
                raise NotFoundException(detail=f"group {group_id!r} not found")
            return await self._group_resource(uow, base, group)

    async def list_groups(self, ctx: Context, base: str, filter_text: str | None) -> list[Any]:
        narrow: dict[str, Any] = {}
        if filter_text:
            simple = _simple_eq(filter_text)
            if simple is not None and simple[0] == "displayname":
                narrow["name"] = simple[1]
            elif simple is not None and simple[0] == "externalid":
                narrow["external_id"] = simple[1]
            elif simple is not None and simple[0] == "id":
                narrow["ids"] = [simple[1]]
        async with self._uow() as uow:
            groups = await uow.rbac_groups.find(ctx.organization_id, **narrow)
            if "name" in narrow and not groups:  # displayName is case-insensitive: try every group
                groups = await uow.rbac_groups.find(ctx.organization_id)
            resources = [await self._group_resource(uow, base, g) for g in groups]
        if filter_text:
            matcher = ScimFilter[GroupModel](filter_text)
            resources = [r for r in resources if matcher.match(r)]
        return resources

    async def _members(self, uow: UnitOfWork, ctx: Context, resource: Any) -> dict[str, str | None]:
        """The members a resource names, by user id, with the ``display`` each was sent with."""
        wanted: dict[str, str | None] = {}
        for member in resource.members or []:
            if member.type not in (None, "User"):
                raise _invalid("members: only users can be members of a group (nested groups are not supported)")
            if member.value is None or await uow.users.get(ctx.organization_id, member.value) is None:
                raise _invalid(f"members: no user {member.value!r} in this organization")
            wanted.setdefault(member.value, _bounded(member.display, 255, "members.display"))
        return wanted

    async def _set_members(
        self, uow: UnitOfWork, ctx: Context, group: RbacGroup, wanted: dict[str, str | None], now: datetime
    ) -> dict[str, Any]:
        existing = {m.user_id: m for m in await uow.rbac_groups.members(group.id)}
        current = set(existing)
        added = [uid for uid in wanted if uid not in current]
        removed = sorted(current - set(wanted))
        for uid, row in existing.items():
            if uid in wanted:  # SCIM now vouches for it: a later sign-in claim does not remove it
                row.display, row.source = wanted[uid], "scim"
            else:
                await uow.rbac_groups.remove_member(row)
        for uid in added:
            uow.rbac_groups.add(
                RbacGroupMember(group_id=group.id, user_id=uid, source="scim", display=wanted[uid], created_at=now)
            )
        await uow.flush()
        roles: dict[str, Any] = {}
        for uid in [*added, *removed]:
            user = await uow.users.get(ctx.organization_id, uid)
            if user is not None and (changes := await group_roles.recompute(uow, user, now)):
                roles[uid] = changes
        return {"added": added, "removed": removed, "roles": roles}

    async def create_group(self, ctx: Context, base: str, payload: Any) -> Any:
        resource = validate(GroupModel, payload, ScimContext.RESOURCE_CREATION_REQUEST)
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            name = _bounded(resource.display_name, 255, "displayName")
            if not name or not name.strip():
                raise _invalid("displayName: required")
            if any(g.name.lower() == name.lower() for g in await uow.rbac_groups.find(ctx.organization_id)):
                raise UniquenessException(detail=f"a group named {name!r} exists already")
            group = RbacGroup(
                id=ids.new_id(GROUP_ID),
                organization_id=ctx.organization_id,
                name=name,
                source_type="scim",
                external_id=_bounded(resource.external_id, 255, "externalId"),
                org_role=None,
                version=1,
                created_at=now,
                updated_at=now,
            )
            uow.rbac_groups.add(group)
            await uow.flush()
            members = await self._set_members(uow, ctx, group, await self._members(uow, ctx, resource), now)
            audit.record(uow, ctx, "scim.group.create", "rbac_group", group.id, details={"name": name, **members})
            await uow.commit()
            return await self._group_resource(uow, base, group)

    async def replace_group(self, ctx: Context, base: str, group_id: str, payload: Any, if_match: str | None) -> Any:
        resource = validate(GroupModel, payload, ScimContext.RESOURCE_REPLACEMENT_REQUEST)
        return await self._save_group(ctx, base, group_id, if_match, lambda _current: resource)

    async def patch_group(self, ctx: Context, base: str, group_id: str, payload: Any, if_match: str | None) -> Any:
        patch = validate(PatchOp[GroupModel], payload, ScimContext.RESOURCE_PATCH_REQUEST)
        return await self._save_group(ctx, base, group_id, if_match, _applying(patch))

    async def _save_group(
        self, ctx: Context, base: str, group_id: str, if_match: str | None, change: Callable[[Any], Any]
    ) -> Any:
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            group = await uow.rbac_groups.get(ctx.organization_id, group_id, lock=True)
            if group is None:
                raise NotFoundException(detail=f"group {group_id!r} not found")
            check_version(if_match, group.version)
            resource = change(await self._group_resource(uow, base, group))
            name = _bounded(resource.display_name, 255, "displayName")
            if not name or not name.strip():
                raise _invalid("displayName: required")
            clash = [g for g in await uow.rbac_groups.find(ctx.organization_id) if g.name.lower() == name.lower()]
            if any(g.id != group.id for g in clash):
                raise UniquenessException(detail=f"a group named {name!r} exists already")
            before = group.name
            group.name = name
            group.external_id = _bounded(resource.external_id, 255, "externalId")
            members = await self._set_members(uow, ctx, group, await self._members(uow, ctx, resource), now)
            touch(group, now)
            details = {"name": [before, name], **members}
            audit.record(uow, ctx, "scim.group.update", "rbac_group", group.id, details=details)
            await uow.commit()
            return await self._group_resource(uow, base, group)

    async def delete_group(self, ctx: Context, group_id: str, if_match: str | None) -> None:
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            group = await uow.rbac_groups.get(ctx.organization_id, group_id, lock=True)
            if group is None:
                raise NotFoundException(detail=f"group {group_id!r} not found")
            check_version(if_match, group.version)
            members = await self._set_members(uow, ctx, group, {}, now)
            await uow.rbac_groups.delete(group)
            audit.record(uow, ctx, "scim.group.delete", "rbac_group", group_id, details={"name": group.name, **members})
            await uow.commit()


def check_filter(filter_text: str | None) -> None:
    """A filter that does not parse is a 400 ``invalidFilter``."""
    if filter_text is None:
        return
    try:
        ScimFilter(filter_text).ast  # noqa: B018 - parsing is the check
    except Exception as exc:  # the parser raises several kinds
        raise InvalidFilterException(detail=f"filter: {exc}") from None


def _applying(patch: Any) -> Callable[[Any], Any]:
    """A change that applies a validated PatchOp to the current resource (a SCIM 400 if it cannot)."""

    def apply(current: Any) -> Any:
        try:
            patch.patch(current, scim_policy=POLICY)
        except ValidationError as exc:
            raise _from_validation(exc) from None
        return current

    return apply
