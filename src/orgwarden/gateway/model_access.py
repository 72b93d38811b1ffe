"""Model access on the data plane: the Claude Code policy's model lists, for every credential.

A user access token gets its user's effective policy (``services.cc_policies.effective_for_user``);
an API key gets its organization's base policy (the default policy's model lists apply to every API
key: keys belong to no user and no group). Both come from the policy service's in-memory cache, so
the check is a dict look-up and, when the policy restricts models, a frozenset look-up or two.

A model not granted is refused with 400 ``invalid_request_error`` naming it; ``GET /v1/models``
lists only granted models and ``GET /v1/models/{id}`` of another answers 404.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from orgwarden.domain.bounded import BoundedMemo
from orgwarden.domain.catalog import Catalog
from orgwarden.domain.cc_policy import EffectivePolicy
from orgwarden.gateway.refusal import Refusal
from orgwarden.services.cc_policies import CcPolicyService
from orgwarden.services.credentials import KeyGrant


class ModelAccess:
    def __init__(self, policies: CcPolicyService, catalog: Catalog) -> None:
        self._policies = policies
        self._catalog = catalog
        self._expanded: BoundedMemo[tuple[frozenset[str] | None, frozenset[str]], EffectivePolicy] = BoundedMemo(10_000)

    async def policy(self, grant: KeyGrant) -> EffectivePolicy | None:
        """The grant's policy when it restricts models, else None (nothing to check)."""
        if grant.user_id is not None:
            policy = await self._policies.effective_for_user(grant.organization_id, grant.user_id)
        else:
            policy = await self._policies.for_organization(grant.organization_id)
        if not policy.restricts:
            return None
        key = (policy.allowed_models, policy.denied_models)
        found = self._expanded.get(key)
        return found if found is not None else self._expanded.remember(key, self._expand(policy))

    def _expand(self, policy: EffectivePolicy) -> EffectivePolicy:
        """The lists with every name of each catalogued model (its id and aliases), computed once per
        grant: a policy naming ``claude-haiku-4-5`` grants ``claude-haiku-4-5-20251001`` too."""

        def names(models: frozenset[str]) -> frozenset[str]:
            out = set(models)
            for name in models:
                model = self._catalog.find(name)
                if model is not None:
                    out.update((model.id, *model.aliases))
            return frozenset(out)

        allowed = None if policy.allowed_models is None else names(policy.allowed_models)
        return replace(policy, allowed_models=allowed, denied_models=names(policy.denied_models))


def check(policy: EffectivePolicy | None, model: object, field: str = "model") -> None:
    """Refuse a request naming a model the policy does not grant."""
    if policy is None or not isinstance(model, str):
        return
    message = policy.refusal(model)
    if message is not None:
        raise Refusal(400, "invalid_request_error", f"{field}: {message}")


def check_body(policy: EffectivePolicy | None, body: bytes) -> None:
    """``check`` on a JSON body's ``model`` (count_tokens: parsed only when the policy restricts)."""
    if policy is None:
        return
    try:
        request = json.loads(body)
    except ValueError:
        return  # the upstream answers the malformed body
    if isinstance(request, dict):
        check(policy, request.get("model"))


def check_model_path(policy: EffectivePolicy | None, path: str) -> None:
    """``GET /v1/models/{id}`` of a model not granted: 404, as if it did not exist."""
    if policy is None:
        return
    model_id = path.rstrip("/").rsplit("/", 1)[-1]
    if not policy.grants(model_id):
        raise Refusal(404, "not_found_error", f"model: {model_id[:200]!r} not found")


def filter_list(policy: EffectivePolicy | None, body: bytes) -> bytes:
    """The upstream's ``GET /v1/models`` page with only granted models."""
    if policy is None:
        return body
    try:
        page: Any = json.loads(body)
    except ValueError:
        return body
    if not isinstance(page, dict) or not isinstance(page.get("data"), list):
        return body
    kept = [m for m in page["data"] if isinstance(m, dict) and policy.grants(str(m.get("id", "")))]
    page["data"] = kept  # first_id / last_id stay the upstream's: they are the cursors of its pages
    return json.dumps(page).encode()
