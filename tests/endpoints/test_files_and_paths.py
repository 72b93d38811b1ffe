"""The whole API through the gateway: Files scoped to a workspace, other known paths forwarded with
the key check, unknown paths refused, and no phantom usage; the official SDK as the client and the
built-in simulator as the upstream (one server per backend for the module)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from sqlalchemy import select

from orgwarden.storage.tables import StoredFile, UsageRecord
from orgwarden.storage.uow import UnitOfWork
from tests.conftest import BACKENDS, TLS, SdkHttpClient, Server, assert_error, dedicated_server, query_db, unique


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with dedicated_server(request.param, {"ORGWARDEN_MAX_FILE_BYTES": str(8 * 1024 * 1024)}) as srv:
        yield srv


def new_key(server: Server, workspace_id: str | None = None) -> dict[str, Any]:
    with server.http() as http:
        response = http.post("/v1/organizations/api_keys", json={"name": unique("key"), "workspace_id": workspace_id})
    assert response.status_code == 200, response.text
    return dict(response.json())


def workspace_key(server: Server) -> tuple[str, dict[str, Any]]:
    workspace = server.client().organization.workspaces.create(name=unique("ws"))
    return workspace.id, new_key(server, workspace.id)


def sdk(server: Server, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=server.base_url, max_retries=0, http_client=SdkHttpClient())


def test_a_file_goes_up_is_listed_comes_back_identical_and_is_deleted(server: Server) -> None:
    _, key = workspace_key(server)
    client = sdk(server, key["key"])
    content = os.urandom(5 * 1024 * 1024 + 17)  # several MB: streamed both ways
    uploaded = client.beta.files.upload(file=("data.bin", content, "application/octet-stream"))
    assert uploaded.id.startswith("file_")
    assert (uploaded.filename, uploaded.type, uploaded.size_bytes) == ("data.bin", "file", len(content))
    assert [f.id for f in client.beta.files.list()] == [uploaded.id]
    assert client.beta.files.retrieve_metadata(uploaded.id).size_bytes == len(content)
    assert client.beta.files.download(uploaded.id).read() == content
    assert client.beta.files.delete(uploaded.id).id == uploaded.id
    assert list(client.beta.files.list()) == []
    with pytest.raises(anthropic.NotFoundError):
        client.beta.files.retrieve_metadata(uploaded.id)


def test_another_workspaces_file_is_404_naming_it_and_not_listed(server: Server) -> None:
    _, owner = workspace_key(server)
    _, other = workspace_key(server)
    uploaded = sdk(server, owner["key"]).beta.files.upload(file=("a.txt", b"hello", "text/plain"))
    stranger = sdk(server, other["key"])
    assert list(stranger.beta.files.list()) == []
    for call in (stranger.beta.files.retrieve_metadata, stranger.beta.files.download, stranger.beta.files.delete):
        with pytest.raises(anthropic.NotFoundError) as caught:
            call(uploaded.id)
        assert uploaded.id in str(caught.value)
    assert sdk(server, owner["key"]).beta.files.download(uploaded.id).read() == b"hello"


def test_an_upload_over_the_limit_is_413_naming_it(server: Server) -> None:
    _, key = workspace_key(server)
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk(server, key["key"]).beta.files.upload(file=("big.bin", b"x" * (8 * 1024 * 1024 + 1), "text/plain"))
    assert caught.value.status_code == 413
    assert "max_file_bytes" in str(caught.value)


def test_over_the_files_rate_limit_is_429_before_the_upstream(server: Server) -> None:
    workspace_id, key = workspace_key(server)
    with server.http() as http:
        (entry,) = http.get("/v1/organizations/rate_limits", params={"group_type": "files"}).json()["data"]
        limits = {"limits": [{"type": "requests_per_minute", "value": 1}]}
        set_ = http.post(f"/v1/organizations/workspaces/{workspace_id}/rate_limits/{entry['id']}", json=limits)
        assert set_.status_code == 200, set_.text
    client = sdk(server, key["key"])
    seen: list[int] = []
    deadline = time.monotonic() + 5  # the new limit reaches the gateway's cache within a second
    while 429 not in seen and time.monotonic() < deadline:
        try:
            client.beta.files.upload(file=("r.txt", b"r", "text/plain"))
            seen.append(200)
        except anthropic.RateLimitError:
            seen.append(429)
    assert 429 in seen

    async def stored(uow: UnitOfWork) -> list[StoredFile]:
        query = select(StoredFile).where(StoredFile.workspace_id == workspace_id)
        return list((await uow.usage.session.scalars(query)).all())

    # refused uploads never reached the upstream: only the admitted ones are files
    assert len(query_db(server.db, stored)) == seen.count(200)


def test_an_unknown_v1_path_is_404_naming_it(server: Server) -> None:
    key = new_key(server)["key"]
    for method, path in (("GET", "/v1/nope"), ("POST", "/v1/files/x/y/z"), ("PUT", "/v1/messages")):
        response = httpx.request(method, f"{server.base_url}{path}", headers={"x-api-key": key}, verify=TLS)
        assert_error(response, 404, "not_found_error", f"no such endpoint: {method} {path}")


def test_a_known_other_path_is_forwarded_after_the_key_check(server: Server) -> None:
    key = new_key(server)["key"]
    bad = httpx.get(f"{server.base_url}/v1/skills", headers={"x-api-key": "sk-ant-nope"}, verify=TLS)
    assert_error(bad, 401, "authentication_error", "invalid x-api-key")
    # forwarded: the simulator has no skills, and says so itself
    response = httpx.get(f"{server.base_url}/v1/skills", headers={"x-api-key": key}, verify=TLS)
    assert response.status_code == 404
    assert "GET /v1/skills" in response.text
    assert response.headers["request-id"].startswith("req_")


def test_the_tenant_restriction_applies_to_files(server: Server) -> None:
    key = new_key(server)["key"]
    headers = {"x-api-key": key, "anthropic-allowed-org-ids": "00000000-0000-0000-0000-000000000000"}
    response = httpx.get(f"{server.base_url}/v1/files", headers=headers, verify=TLS)
    assert response.status_code == 403, response.text


def test_an_unknown_model_refused_by_the_upstream_leaves_no_usage_row(server: Server) -> None:
    key = new_key(server)
    with pytest.raises(anthropic.NotFoundError):
        sdk(server, key["key"]).messages.create(
            model="claude-nonexistent-9", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )

    async def rows(uow: UnitOfWork) -> list[UsageRecord]:
        return list(
            (await uow.usage.session.scalars(select(UsageRecord).where(UsageRecord.api_key_id == key["id"]))).all()
        )

    sdk(server, key["key"]).messages.create(
        model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )  # a counted one after it: once it is written, the refused one would have been too
    deadline = time.monotonic() + 10
    while not (found := query_db(server.db, rows)):
        assert time.monotonic() < deadline, "the usage record of the answered request never came"
        time.sleep(0.1)
    assert [row.model for row in found] == ["claude-sonnet-4-6"]
    assert "no price" not in server.log()
