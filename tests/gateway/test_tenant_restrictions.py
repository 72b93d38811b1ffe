"""Tenant restrictions conformance: ``anthropic-allowed-org-ids`` against a real ``orgwarden serve``.

Spec file 000 and issue 3, section 3: header absent -> no restriction; the key's organization not
listed -> 403 with exactly the spec's body; any syntax error (duplicates in any letter case, bad
``;n=K``, missing or extra slots, more than 500 ids, empty values or elements, non-UUIDs, spaces) ->
400; checked in the order syntax (400) -> authentication (401) -> restriction (403), on every
data-plane endpoint, streaming included; every 400 and 403 leaves an audit event.

Requests go through the official SDK and through raw httpx (which sends repeated headers as given,
so the duplicates a header-appending proxy produces really reach the server).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import anthropic
import httpx
import pytest

from orgwarden.config import load_settings
from orgwarden.storage.engine import create_engine, session_factory
from orgwarden.storage.tables import AuditEvent
from orgwarden.storage.uow import UnitOfWorkFactory
from tests.conftest import TLS, SdkHttpClient, Server, assert_error, unique

HEADER = "anthropic-allowed-org-ids"
MODEL = "claude-sonnet-4-6"
TENANT_MESSAGE = "Access restricted by network policy. Contact IT Administrator."
TENANT_CODE = "tenant_restriction_violation"
MULTIPLE = "Multiple anthropic-allowed-org-ids headers"
MALFORMED = "Malformed anthropic-allowed-org-ids headers"
OTHER_ORG = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
THIRD_ORG = "550e8400-e29b-41d4-a716-446655440000"
MESSAGE_BODY: dict[str, Any] = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "Hello"}]}
ACTION = "tenant_restriction.check"

HeaderList = list[tuple[str, str]]


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_key(server: Server) -> dict[str, Any]:
    """An ordinary API key of the server's organization (default workspace)."""
    with server.http() as http:
        response = http.post("/v1/organizations/api_keys", json={"name": unique("tenant"), "workspace_id": None})
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    assert created["key"].startswith("sk-ant-api03-")
    return created


@pytest.fixture(scope="module")
def org(server: Server) -> str:
    return str(server.organization["id"])


def other_orgs(count: int) -> list[str]:
    """``count`` distinct organization UUIDs that are not the server's."""
    return [str(uuid.UUID(int=index + 1)) for index in range(count)]


