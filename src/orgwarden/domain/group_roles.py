"""How groups and direct assignment combine into one role (pure; decided here, documented in the README).

A user's role in a scope (the organization, or one workspace) is the highest of their *direct* role
(what an admin, an invite or SCIM creation gave them) and the roles their groups grant there.
Organization roles have no natural order, so one is chosen, by how much each may do:
``user`` < ``claude_code_user`` < ``billing`` < ``developer`` < ``admin``. Workspace roles keep
``domain.roles``' order. Groups never grant ``admin`` (as the Admin API never assigns it).

orgwarden writes the effective role in the usual place (``users.role``, ``workspace_members``) so
every reader (policy, tokens) sees one value, and remembers, per raised scope, the direct role and
the role it wrote (``ManagedRole``). On every recomputation a stored role that differs from the one
orgwarden wrote was changed directly meanwhile, and becomes the new direct role.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from orgwarden.domain.roles import _WORKSPACE_RANK

ORG_SCOPE: Final = "organization"

ORG_RANK: Final = {"user": 0, "claude_code_user": 1, "billing": 2, "developer": 3, "admin": 4}
GROUP_ORG_ROLES: Final = frozenset({"user", "claude_code_user", "billing", "developer"})
GROUP_WORKSPACE_ROLES: Final = frozenset(
    {"workspace_user", "workspace_restricted_developer", "workspace_developer", "workspace_admin"}
)


def _rank(scope: str, role: str) -> int:
    return ORG_RANK[role] if scope == ORG_SCOPE else _WORKSPACE_RANK[role]


def highest(scope: str, roles: Iterable[str | None]) -> str | None:
    """The highest of ``roles`` in ``scope`` (``None`` entries mean "no role")."""
    best: str | None = None
    for role in roles:
        if role is not None and (best is None or _rank(scope, role) > _rank(scope, best)):
            best = role
    return best


@dataclass(frozen=True, slots=True)
class Managed:
    direct_role: str | None
    managed_role: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to store for one scope: the role (``None``: no membership) and the bookkeeping row
    (``None``: groups add nothing, forget it)."""

    role: str | None
    managed: Managed | None


def resolve(scope: str, stored: str | None, managed: Managed | None, granted: Iterable[str]) -> Outcome:
    """The role to store in ``scope``, given the stored role, what orgwarden last wrote there (if it
    did) and the roles the user's groups grant there."""
    direct = managed.direct_role if managed is not None and stored == managed.managed_role else stored
    effective = highest(scope, [direct, *granted])
    if effective is None or effective == direct:
        return Outcome(direct, None)
    return Outcome(effective, Managed(direct, effective))
