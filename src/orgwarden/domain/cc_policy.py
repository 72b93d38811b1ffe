"""Claude Code policies: which managed settings and which models a user gets. Pure logic, no I/O.

An organization has a base policy (the SDK's "default" managed settings, ``rbac_group_default``) and
an ordered list of policies, one per RBAC group (the SDK's ``rbac_group_order``, highest precedence
first). A policy matches a user who is a member of its group or whose email domain is one of its
``email_domains`` (an orgwarden extension). Resolution, as Anthropic's gateway merges:

- settings: the first matching policy's document, else the base document (else ``{}``);
- allowed models: the first matching policy's allow-list *replaces* the base's, if it has one;
- denied models: the base's and the first match's deny-lists *add up*.

In ``organization`` mode the list is ignored and every user gets the base policy. A model is granted
when it is not denied and, if there is an allow-list, it is on it; both lists hold exact model ids
or aliases as clients send them (``claude-sonnet-4-5``), compared case-sensitively.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

MODES = ("organization", "rbac_groups")


def canonical_json(document: object) -> str:
    """The canonical JSON of a document: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def etag_of(document: object) -> str:
    """A strong ETag (quoted) over the canonical JSON of ``document``."""
    return '"' + hashlib.sha256(canonical_json(document).encode()).hexdigest()[:32] + '"'


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """What one user gets: the managed-settings document served to their Claude Code, its ETag, and
    their model grant (``allowed_models`` None: no allow-list)."""

    settings: dict[str, Any]
    etag: str
    allowed_models: frozenset[str] | None
    denied_models: frozenset[str]

    @property
    def restricts(self) -> bool:
        """Whether any model is refused: when not, the data plane checks nothing."""
        return self.allowed_models is not None or bool(self.denied_models)

    def grants(self, model: str) -> bool:
        """Whether ``model`` may be used: two frozenset look-ups."""
        if model in self.denied_models:
            return False
        return self.allowed_models is None or model in self.allowed_models

    def refusal(self, model: str) -> str | None:
        """The 400 message naming the model when it is not granted, else ``None``."""
        if self.grants(model):
            return None
        return f"model {model!r} is not available to you: your organization's Claude Code policy does not grant it"


def _empty() -> EffectivePolicy:
    return EffectivePolicy(settings={}, etag=etag_of({}), allowed_models=None, denied_models=frozenset())


EMPTY_POLICY = _empty()


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One stored policy as resolution needs it: the group it belongs to, the email domains it also
    matches (lower case), its settings document (None: damaged or none), its model lists."""

    rbac_group_id: str | None
    settings: dict[str, Any] | None
    allowed_models: frozenset[str] | None = None
    denied_models: frozenset[str] = frozenset()
    email_domains: frozenset[str] = frozenset()

    def matches(self, group_ids: frozenset[str], email_domain: str | None) -> bool:
        if self.rbac_group_id is not None and self.rbac_group_id in group_ids:
            return True
        return email_domain is not None and email_domain in self.email_domains


@dataclass(frozen=True, slots=True)
class OrganizationPolicies:
    """An organization's base policy and ordered rules, as loaded once and cached."""

    mode: str = "rbac_groups"
    base: PolicyRule = field(default_factory=lambda: PolicyRule(None, None))
    rules: tuple[PolicyRule, ...] = ()
    # Merged once: every API-key request asks for it, and merging hashes the settings for the etag.
    _base_policy: EffectivePolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_base_policy", merge(self.base, None))

    def base_policy(self) -> EffectivePolicy:
        return self._base_policy

    def resolve(self, group_ids: Iterable[str], email: str | None) -> EffectivePolicy:
        """The effective policy of a user in ``group_ids`` with ``email``."""
        if self.mode != "rbac_groups" or not self.rules:
            return self.base_policy()
        groups = frozenset(group_ids)
        domain = email_domain(email)
        for rule in self.rules:
            if rule.matches(groups, domain):
                return merge(self.base, rule)
        return self.base_policy()


def merge(base: PolicyRule, match: PolicyRule | None) -> EffectivePolicy:
    """The first match over the base: its settings replace, its allow-list replaces, deny-lists add up."""
    chosen = match.settings if match is not None else None
    settings = chosen if chosen is not None else (base.settings or {})
    allowed = base.allowed_models
    denied = base.denied_models
    if match is not None:
        if match.allowed_models is not None:
            allowed = match.allowed_models
        denied = denied | match.denied_models
    return EffectivePolicy(settings=settings, etag=etag_of(settings), allowed_models=allowed, denied_models=denied)


def email_domain(email: str | None) -> str | None:
    """The lower-cased domain of an email address, or None."""
    if not email or "@" not in email:
        return None
    return email.rsplit("@", 1)[1].strip().lower() or None


def model_list(values: Sequence[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)