def split(ids: list[str], slots: int) -> HeaderList:
    """``ids`` spread over the base header (ending ``;n=slots``) and slots 1..slots-1."""
    size = -(-len(ids) // slots)
    parts = [ids[i * size : (i + 1) * size] for i in range(slots)]
    headers: HeaderList = [(HEADER, ",".join(parts[0]) + f";n={slots}")]
    headers += [(f"{HEADER}{i}", ",".join(parts[i])) for i in range(1, slots)]
    return headers


def send(
    server: Server,
    tenant: Iterable[tuple[str, str]] = (),
    *,
    key: str | None,
    method: str = "POST",
    path: str = "/v1/messages",
    body: dict[str, Any] | None = None,
    bearer: bool = False,
) -> httpx.Response:
    """One raw request with exactly the given tenant headers, repeated names kept as they are."""
    headers: HeaderList = [("anthropic-version", "2023-06-01")]
    if key is not None:
        headers.append(("authorization", f"Bearer {key}") if bearer else ("x-api-key", key))
    headers += list(tenant)
    if method == "POST" and body is None:
        body = MESSAGE_BODY
    response = httpx.request(method, server.base_url + path, headers=headers, json=body, timeout=30, verify=TLS)
    sent = [(name.decode(), value.decode()) for name, value in response.request.headers.raw]
    for pair in tenant:  # httpx kept every copy, in the given letter case
        assert sent.count(pair) == list(tenant).count(pair)
    return response


def read_audit(server: Server, request_ids: set[str], timeout: float = 5.0) -> dict[str, AuditEvent]:
    """Tenant-restriction audit events with these request ids, polled for (they are written in batches)."""
    settings = load_settings(**server.db.settings_kwargs)

    async def run() -> dict[str, AuditEvent]:
        engine = create_engine(settings)
        try:
            uow_factory = UnitOfWorkFactory(session_factory(engine))
            deadline = time.monotonic() + timeout
            while True:
                async with uow_factory() as uow:
                    events = await uow.audit.all(server.organization["id"])
                found = {e.request_id: e for e in events if e.action == ACTION and e.request_id in request_ids}
                if set(found) == request_ids or time.monotonic() > deadline:
                    return {rid: e for rid, e in found.items() if rid is not None}
                await asyncio.sleep(0.05)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def assert_audited(
    server: Server,
    response: httpx.Response,
    *,
    outcome: str,
    auth_kind: str = "api_key",
    allowed: list[str] | None = None,
    key_id: str | None = None,
    method: str = "POST",
    path: str = "/v1/messages",
) -> AuditEvent:
    request_id = response.headers["request-id"]
    events = read_audit(server, {request_id})
    assert request_id in events, f"no {ACTION} audit event for {request_id} within 5 s"
    event = events[request_id]
    assert event.outcome == outcome
    assert event.source_ip == "127.0.0.1"
    assert event.organization_id == server.organization["id"]
    assert event.occurred_at is not None
    assert event.details["method"] == method
    assert event.details["path"] == path
    assert event.details["auth_kind"] == auth_kind
    assert event.details["allowed_org_ids"] == allowed
    if key_id is not None:
        assert event.actor_type == "api_key"
        assert event.actor_id == key_id
    return event


def assert_tenant_violation(response: httpx.Response) -> None:
    """Exactly the spec's body, plus ``error.details.error_code`` and the request id."""
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("application/json")
    request_id = response.headers["request-id"]
    assert request_id.startswith("req_")
    assert response.json() == {
        "type": "error",
        "error": {
            "type": "permission_error",
            "message": TENANT_MESSAGE,
            "error_code": TENANT_CODE,
            "details": {"error_code": TENANT_CODE},
        },
        "request_id": request_id,
    }


# -- header absent or own organization listed: the request passes --------------------------------


def test_a_request_without_the_header_is_not_restricted(server: Server, api_key: dict[str, Any]) -> None:
    response = send(server, key=api_key["key"])
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"


@pytest.mark.parametrize(
    "tenant",
    [
        pytest.param(lambda org: [(HEADER, org)], id="alone"),
        pytest.param(lambda org: [(HEADER, org.upper())], id="alone-in-upper-case"),
        pytest.param(lambda org: [("Anthropic-Allowed-Org-Ids", org)], id="header-name-in-mixed-case"),
        pytest.param(lambda org: [(HEADER, f"{OTHER_ORG},{org},{THIRD_ORG}")], id="among-others"),
        pytest.param(lambda org: [(HEADER, f"{org};n=1")], id="n=1"),
        pytest.param(lambda org: [(HEADER, f"{OTHER_ORG};n=2"), (f"{HEADER}1", org)], id="n=2"),
        pytest.param(lambda org: split([*other_orgs(9), org], 10), id="n=10"),
        pytest.param(lambda org: split([*other_orgs(499), org], 10), id="500-ids-over-10-slots"),
        pytest.param(lambda org: [(HEADER, ",".join([*other_orgs(499), org]))], id="500-ids-in-one-header"),
        pytest.param(
            lambda org: [(HEADER, org), ("anthropic-allowed-org-ids-extra", "garbage, really")],
            id="with-an-unrelated-header-sharing-the-prefix",
        ),
        pytest.param(lambda org: [("anthropic-allowed-org-ids-extra", OTHER_ORG)], id="only-an-unrelated-header"),
    ],
)
def test_a_request_listing_its_own_organization_passes(
    server: Server, api_key: dict[str, Any], org: str, tenant: Callable[[str], HeaderList]
) -> None:
    response = send(server, tenant(org), key=api_key["key"])
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"
    assert response.headers["anthropic-organization-id"] == org


def test_the_sdk_passes_on_every_endpoint_when_its_organization_is_listed(
    server: Server, api_key: dict[str, Any], org: str
) -> None:
    client = server.client(api_key["key"], default_headers={HEADER: f"{OTHER_ORG},{org}"})
    message = client.messages.create(**MESSAGE_BODY)
    assert message.id.startswith("msg_")
    with client.messages.stream(**MESSAGE_BODY) as stream:
        final = stream.get_final_message()
    assert final.id.startswith("msg_")
    assert final.usage.output_tokens > 0
    count = client.messages.count_tokens(model=MODEL, messages=MESSAGE_BODY["messages"])
    assert count.input_tokens > 0
    models = client.models.list()
    assert any(model.id == MODEL for model in models.data)
    assert client.models.retrieve(MODEL).id == MODEL


def test_the_sdk_passes_with_the_list_split_over_numbered_slots_as_extra_headers(
    server: Server, api_key: dict[str, Any], org: str
) -> None:
    client = server.client(api_key["key"])
    extra = dict(split([*other_orgs(20), org], 3))
    assert len(extra) == 3
    message = client.messages.create(**MESSAGE_BODY, extra_headers=extra)
    assert message.type == "message"
    with client.messages.stream(**MESSAGE_BODY, extra_headers=extra) as stream:
        assert "".join(stream.text_stream)
    assert client.messages.count_tokens(model=MODEL, messages=MESSAGE_BODY["messages"], extra_headers=extra)
    assert client.models.list(extra_headers=extra).data


def test_allowed_requests_write_no_tenant_audit_event(server: Server, api_key: dict[str, Any], org: str) -> None:
    passed = [
        send(server, key=api_key["key"]),
        send(server, [(HEADER, org)], key=api_key["key"]),
        send(server, [(HEADER, org)], key=api_key["key"], method="GET", path="/v1/models"),
    ]
    assert [r.status_code for r in passed] == [200, 200, 200]
    # The recorder writes in queue order: once this later refusal is written, earlier events would be.
    marker = send(server, [(HEADER, OTHER_ORG)], key=api_key["key"])
    assert_audited(server, marker, outcome="denied", allowed=[OTHER_ORG], key_id=api_key["id"])
    events = read_audit(server, {r.headers["request-id"] for r in passed}, timeout=0)
    assert events == {}


# -- another organization only: 403 with the spec's body ---------------------------------------


def test_a_request_listing_only_another_organization_gets_the_spec_403(server: Server, api_key: dict[str, Any]) -> None:
    response = send(server, [(HEADER, OTHER_ORG)], key=api_key["key"])
    assert_tenant_violation(response)
    assert response.headers["x-should-retry"] == "false"
    assert_audited(server, response, outcome="denied", allowed=[OTHER_ORG], key_id=api_key["id"])


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("POST", "/v1/messages", MESSAGE_BODY, id="messages"),
        pytest.param("POST", "/v1/messages", {**MESSAGE_BODY, "stream": True}, id="messages-streaming"),
        pytest.param(
            "POST", "/v1/messages/count_tokens", {"model": MODEL, "messages": MESSAGE_BODY["messages"]}, id="count"
        ),
        pytest.param("GET", "/v1/models", None, id="models"),
        pytest.param("GET", f"/v1/models/{MODEL}", None, id="model"),
    ],
)
def test_every_data_plane_endpoint_is_restricted(
    server: Server, api_key: dict[str, Any], method: str, path: str, body: dict[str, Any] | None
) -> None:
    tenant = [(HEADER, f"{OTHER_ORG},{THIRD_ORG}")]
    response = send(server, tenant, key=api_key["key"], method=method, path=path, body=body)
    assert_tenant_violation(response)
    assert_audited(
        server,
        response,
        outcome="denied",
        allowed=sorted([OTHER_ORG, THIRD_ORG]),
        key_id=api_key["id"],
        method=method,
        path=path,
    )


