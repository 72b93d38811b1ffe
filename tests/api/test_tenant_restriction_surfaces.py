"""The tenant restriction on every authenticated surface, not only the data plane (issue 15, point 6).

Anthropic refuses *any* access from an organization its ``anthropic-allowed-org-ids`` headers do not
list. Against a real ``orgwarden serve``: the Admin API (the official SDK's admin client with the
header in ``default_headers``), ``POST /v1/invites/accept`` and the telemetry receiver (the real
OTLP/HTTP exporter, and httpx) each let a listed organization through, refuse another with the
data plane's exact 403 body, refuse a malformed header with 400 (before authentication), and leave
the same ``tenant_restriction.check`` audit events.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult, MetricsData
from opentelemetry.sdk.resources import Resource

from orgwarden.storage.tables import AuditEvent
from tests.conftest import TLS, Server, assert_error, unique
from tests.gateway.test_tenant_restrictions import (
    HEADER,
    MALFORMED,
    OTHER_ORG,
    TENANT_CODE,
    assert_tenant_violation,
    read_audit,
)

WORKSPACES = "/v1/organizations/workspaces"


@pytest.fixture(scope="module")
def org(server: Server) -> str:
    return str(server.organization["id"])


@pytest.fixture(scope="module")
def api_key(server: Server) -> str:
    with server.http() as http:
        response = http.post("/v1/organizations/api_keys", json={"name": unique("surfaces"), "workspace_id": None})
    assert response.status_code == 200, response.text
    return str(response.json()["key"])


def audited(server: Server, request_id: str, outcome: str, method: str, path: str, auth_kind: str) -> AuditEvent:
    events = read_audit(server, {request_id})
    assert request_id in events, f"no tenant_restriction.check audit event for {request_id}"
    event = events[request_id]
    assert event.outcome == outcome
    assert event.organization_id == server.organization["id"]
    assert event.source_ip == "127.0.0.1"
    assert event.details["method"] == method
    assert event.details["path"] == path
    assert event.details["auth_kind"] == auth_kind
    return event


# -- the Admin API ------------------------------------------------------------------------------


def test_the_admin_sdk_passes_when_its_organization_is_listed_and_gets_the_spec_403_when_not(
    server: Server, org: str
) -> None:
    listed = server.client(default_headers={HEADER: f"{OTHER_ORG},{org}"})
    assert listed.organization.workspaces.list().data is not None

    other = server.client(default_headers={HEADER: OTHER_ORG})
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        other.organization.workspaces.list()
    response = caught.value.response
    assert_tenant_violation(response)
    event = audited(server, response.headers["request-id"], "denied", "GET", WORKSPACES, "admin_api_key")
    assert event.details["allowed_org_ids"] == [OTHER_ORG]
    assert event.actor_type == "admin_api_key"
    assert event.actor_user_id == server.user["id"]


def test_a_write_through_the_admin_api_is_refused_before_it_happens(server: Server) -> None:
    name = unique("tenant-blocked")
    other = server.client(default_headers={HEADER: OTHER_ORG})
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        other.organization.workspaces.create(name=name)
    assert caught.value.body["error"]["details"]["error_code"] == TENANT_CODE  # type: ignore[index]
    names = [workspace.name for workspace in server.client().organization.workspaces.list(limit=1000).data]
    assert name not in names


def test_a_malformed_header_on_the_admin_api_is_a_400_audited_even_without_a_key(server: Server) -> None:
    client = server.client(default_headers={HEADER: "not-a-uuid"})
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.organization.workspaces.list()
    response = caught.value.response
    assert_error(response, 400, "invalid_request_error", MALFORMED)
    event = audited(server, response.headers["request-id"], "invalid_request", "GET", WORKSPACES, "admin_api_key")
    assert event.actor_type == "admin_api_key"

    # Checked in the order syntax (400) -> key (401) -> organization (403), as on the data plane.
    bad_key = httpx.get(
        server.base_url + WORKSPACES, headers={HEADER: OTHER_ORG, "x-api-key": "sk-ant-admin01-no"}, verify=TLS
    )
    assert_error(bad_key, 401, "authentication_error", "invalid x-api-key")

    keyless = httpx.get(server.base_url + WORKSPACES, headers={HEADER: f"{OTHER_ORG},,{OTHER_ORG}"}, verify=TLS)
    assert_error(keyless, 400, "invalid_request_error", MALFORMED)
    event = audited(server, keyless.headers["request-id"], "invalid_request", "GET", WORKSPACES, "none")
    assert event.actor_type == "anonymous"


def test_accepting_an_invite_is_an_access_to_the_organization_and_is_restricted(server: Server, org: str) -> None:
    created = server.client().organization.invites.with_raw_response.create(
        email=f"{unique('invitee')}@acme.test",
        role="developer",  # type: ignore[arg-type]
    )
    token = created.http_response.json()["accept_url"].split("#token=", 1)[1]
    body = {"token": token, "name": "Invitee"}

    refused = httpx.post(server.base_url + "/v1/invites/accept", json=body, headers={HEADER: OTHER_ORG}, verify=TLS)
    assert_tenant_violation(refused)
    event = audited(server, refused.headers["request-id"], "denied", "POST", "/v1/invites/accept", "invite_token")
    assert event.actor_type == "anonymous"

    malformed = httpx.post(server.base_url + "/v1/invites/accept", json=body, headers={HEADER: "x"}, verify=TLS)
    assert_error(malformed, 400, "invalid_request_error", MALFORMED)

    accepted = httpx.post(server.base_url + "/v1/invites/accept", json=body, headers={HEADER: org}, verify=TLS)
    assert accepted.status_code == 200, accepted.text  # the refused attempts did not use the token up


# -- the telemetry receiver ---------------------------------------------------------------------


def metrics_data() -> MetricsData:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": "claude-code"}))
    provider.get_meter("com.anthropic.claude_code").create_counter("claude_code.session.count").add(1)
    data = reader.get_metrics_data()
    assert data is not None
    return data


def exporter(server: Server, key: str, tenant: str) -> OTLPMetricExporter:
    return OTLPMetricExporter(endpoint=server.base_url + "/v1/metrics", headers={"x-api-key": key, HEADER: tenant})


def test_the_otlp_exporter_passes_when_listed_and_is_refused_when_not(server: Server, api_key: str, org: str) -> None:
    data = metrics_data()
    assert exporter(server, api_key, org).export(data) == MetricExportResult.SUCCESS
    assert exporter(server, api_key, OTHER_ORG).export(data) == MetricExportResult.FAILURE

    body: dict[str, Any] = {"resourceMetrics": []}
    for path in ("/v1/metrics", "/v1/logs"):
        response = httpx.post(
            server.base_url + path, json=body, headers={"x-api-key": api_key, HEADER: OTHER_ORG}, verify=TLS
        )
        assert_tenant_violation(response)
        event = audited(server, response.headers["request-id"], "denied", "POST", path, "api_key")
        assert event.actor_type == "api_key"
        assert event.details["allowed_org_ids"] == [OTHER_ORG]


def test_a_malformed_header_on_the_telemetry_receiver_is_a_400_before_the_key(server: Server) -> None:
    headers = {"x-api-key": "sk-ant-api03-invalid", HEADER: "nope", "content-type": "application/json"}
    response = httpx.post(server.base_url + "/v1/metrics", content=b"{}", headers=headers, verify=TLS)
    assert_error(response, 400, "invalid_request_error", MALFORMED)
    audited(server, response.headers["request-id"], "invalid_request", "POST", "/v1/metrics", "api_key")


# -- sign-in ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/auth/login"),
        ("GET", "/device"),
        ("GET", "/.well-known/oauth-authorization-server"),
        ("POST", "/oauth/device_authorization"),
        ("POST", "/oauth/token"),
    ],
)
def test_signing_in_is_an_access_to_the_organization_and_is_restricted(server: Server, method: str, path: str) -> None:
    refused = httpx.request(method, server.base_url + path, headers={HEADER: OTHER_ORG}, verify=TLS)
    assert_tenant_violation(refused)
    event = audited(server, refused.headers["request-id"], "denied", method, path, "sign_in")
    assert event.actor_type == "anonymous"
    malformed = httpx.request(method, server.base_url + path, headers={HEADER: "x"}, verify=TLS)
    assert_error(malformed, 400, "invalid_request_error", MALFORMED)


def test_signing_out_and_revoking_are_never_restricted(server: Server) -> None:
    revoked = httpx.post(
        server.base_url + "/oauth/revoke", data={"token": "ow-at01-unknown"}, headers={HEADER: OTHER_ORG}, verify=TLS
    )
    assert revoked.status_code != 403, revoked.text
