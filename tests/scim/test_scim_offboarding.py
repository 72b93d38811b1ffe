"""Offboarding through SCIM closes every door on every instance within one second (PostgreSQL + Redis).

As ``tests/gateway/test_offboarding_instances.py`` does for the Admin API: two ``orgwarden serve``
processes share PostgreSQL and Redis; a user with an admin key, data-plane keys and a signed-in
grant is provisioned by SCIM (adopted: they exist already), and the identity provider then sets
``active: false`` (or deletes them) through instance A. Every credential must be refused on both
instances before one second has passed since SCIM answered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.api.test_offboarding import admin_with_keys, after_offboarding, sign_in
from tests.conftest import TLS, Server, another_instance, cli, dedicated_server, redis_settings, stop_server
from tests.gateway.test_offboarding_instances import LIMIT, assert_stays_refused, doors, poll_until_refused, warm

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@pytest.fixture(scope="module")
def instances() -> Iterator[list[Server]]:
    with dedicated_server("postgres", redis_settings()) as first:
        second = another_instance(first, first.log_path.parent)
        try:
            yield [first, second]
        finally:
            stop_server(second)


def scim_client(server: Server) -> httpx.Client:
    token = json.loads(cli(server.db, "scim-token", "create", "--json").stdout)["token"]
    headers = {"authorization": f"Bearer {token}"}
    return httpx.Client(base_url=f"{server.base_url}/scim/v2", headers=headers, timeout=10, verify=TLS)


@pytest.mark.parametrize("how", ["deactivated", "deleted"])
def test_a_user_offboarded_by_scim_is_refused_on_every_instance_within_one_second(
    instances: list[Server], how: str
) -> None:
    a, _b = instances
    who = admin_with_keys(a, a.client(), n_keys=2)
    grant = sign_in(a, who["user"].id)
    every = doors(instances, who, grant)
    warm(every)
    with scim_client(a) as scim:
        provisioned = scim.post("/Users", json={"schemas": [USER], "userName": who["user"].email, "active": True})
        assert provisioned.status_code == 201, provisioned.text
        assert provisioned.json()["id"] == who["user"].id  # adopted
        path = f"/Users/{who['user'].id}"
        if how == "deactivated":
            body = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": False}]}
            answer = scim.patch(path, json=body)
            assert answer.status_code == 200, answer.text
        else:
            answer = scim.delete(path)
            assert answer.status_code == 204, answer.text
    since = time.monotonic()

    took = poll_until_refused(every, since)
    print(f"\nSCIM: {how} effective on both instances after {max(took.values()):.3f}s: {took}")
    assert max(took.values()) < LIMIT
    assert_stays_refused(every)
    after_offboarding(a, grant)