def test_the_restriction_applies_to_bearer_authentication_too(server: Server, api_key: dict[str, Any]) -> None:
    response = send(server, [(HEADER, OTHER_ORG)], key=api_key["key"], bearer=True)
    assert_tenant_violation(response)
    assert_audited(server, response, outcome="denied", allowed=[OTHER_ORG], key_id=api_key["id"])
    client = anthropic.Anthropic(
        api_key=None,
        auth_token=api_key["key"],
        base_url=server.base_url,
        max_retries=0,
        default_headers={HEADER: OTHER_ORG},
        http_client=SdkHttpClient(),
    )
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        client.messages.create(**MESSAGE_BODY)
    assert caught.value.error_code == TENANT_CODE


def test_a_split_list_of_five_hundred_other_organizations_is_refused(server: Server, api_key: dict[str, Any]) -> None:
    ids = other_orgs(500)
    response = send(server, split(ids, 10), key=api_key["key"])
    assert_tenant_violation(response)
    # 500 ids do not fit the 8 KiB an audit event's details may take: the list is halved until they do
    event = assert_audited(server, response, outcome="denied", allowed=sorted(ids)[:125], key_id=api_key["id"])
    assert event.details["truncated"] is True


def test_the_sdk_raises_permission_denied_with_the_tenant_error_code(server: Server, api_key: dict[str, Any]) -> None:
    client = server.client(api_key["key"], default_headers={HEADER: OTHER_ORG})
    calls: list[Callable[[], object]] = [
        lambda: client.messages.create(**MESSAGE_BODY),
        lambda: client.messages.count_tokens(model=MODEL, messages=MESSAGE_BODY["messages"]),
        lambda: client.models.list(),
        lambda: client.models.retrieve(MODEL),
    ]
    for call in calls:
        with pytest.raises(anthropic.PermissionDeniedError) as caught:
            call()
        error = caught.value
        assert error.status_code == 403
        assert error.error_code == TENANT_CODE
        assert error.type == "permission_error"
        assert error.api_message == TENANT_MESSAGE
        assert error.request_id is not None
        assert error.request_id.startswith("req_")
        assert isinstance(error.body, dict)
        assert error.body["request_id"] == error.request_id
        assert error.body["error"] == {
            "type": "permission_error",
            "message": TENANT_MESSAGE,
            "error_code": TENANT_CODE,
            "details": {"error_code": TENANT_CODE},
        }


