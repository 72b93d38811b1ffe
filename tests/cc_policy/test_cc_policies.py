"""Claude Code policies with the official SDK 2.17 against a real server (SQLite and PostgreSQL): the
managed-settings resources (configuration, default, per RBAC group), validation naming the key, the
resolution rules (first match, allow-lists replace, deny-lists add up, email domains), model access
for a user token and an API key, ``/v1/models`` filtered, and a change seen by the data plane within
a second (the cache-event poll)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anthropic
import pytest

from orgwarden.domain.cc_policy import OrganizationPolicies, PolicyRule
from orgwarden.storage.uow import UnitOfWork
from tests.attrib.test_user_tokens_data_plane import issue, new_user
from tests.conftest import SdkHttpClient, Server, query_db, unique

HAIKU, SONNET, OPUS = "claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1"
MS = "/v1/organizations/claude_code/managed_settings"


def managed(client: anthropic.Anthropic) -> Any:
    return client.beta.organization.claude_code.managed_settings


def new_group(server: Server, *members: str) -> str:
    with server.http() as http:
        group = http.post("/v1/organizations/rbac_groups", json={"name": unique("g")}).json()
        for user_id in members:
            added = http.post(f"/v1/organizations/rbac_groups/{group['id']}/members", json={"user_id": user_id})
            assert added.status_code == 200, added.text
    return str(group["id"])


def ask(server: Server, secret: str, model: str) -> anthropic.types.Message:
    client = anthropic.Anthropic(api_key=secret, base_url=server.base_url, max_retries=0, http_client=SdkHttpClient())
    return client.messages.create(model=model, max_tokens=8, messages=[{"role": "user", "content": "hi"}])


def refused(server: Server, secret: str, model: str) -> str:
    with pytest.raises(anthropic.BadRequestError) as caught:
        ask(server, secret, model)
    assert caught.value.type == "invalid_request_error"
    return str(caught.value.api_message)


def eventually(check: Callable[[], bool], within: float = 1.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.05)


def granted(server: Server, secret: str, model: str) -> bool:
    """Whether the gateway lets a request for ``model`` through to the upstream (the simulator
    answers 404 for a model it does not serve, such as OPUS: passed, not refused)."""
    try:
        ask(server, secret, model)
    except anthropic.BadRequestError:
        return False
    except anthropic.NotFoundError:
        return True
    return True


@pytest.fixture(autouse=True)
def clean(server: Server) -> Any:
    """Each test starts with no group policies and no default (the module shares its organization)."""
    ms = managed(server.client())
    yield
    for item in ms.rbac_groups.list():
        ms.rbac_groups.delete(item.rbac_group_id)
    ms.rbac_group_default.update(settings=None, extra_body={"allowed_models": None, "denied_models": []})


# -- the resources, with the SDK ----------------------------------------------------------------------


def test_the_sdk_sets_lists_orders_and_deletes_group_settings(server: Server) -> None:
    ms = managed(server.client())
    first, second = new_group(server), new_group(server)
    made = ms.rbac_groups.set(first, settings={"permissions": {"deny": ["WebFetch"]}})
    assert made.type == "claude_code_rbac_group_managed_settings"
    assert made.rbac_group_status.type == "active"
    ms.rbac_groups.set(second, settings={"model": SONNET})
    config = ms.configuration.retrieve()
    assert config.rbac_group_order == [first, second]
    assert config.mode.type == "rbac_groups"
    assert [g.rbac_group_id for g in ms.rbac_groups.list()] == [first, second]
    assert [g.rbac_group_id for g in ms.rbac_groups.list(limit=1)] == [first, second]  # pages through
    moved = ms.configuration.update(
        rbac_group_order=[second, first], rbac_group_order_version=config.rbac_group_order_version
    )
    assert moved.rbac_group_order == [second, first]
    with pytest.raises(anthropic.ConflictError):  # a stale version
        ms.configuration.update(
            rbac_group_order=[first, second], rbac_group_order_version=config.rbac_group_order_version
        )
    assert ms.rbac_groups.retrieve(first).settings == {"permissions": {"deny": ["WebFetch"]}}
    assert ms.rbac_groups.delete(first).type == "claude_code_rbac_group_managed_settings_deleted"
    with pytest.raises(anthropic.NotFoundError) as caught:
        ms.rbac_groups.retrieve(first)
    assert caught.value.error_code == "rbac_group_managed_settings_not_found"
    assert ms.configuration.retrieve().rbac_group_order == [second]


def test_the_default_settings_are_set_read_and_cleared(server: Server) -> None:
    ms = managed(server.client())
    assert ms.rbac_group_default.retrieve().updated_at is None
    ms.rbac_group_default.update(settings={"cleanupPeriodDays": 7}, extra_body={"denied_models": [OPUS]})
    got = ms.rbac_group_default.retrieve()
    assert got.settings == {"cleanupPeriodDays": 7}
    assert got.updated_at is not None
    assert got.model_extra is not None
    assert got.model_extra["denied_models"] == [OPUS]
    assert ms.rbac_group_default.update(settings=None).settings is None


def test_a_settings_document_with_an_unknown_key_is_refused_naming_it(server: Server) -> None:
    ms = managed(server.client())
    group = new_group(server)
    with pytest.raises(anthropic.BadRequestError) as caught:
        ms.rbac_groups.set(group, settings={"permissions": {}, "permisions": {}})
    assert "'permisions'" in str(caught.value.api_message)
    with pytest.raises(anthropic.BadRequestError) as caught:
        ms.rbac_group_default.update(settings={"notASetting": 1})
    assert "'notASetting'" in str(caught.value.api_message)
    with server.http() as http:
        not_object = http.post(f"{MS}/rbac_groups/{group}", json={"settings": ["a"]})
    assert not_object.status_code == 400
    assert "must be a JSON object" in not_object.json()["error"]["message"]
    with pytest.raises(anthropic.NotFoundError):  # not a group of the organization
        ms.rbac_groups.set("rbacgrp_nope", settings={})
    assert ms.configuration.retrieve().rbac_group_order == []


# -- resolution and model access ------------------------------------------------------------------------


def test_first_match_wins_allow_lists_replace_and_deny_lists_add_up() -> None:
    base = PolicyRule(None, {"model": HAIKU}, frozenset({HAIKU, SONNET}), frozenset({OPUS}))
    devs = PolicyRule("g1", {"model": SONNET}, frozenset({SONNET, "claude-x"}), frozenset({"claude-x"}))
    ops = PolicyRule("g2", {"cleanupPeriodDays": 1}, None, frozenset({SONNET}), frozenset({"ops.test"}))
    policies = OrganizationPolicies("rbac_groups", base, (devs, ops))
    both = policies.resolve(["g2", "g1"], "a@acme.test")
    assert both.settings == {"model": SONNET}  # g1 comes first in the order
    assert both.allowed_models == {SONNET, "claude-x"}  # replaced
    assert both.denied_models == {OPUS, "claude-x"}  # added up
    assert not both.grants("claude-x")
    assert both.grants(SONNET)
    assert not both.grants(HAIKU)
    by_domain = policies.resolve([], "b@OPS.test")
    assert by_domain.settings == {"cleanupPeriodDays": 1}
    assert by_domain.allowed_models == {HAIKU, SONNET}  # no allow-list of its own: the base's
    assert not by_domain.grants(SONNET)
    assert by_domain.grants(HAIKU)
    nobody = policies.resolve([], "c@else.test")
    assert nobody.settings == {"model": HAIKU}
    assert nobody.etag != both.etag
    assert OrganizationPolicies("organization", base, (devs,)).resolve(["g1"], None).settings == {"model": HAIKU}


def test_a_user_token_gets_its_groups_models_and_sees_a_change_within_a_second(server: Server) -> None:
    user = new_user(server)
    token = issue_default(server, user["id"])
    group = new_group(server, user["id"])
    ms = managed(server.client())
    assert granted(server, token, SONNET)
    ms.rbac_groups.set(group, settings={}, extra_body={"allowed_models": [HAIKU]})
    eventually(lambda: not granted(server, token, SONNET))
    assert "'claude-sonnet-4-5'" in refused(server, token, SONNET)
    assert ask(server, token, HAIKU).type == "message"
    client = anthropic.Anthropic(api_key=token, base_url=server.base_url, max_retries=0, http_client=SdkHttpClient())
    listed = [m.id for m in client.models.list()]
    assert len(listed) == 1
    assert listed[0].startswith(HAIKU)
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve(SONNET)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.count_tokens(model=SONNET, messages=[{"role": "user", "content": "hi"}])
    ms.rbac_group_default.update(settings={}, extra_body={"denied_models": [HAIKU]})  # deny-lists add up
    eventually(lambda: not granted(server, token, HAIKU))
    with server.http() as http:  # leaving the group: the base policy again
        http.delete(f"/v1/organizations/rbac_groups/{group}/members/{user['id']}")
    eventually(lambda: granted(server, token, SONNET))


def test_an_api_key_gets_the_base_policys_models(server: Server) -> None:
    with server.http() as http:
        key = http.post("/v1/organizations/api_keys", json={"name": unique("key")}).json()
    secret = key["key"]
    ms = managed(server.client())
    ms.rbac_group_default.update(settings={}, extra_body={"denied_models": [OPUS]})
    eventually(lambda: not granted(server, secret, OPUS))
    assert "'claude-opus-4-1'" in refused(server, secret, OPUS)
    assert ask(server, secret, HAIKU).type == "message"
    client = anthropic.Anthropic(api_key=secret, base_url=server.base_url, max_retries=0, http_client=SdkHttpClient())
    assert OPUS not in [m.id for m in client.models.list()]


def issue_default(server: Server, user_id: str) -> str:
    """A token bound to the default workspace (where a developer may call)."""

    async def default_workspace(uow: UnitOfWork) -> str:
        return (await uow.workspaces.default(server.organization["id"])).id

    return issue(server, user_id, query_db(server.db, default_workspace))
