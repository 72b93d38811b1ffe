"""Claude Code policies per group: managed settings and model access (``domain.cc_policy``).

``effective_for_user`` is what the gateway sign-in (``/managed/settings``) and the data plane ask.
"""

from __future__ import annotations

from orgwarden.domain.cc_policy import EMPTY_POLICY, EffectivePolicy
from orgwarden.storage.uow import UnitOfWorkFactory


class CcPolicyService:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def effective_for_user(self, organization_id: str, user_id: str) -> EffectivePolicy:
        """The merged managed settings and model grant of one user (foundation: the base policy)."""
        return EMPTY_POLICY