def test_the_sdk_stream_raises_permission_denied_before_any_event(server: Server, api_key: dict[str, Any]) -> None:
    client = server.client(api_key["key"])
    events: list[object] = []
    manager = client.messages.stream(**MESSAGE_BODY, extra_headers={HEADER: OTHER_ORG})
    with pytest.raises(anthropic.PermissionDeniedError) as caught, manager as stream:
        events.extend(stream)
    assert events == [], "an SSE event arrived despite the restriction"
    assert caught.value.error_code == TENANT_CODE
    with pytest.raises(anthropic.PermissionDeniedError) as created:
        client.messages.create(**MESSAGE_BODY, stream=True, extra_headers={HEADER: OTHER_ORG})
    assert created.value.error_code == TENANT_CODE


def test_a_streaming_request_gets_the_403_as_json_before_any_sse_byte(server: Server, api_key: dict[str, Any]) -> None:
    headers = [("anthropic-version", "2023-06-01"), ("x-api-key", api_key["key"]), (HEADER, OTHER_ORG)]
    body = {**MESSAGE_BODY, "stream": True}
    with httpx.stream(
        "POST", f"{server.base_url}/v1/messages", headers=headers, json=body, timeout=30, verify=TLS
    ) as response:
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/json"
        raw = response.read()
    assert b"event:" not in raw
    assert_tenant_violation(response)
    assert_audited(server, response, outcome="denied", allowed=[OTHER_ORG], key_id=api_key["id"])


# -- syntax errors: 400 -------------------------------------------------------------------------


