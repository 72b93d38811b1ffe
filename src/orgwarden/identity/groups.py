"""What the identity provider says about a person's groups, at sign-in.

``apply_claim`` is the hook the group → role mapping (SCIM helper, issue 16 §3) fills in. For now it
only records nothing and changes nothing: the groups are kept in the sign-in audit event
(``details.groups``), so what the IdP said is on record until the mapping exists.
"""

from __future__ import annotations

from collections.abc import Sequence

from orgwarden.storage.tables import User
from orgwarden.storage.uow import UnitOfWork


async def apply_claim(uow: UnitOfWork, user: User, groups: Sequence[str]) -> None:
    """Map the groups claim of a sign-in onto the user's roles (inside the sign-in's unit of work).

    A no-op until the group mapping lands; called on every sign-in that carried the claim."""
    return None