SYNTAX_ERRORS = [
    pytest.param(lambda org: [(HEADER, org), ("Anthropic-Allowed-Org-Ids", org)], MULTIPLE, id="dup-letter-case"),
    pytest.param(lambda org: [(HEADER, org), (HEADER, OTHER_ORG)], MULTIPLE, id="dup-same-case"),
    pytest.param(lambda org: [(HEADER, org), ("ANTHROPIC-ALLOWED-ORG-IDS", org)], MULTIPLE, id="dup-upper-case"),
    pytest.param(
        lambda org: [(HEADER, f"{org};n=2"), (f"{HEADER}1", OTHER_ORG), ("Anthropic-Allowed-Org-Ids1", OTHER_ORG)],
        MULTIPLE,
        id="dup-numbered-slot",
    ),
    pytest.param(lambda org: [(HEADER, f"{org};n=0")], MALFORMED, id="n=0"),
    pytest.param(
        lambda org: [(HEADER, f"{org};n=11"), *[(f"{HEADER}{i}", OTHER_ORG) for i in range(1, 11)]],
        MALFORMED,
        id="n=11",
    ),
    pytest.param(lambda org: [(HEADER, f"{org};n=two"), (f"{HEADER}1", OTHER_ORG)], MALFORMED, id="n-not-a-number"),
    pytest.param(lambda org: [(HEADER, f"{org};n=")], MALFORMED, id="n-empty"),
    pytest.param(lambda org: [(HEADER, f"{org};count=2"), (f"{HEADER}1", OTHER_ORG)], MALFORMED, id="not-n"),
    pytest.param(lambda org: [(HEADER, f"{org};n=2")], MALFORMED, id="missing-slot-1-of-2"),
    pytest.param(lambda org: [(HEADER, f"{org};n=3"), (f"{HEADER}2", OTHER_ORG)], MALFORMED, id="missing-slot-1-of-3"),
    pytest.param(lambda org: split([*other_orgs(9), org], 10)[:-1], MALFORMED, id="missing-slot-9-of-10"),
    pytest.param(
        lambda org: [(HEADER, f"{org};n=2"), (f"{HEADER}1", OTHER_ORG), (f"{HEADER}2", THIRD_ORG)],
        MALFORMED,
        id="extra-slot",
    ),
    pytest.param(
        lambda org: [*split([*other_orgs(9), org], 10), (f"{HEADER}10", THIRD_ORG)], MALFORMED, id="extra-slot-10"
    ),
    pytest.param(lambda org: [(HEADER, org), (f"{HEADER}1", OTHER_ORG)], MALFORMED, id="slot-without-n"),
    pytest.param(lambda org: [(f"{HEADER}1", org)], MALFORMED, id="slot-without-base"),
    pytest.param(lambda org: split([*other_orgs(500), org], 10), MALFORMED, id="501-ids-over-10-slots"),
    pytest.param(lambda org: [(HEADER, ",".join([*other_orgs(500), org]))], MALFORMED, id="501-ids-in-one-header"),
    pytest.param(lambda org: [(HEADER, "")], MALFORMED, id="empty-value"),
    pytest.param(lambda org: [(HEADER, f"{org};n=2"), (f"{HEADER}1", "")], MALFORMED, id="empty-slot"),
    pytest.param(lambda org: [(HEADER, f"{org},,{OTHER_ORG}")], MALFORMED, id="empty-element"),
    pytest.param(lambda org: [(HEADER, f"{org},")], MALFORMED, id="trailing-comma"),
    pytest.param(lambda org: [(HEADER, f",{org}")], MALFORMED, id="leading-comma"),
    pytest.param(lambda org: [(HEADER, f"{org},acme-corp")], MALFORMED, id="non-uuid"),
    pytest.param(lambda org: [(HEADER, org.replace("-", ""))], MALFORMED, id="uuid-without-hyphens"),
    pytest.param(lambda org: [(HEADER, f"{org}, {OTHER_ORG}")], MALFORMED, id="space-after-comma"),
    pytest.param(lambda org: [(HEADER, f"{org} ,{OTHER_ORG}")], MALFORMED, id="space-before-comma"),
    pytest.param(lambda org: [(HEADER, f"{org},\t{OTHER_ORG}")], MALFORMED, id="tab-inside"),
    pytest.param(
        lambda org: [(HEADER, f"{org};n=2"), (f"{HEADER}1", f"{OTHER_ORG}, {THIRD_ORG}")],
        MALFORMED,
        id="space-in-slot",
    ),
]


@pytest.mark.parametrize(("tenant", "prefix"), SYNTAX_ERRORS)
def test_a_syntax_error_in_the_headers_is_a_400_naming_the_kind(
    server: Server, api_key: dict[str, Any], org: str, tenant: Callable[[str], HeaderList], prefix: str
) -> None:
    response = send(server, tenant(org), key=api_key["key"])
    body = assert_error(response, 400, "invalid_request_error", prefix)
    assert body["error"]["message"].startswith(prefix), body
    event = assert_audited(server, response, outcome="invalid_request", allowed=None)
    assert event.details["error"] == body["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("POST", "/v1/messages", {**MESSAGE_BODY, "stream": True}, id="messages-streaming"),
        pytest.param(
            "POST", "/v1/messages/count_tokens", {"model": MODEL, "messages": MESSAGE_BODY["messages"]}, id="count"
        ),
        pytest.param("GET", "/v1/models", None, id="models"),
        pytest.param("GET", f"/v1/models/{MODEL}", None, id="model"),
    ],
)
def test_syntax_errors_are_refused_on_every_data_plane_endpoint(
    server: Server, api_key: dict[str, Any], org: str, method: str, path: str, body: dict[str, Any] | None
) -> None:
    tenant = [(HEADER, org), ("Anthropic-Allowed-Org-Ids", org)]
    response = send(server, tenant, key=api_key["key"], method=method, path=path, body=body)
    assert_error(response, 400, "invalid_request_error", MULTIPLE)
    assert response.headers["content-type"] == "application/json"
    assert_audited(server, response, outcome="invalid_request", method=method, path=path)


def test_the_sdk_raises_bad_request_for_duplicate_headers(server: Server, api_key: dict[str, Any], org: str) -> None:
    client = server.client(api_key["key"])
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(**MESSAGE_BODY, extra_headers={HEADER: f"{org},"})
    assert (caught.value.api_message or "").startswith(MALFORMED)
    manager = client.messages.stream(**MESSAGE_BODY, extra_headers={HEADER: f"{org};n=11"})
    with pytest.raises(anthropic.BadRequestError) as streamed, manager as stream:
        stream.get_final_message()
    assert (streamed.value.api_message or "").startswith(MALFORMED)


# -- the order: syntax (400) -> authentication (401) -> restriction (403) ------------------------


def test_a_malformed_header_without_a_key_is_a_400_not_a_401(server: Server, org: str) -> None:
    response = send(server, [(HEADER, f"{org}, {OTHER_ORG}")], key=None)
    assert_error(response, 400, "invalid_request_error", MALFORMED)
    assert_audited(server, response, outcome="invalid_request", auth_kind="none")


def test_duplicate_headers_with_an_invalid_key_are_a_400_not_a_401(server: Server, org: str) -> None:
    tenant = [(HEADER, org), ("Anthropic-Allowed-Org-Ids", org)]
    response = send(server, tenant, key="sk-ant-api03-not-a-real-key")
    assert_error(response, 400, "invalid_request_error", MULTIPLE)
    event = assert_audited(server, response, outcome="invalid_request", auth_kind="api_key")
    assert event.actor_type == "anonymous"


def test_a_malformed_header_with_an_admin_key_is_a_400_not_a_403(server: Server, org: str) -> None:
    response = send(server, [(HEADER, f"{org};n=0")], key=server.admin_key)
    assert_error(response, 400, "invalid_request_error", MALFORMED)


def test_a_valid_header_listing_another_organization_with_an_invalid_key_is_a_401_not_a_403(server: Server) -> None:
    response = send(server, [(HEADER, OTHER_ORG)], key="sk-ant-api03-not-a-real-key")
    assert_error(response, 401, "authentication_error", "")
    response = send(server, [(HEADER, OTHER_ORG)], key=None)
    assert_error(response, 401, "authentication_error", "")
    response = send(server, [(HEADER, OTHER_ORG)], key="sk-ant-api03-not-a-real-key", bearer=True)
    assert_error(response, 401, "authentication_error", "")


def test_a_valid_header_listing_another_organization_with_a_valid_key_is_a_403(
    server: Server, api_key: dict[str, Any]
) -> None:
    response = send(server, [(HEADER, f"{OTHER_ORG};n=2"), (f"{HEADER}1", THIRD_ORG)], key=api_key["key"])
    assert_tenant_violation(response)
    assert_audited(server, response, outcome="denied", allowed=sorted([OTHER_ORG, THIRD_ORG]), key_id=api_key["id"])
