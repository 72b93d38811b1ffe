"""MCP tunnels and tunnel certificates against a real ``orgwarden serve`` (SQLite and PostgreSQL).

The SDK's ``client.beta.tunnels`` (``/v1/tunnels``) must work and parse; the spec's family
(``/v1/organizations/tunnels``) is driven with raw HTTP. Certificates are real ones made in the test.
What a token means is shown through ``POST /v1/organizations/tunnels/check_token``: the current token
of a live tunnel passes, a rotated or archived one does not. Tests share one organization per backend:
each works on tunnels (and, where it counts rows, a workspace) of its own.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types.beta import BetaTunnel, BetaTunnelToken
from anthropic.types.beta.tunnels import BetaTunnelCertificate
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from orgwarden.domain.clock import rfc3339
from orgwarden.storage.tables import AuditEvent, Tunnel
from tests.conftest import Server, assert_error, query_db, unique
from tests.tunnels import certs

SPEC = "/v1/organizations/tunnels"
SPEC_BETA = {"anthropic-beta": "mcp-tunnels-2026-05-19"}
SDK_BETA = {"anthropic-beta": "mcp-tunnels-2026-06-22"}


# --------------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    """Raw HTTP on the spec's family (its beta sent by default)."""
    with server.http() as client:
        client.headers.update(SPEC_BETA)
        yield client


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def new_workspace(client: anthropic.Anthropic) -> str:
    return client.organization.workspaces.create(name=unique("ws")).id


def spec_tunnel(http: httpx.Client, **body: Any) -> dict[str, Any]:
    return ok(http.post(SPEC, json={"display_name": unique("tnl"), **body}))


def token_valid(http: httpx.Client, token: str) -> bool:
    result = ok(http.post(f"{SPEC}/check_token", json={"tunnel_token": token}))
    assert result["type"] == "tunnel_token_check"
    return bool(result["valid"])


def add_certificate(http: httpx.Client, tunnel_id: str, pem: str) -> httpx.Response:
    return http.post(f"{SPEC}/{tunnel_id}/certificates", json={"ca_certificate_pem": pem})


def audit_events(server: Server, target_ids: set[str]) -> list[dict[str, Any]]:
    """The audit events about these targets, oldest first, read from the audit table."""

    async def query(uow: Any) -> list[dict[str, Any]]:
        stmt = select(AuditEvent).where(AuditEvent.target_id.in_(target_ids)).order_by(AuditEvent.id)
        rows = (await uow.tunnels.session.scalars(stmt)).all()
        return [
            {"action": r.action, "target_id": r.target_id, "workspace_id": r.workspace_id, "details": r.details,
             "actor_type": r.actor_type, "outcome": r.outcome}
            for r in rows
        ]  # fmt: skip

    result: list[dict[str, Any]] = query_db(server.db, query)
    return result


# --------------------------------------------------------------------------------------------------
# the SDK's family


def test_the_sdk_creates_retrieves_lists_and_archives_tunnels(server: Server, client: anthropic.Anthropic) -> None:
    workspace_id = new_workspace(client)
    tunnels = client.beta.tunnels
    first = tunnels.create(display_name="Production", workspace_id=workspace_id)
    second = tunnels.create(workspace_id=workspace_id)
    assert isinstance(first, BetaTunnel)
    assert first.id.startswith("tnl_")
    assert len(first.id) == 28
    assert first.display_name == "Production"
    assert second.display_name is None
    assert first.archived_at is None
    assert first.type == "tunnel"
    assert first.domain.endswith(".tunnels.orgwarden.local")
    assert first.domain != second.domain

    got = tunnels.retrieve(first.id, workspace_id=workspace_id)
    assert got == first
    listed = list(tunnels.list(workspace_id=workspace_id, limit=1))  # pages through next_page
    assert [t.id for t in listed] == [second.id, first.id]  # newest first

    archived = tunnels.archive(first.id, workspace_id=workspace_id)
    assert archived.archived_at is not None
    assert archived.domain == first.domain
    assert [t.id for t in tunnels.list(workspace_id=workspace_id)] == [second.id]
    assert [t.id for t in tunnels.list(workspace_id=workspace_id, include_archived=True)] == [second.id, first.id]


def test_the_sdk_reveals_and_rotates_the_token(server: Server, client: anthropic.Anthropic, http: httpx.Client) -> None:
    tunnel = client.beta.tunnels.create(display_name=unique("tnl"))
    revealed = client.beta.tunnels.reveal_token(tunnel.id)
    assert isinstance(revealed, BetaTunnelToken)
    assert revealed.type == "tunnel_token"
    assert revealed.id.startswith("ttkn_")
    assert len(revealed.id) == 5 + 64
    assert int(revealed.id[5:], 16) >= 0
    assert revealed.id == revealed.id.lower()
    assert client.beta.tunnels.reveal_token(tunnel.id) == revealed  # the same until rotated

    rotated = client.beta.tunnels.rotate_token(tunnel.id, reason="connector host rebuilt")
    assert rotated.id != revealed.id
    assert rotated.tunnel_token != revealed.tunnel_token
    assert client.beta.tunnels.reveal_token(tunnel.id) == rotated
    assert not token_valid(http, revealed.tunnel_token)  # the old token opens nothing any more
    assert token_valid(http, rotated.tunnel_token)

    tokens = {revealed.tunnel_token, rotated.tunnel_token}
    for shown in (client.beta.tunnels.retrieve(tunnel.id), *client.beta.tunnels.list()):
        assert not tokens & set(json.dumps(shown.model_dump(mode="json")).split('"'))


def test_the_sdk_certificates_are_created_retrieved_listed_and_archived(client: anthropic.Anthropic) -> None:
    tunnel = client.beta.tunnels.create(display_name=unique("tnl"))
    ca = certs.make()
    created = client.beta.tunnels.certificates.create(tunnel.id, ca_certificate_pem=ca.pem)
    assert isinstance(created, BetaTunnelCertificate)
    assert created.id.startswith("tcrt_")
    assert created.tunnel_id == tunnel.id
    assert created.fingerprint == certs.fingerprint(ca)
    assert created.expires_at == ca.certificate.not_valid_after_utc
    assert created.archived_at is None
    assert created.type == "tunnel_certificate"

    assert client.beta.tunnels.certificates.retrieve(created.id, tunnel_id=tunnel.id) == created
    second = client.beta.tunnels.certificates.create(tunnel.id, ca_certificate_pem=certs.make().pem)
    listed = list(client.beta.tunnels.certificates.list(tunnel.id, limit=1))
    assert [c.id for c in listed] == [second.id, created.id]

    archived = client.beta.tunnels.certificates.archive(created.id, tunnel_id=tunnel.id)
    assert archived.archived_at is not None
    assert client.beta.tunnels.certificates.archive(created.id, tunnel_id=tunnel.id) == archived  # idempotent
    assert [c.id for c in client.beta.tunnels.certificates.list(tunnel.id)] == [second.id]
    everything = client.beta.tunnels.certificates.list(tunnel.id, include_archived=True)
    assert [c.id for c in everything] == [second.id, created.id]


def test_the_sdk_family_sees_only_the_workspace_of_its_header(client: anthropic.Anthropic, server: Server) -> None:
    workspace_id = new_workspace(client)
    tunnel = client.beta.tunnels.create(display_name=unique("tnl"), workspace_id=workspace_id)
    in_default = client.beta.tunnels.create(display_name=unique("tnl"))  # no header: the default workspace
    assert tunnel.id not in [t.id for t in client.beta.tunnels.list()]
    assert in_default.id in [t.id for t in client.beta.tunnels.list()]
    with pytest.raises(anthropic.NotFoundError, match=f"in workspace {workspace_id}"):
        client.beta.tunnels.retrieve(in_default.id, workspace_id=workspace_id)
    with pytest.raises(anthropic.NotFoundError):
        client.beta.tunnels.reveal_token(tunnel.id)
    with pytest.raises(anthropic.NotFoundError, match="anthropic-workspace-id"):
        client.beta.tunnels.list(workspace_id="wrkspc_010000000000000000000000")
    with pytest.raises(anthropic.BadRequestError, match="anthropic-workspace-id: 'nope' is not a workspace id"):
        client.beta.tunnels.create(workspace_id="nope")

    client.organization.workspaces.archive(workspace_id)
    still = client.beta.tunnels.retrieve(tunnel.id, workspace_id=workspace_id)  # still readable, archived with it
    assert (still.id, still.archived_at is not None) == (tunnel.id, True)
    with pytest.raises(anthropic.BadRequestError, match=f"workspace {workspace_id} is archived"):
        client.beta.tunnels.create(workspace_id=workspace_id)
    with pytest.raises(anthropic.BadRequestError, match=f"tunnel {tunnel.id} is archived"):
        client.beta.tunnels.rotate_token(tunnel.id, workspace_id=workspace_id)


# --------------------------------------------------------------------------------------------------
# the spec's family, raw HTTP


def test_the_spec_family_over_raw_http(http: httpx.Client, client: anthropic.Anthropic) -> None:
    workspace_id = new_workspace(client)
    in_workspace = spec_tunnel(http, display_name="Staging", workspace_id=workspace_id)
    in_default = spec_tunnel(http)
    assert set(in_workspace) == {"id", "archived_at", "created_at", "display_name", "domain", "type", "workspace_id"}
    assert in_workspace["workspace_id"] == workspace_id
    assert in_workspace["display_name"] == "Staging"
    assert in_default["workspace_id"] is None  # the spec: null for the default workspace
    assert in_workspace["created_at"].endswith("Z")
    assert in_workspace["archived_at"] is None
    assert ok(http.get(f"{SPEC}/{in_workspace['id']}")) == in_workspace

    more = [spec_tunnel(http, workspace_id=workspace_id) for _ in range(2)]
    page = ok(http.get(SPEC, params={"workspace_id": workspace_id, "limit": 2}))
    assert [t["id"] for t in page["data"]] == [more[1]["id"], more[0]["id"]]
    rest = ok(http.get(SPEC, params={"workspace_id": workspace_id, "limit": 2, "page": page["next_page"]}))
    assert [t["id"] for t in rest["data"]] == [in_workspace["id"]]
    assert rest["next_page"] is None
    everyone = [t["id"] for t in ok(http.get(SPEC, params={"limit": 1000}))["data"]]
    assert in_default["id"] in everyone
    assert in_workspace["id"] in everyone
    assert everyone == sorted(everyone, reverse=True)

    token = ok(http.post(f"{SPEC}/{in_workspace['id']}/reveal_token"))
    assert set(token) == {"id", "tunnel_token", "type"}
    assert token["type"] == "tunnel_token"
    rotated = ok(http.post(f"{SPEC}/{in_workspace['id']}/rotate_token", json={"reason": "scheduled"}))
    assert rotated["id"] != token["id"]
    assert ok(http.post(f"{SPEC}/{in_workspace['id']}/rotate_token"))["id"] != rotated["id"]  # reason optional

    ca = certs.make()
    certificate = ok(add_certificate(http, in_workspace["id"], ca.pem))
    assert set(certificate) == {"id", "archived_at", "created_at", "expires_at", "fingerprint", "tunnel_id", "type"}
    assert certificate["expires_at"] == rfc3339(ca.certificate.not_valid_after_utc)
    path = f"{SPEC}/{in_workspace['id']}/certificates"
    assert ok(http.get(f"{path}/{certificate['id']}")) == certificate
    assert ok(http.get(path)) == {"data": [certificate], "next_page": None}
    archived_certificate = ok(http.post(f"{path}/{certificate['id']}/archive"))
    assert archived_certificate["archived_at"] is not None
    assert ok(http.get(path))["data"] == []
    assert ok(http.get(path, params={"include_archived": "true"}))["data"] == [archived_certificate]

    archived = ok(http.post(f"{SPEC}/{in_workspace['id']}/archive"))
    assert archived["archived_at"] is not None
    assert archived["workspace_id"] == workspace_id
    listed = ok(http.get(SPEC, params={"workspace_id": workspace_id, "include_archived": "true", "limit": 10}))
    assert in_workspace["id"] in [t["id"] for t in listed["data"]]


def test_a_missing_beta_header_is_a_400_naming_it(server: Server) -> None:
    with server.http() as raw:
        response = raw.get(SPEC)
        assert_error(
            response, 400, "invalid_request_error", "requires the anthropic-beta header mcp-tunnels-2026-05-19"
        )
        response = raw.post("/v1/tunnels", json={}, headers={"anthropic-beta": "other-beta-2025-01-01"})
        assert_error(
            response, 400, "invalid_request_error", "requires the anthropic-beta header mcp-tunnels-2026-06-22"
        )
        response = raw.get(f"{SPEC}/tnl_010000000000000000000000/certificates", headers=SDK_BETA)
        body = assert_error(response, 400, "invalid_request_error", "mcp-tunnels-2026-05-19")
        assert "(mcp-tunnels-2026-06-22 is the beta of /v1/tunnels)" in body["error"]["message"]
        # The beta in a comma list, or repeated, counts.
        both = [("anthropic-beta", "files-api-2025-04-14, mcp-tunnels-2026-05-19")]
        assert raw.get(SPEC, headers=both).status_code == 200
        repeated = httpx.Headers(
            [("anthropic-beta", "files-api-2025-04-14"), ("anthropic-beta", "mcp-tunnels-2026-06-22")]
        )
        assert raw.get("/v1/tunnels", headers=repeated).status_code == 200
        assert_error(raw.get(SPEC, headers={"x-api-key": "nope"}), 401, "authentication_error", "")


def test_unknown_tunnels_and_bad_inputs_are_refused_clearly(http: httpx.Client) -> None:
    unknown = "tnl_010000000000000000000000"
    assert_error(http.get(f"{SPEC}/{unknown}"), 404, "not_found_error", f"tunnel '{unknown}' not found")
    assert_error(http.post(f"{SPEC}/{unknown}/archive"), 404, "not_found_error", "not found")
    tunnel = spec_tunnel(http)
    path = f"{SPEC}/{tunnel['id']}/certificates/tcrt_010000000000000000000000"
    assert_error(http.get(path), 404, "not_found_error", "certificate 'tcrt_010000000000000000000000' not found")
    assert_error(http.post(SPEC, json={"display_name": ""}), 400, "invalid_request_error", "display_name")
    assert_error(http.post(SPEC, json={"display_name": "x" * 256}), 400, "invalid_request_error", "at most 255")
    assert ok(http.post(SPEC, json={"display_name": "x" * 255}))["display_name"] == "x" * 255
    assert_error(http.post(SPEC, json={"name": "x"}), 400, "invalid_request_error", "name: unknown field")
    assert_error(http.post(SPEC, json={"workspace_id": "nope"}), 400, "invalid_request_error", "workspace_id")
    missing = "wrkspc_010000000000000000000000"
    assert_error(http.post(SPEC, json={"workspace_id": missing}), 404, "not_found_error", missing)
    assert_error(http.get(SPEC, params={"page": "garbage"}), 400, "invalid_request_error", "page")
    assert_error(http.get(SPEC, params={"limit": 0}), 400, "invalid_request_error", "limit")
    reason = {"reason": "r" * 1001}
    assert_error(http.post(f"{SPEC}/{tunnel['id']}/rotate_token", json=reason), 400, "invalid_request_error", "reason")
    assert_error(
        http.post(f"{SPEC}/{tunnel['id']}/certificates", json={}), 400, "invalid_request_error", "ca_certificate_pem"
    )


# --------------------------------------------------------------------------------------------------
# archive, tokens, hostnames


def test_archive_is_idempotent_archives_certificates_and_invalidates_the_token(http: httpx.Client) -> None:
    tunnel = spec_tunnel(http)
    tid = tunnel["id"]
    token = ok(http.post(f"{SPEC}/{tid}/reveal_token"))["tunnel_token"]
    first, second = (ok(add_certificate(http, tid, certs.make().pem)) for _ in range(2))
    assert token_valid(http, token)

    archived = ok(http.post(f"{SPEC}/{tid}/archive"))
    assert ok(http.post(f"{SPEC}/{tid}/archive")) == archived  # a retry returns the record unchanged
    assert ok(http.get(f"{SPEC}/{tid}")) == archived
    certificates = ok(http.get(f"{SPEC}/{tid}/certificates", params={"include_archived": "true"}))["data"]
    assert {c["id"] for c in certificates} == {first["id"], second["id"]}
    assert all(c["archived_at"] == archived["archived_at"] for c in certificates)
    assert ok(http.get(f"{SPEC}/{tid}/certificates"))["data"] == []

    assert not token_valid(http, token)
    assert_error(http.post(f"{SPEC}/{tid}/reveal_token"), 400, "invalid_request_error", "is archived")
    assert_error(http.post(f"{SPEC}/{tid}/rotate_token"), 400, "invalid_request_error", "is archived")
    assert_error(add_certificate(http, tid, certs.make().pem), 400, "invalid_request_error", "is archived")
    assert tid not in [t["id"] for t in ok(http.get(SPEC, params={"limit": 1000}))["data"]]


def test_archiving_a_workspace_archives_its_tunnels_and_only_its_own(
    server: Server, client: anthropic.Anthropic, http: httpx.Client
) -> None:
    """A workspace's tunnels go with it, as each tunnel's own archive would (certificates archived,
    token invalid, record and hostname kept), listed in the ``workspace.archive`` event; a tunnel
    of another workspace is left alone."""
    workspace_id, other_id = new_workspace(client), new_workspace(client)
    live, already, elsewhere = (spec_tunnel(http, workspace_id=w) for w in (workspace_id, workspace_id, other_id))
    token = ok(http.post(f"{SPEC}/{live['id']}/reveal_token"))["tunnel_token"]
    other_token = ok(http.post(f"{SPEC}/{elsewhere['id']}/reveal_token"))["tunnel_token"]
    certificate = ok(add_certificate(http, live["id"], certs.make().pem))
    before = ok(http.post(f"{SPEC}/{already['id']}/archive"))

    client.organization.workspaces.archive(workspace_id)

    got = ok(http.get(f"{SPEC}/{live['id']}"))
    assert got["archived_at"] is not None
    assert {k: v for k, v in got.items() if k != "archived_at"} == {k: v for k, v in live.items() if k != "archived_at"}
    assert ok(http.get(f"{SPEC}/{already['id']}")) == before  # archived before: unchanged
    shown = ok(http.get(f"{SPEC}/{live['id']}/certificates", params={"include_archived": "true"}))["data"]
    assert [(c["id"], c["archived_at"]) for c in shown] == [(certificate["id"], got["archived_at"])]
    assert not token_valid(http, token)
    assert token_valid(http, other_token)
    assert ok(http.get(f"{SPEC}/{elsewhere['id']}"))["archived_at"] is None
    event = [e for e in audit_events(server, {workspace_id}) if e["action"] == "workspace.archive"]
    assert [e["details"]["archived_tunnels"] for e in event] == [[live["id"]]]


def test_a_hostname_is_never_handed_out_twice(server: Server, http: httpx.Client) -> None:
    archived = spec_tunnel(http)
    ok(http.post(f"{SPEC}/{archived['id']}/archive"))
    domains = [spec_tunnel(http)["domain"] for _ in range(5)]
    assert len({archived["domain"], *domains}) == 6
    for domain in domains:
        label, _, base = domain.partition(".")
        assert base == "tunnels.orgwarden.local"
        assert len(label) == 12
        assert int(label, 16) >= 0

    async def reuse(uow: Any) -> None:
        row = await uow.tunnels.get(server.organization["id"], archived["id"])
        copy = Tunnel(**{c: getattr(row, c) for c in ("organization_id", "workspace_id", "created_at")})
        copy.id, copy.domain = "tnl_01zzzzzzzzzzzzzzzzzzzzzz", archived["domain"]
        uow.tunnels.add(copy)
        await uow.flush()

    with pytest.raises(IntegrityError):  # the database refuses it, archived row or not
        query_db(server.db, reuse)


def test_tokens_are_stored_encrypted_and_hashed_never_in_clear(server: Server, http: httpx.Client) -> None:
    tunnel = spec_tunnel(http)
    token = ok(http.post(f"{SPEC}/{tunnel['id']}/reveal_token"))["tunnel_token"]
    assert len(token) >= 43

    async def row(uow: Any) -> Tunnel:
        found: Tunnel = await uow.tunnels.get(server.organization["id"], tunnel["id"])
        return found

    stored = query_db(server.db, row)
    assert stored.token_encrypted is not None
    assert stored.token_encrypted.startswith("v1:")
    assert token not in stored.token_encrypted
    assert stored.token_hash != token
    assert token not in server.log()


def test_a_token_that_cannot_be_decrypted_is_a_409_saying_to_rotate(server: Server, http: httpx.Client) -> None:
    """A token sealed for another tunnel (as if under another secret key, or altered in the database)
    cannot be revealed; the answer says why and what to do, and a rotation recovers the tunnel."""
    first, second = spec_tunnel(http), spec_tunnel(http)

    async def swap(uow: Any) -> None:
        donor: Tunnel = await uow.tunnels.get(server.organization["id"], first["id"])
        victim: Tunnel = await uow.tunnels.get(server.organization["id"], second["id"])
        victim.token_encrypted = donor.token_encrypted  # sealed to the other tunnel's id: will not open
        await uow.commit()

    query_db(server.db, swap)
    response = http.post(f"{SPEC}/{second['id']}/reveal_token")
    assert_error(response, 409, "conflict_error", "rotate the token")
    rotated = ok(http.post(f"{SPEC}/{second['id']}/rotate_token", json={}))["tunnel_token"]
    assert ok(http.post(f"{SPEC}/{second['id']}/reveal_token"))["tunnel_token"] == rotated


def test_check_token_refuses_unknown_tokens(http: httpx.Client) -> None:
    assert not token_valid(http, "not-a-token")
    assert not token_valid(http, "")
    tunnel = spec_tunnel(http)
    token = ok(http.post(f"{SPEC}/{tunnel['id']}/reveal_token"))["tunnel_token"]
    result = ok(http.post(f"{SPEC}/check_token", json={"tunnel_token": token}))
    assert result["valid"]
    assert result["tunnel_id"] == tunnel["id"]
    assert result["domain"] == tunnel["domain"]
    assert "tunnel_token" not in result


# --------------------------------------------------------------------------------------------------
# certificates: validation and the limit


def _two_certificates() -> str:
    return certs.make().pem + certs.make().pem


def _with_key(form: str) -> str:
    made = certs.make()
    return made.pem + certs.key_pem(made, form)


REFUSED = {
    "garbage": (lambda: "this is not a certificate", "no PEM certificate found"),
    "empty": (lambda: "  \n", "must not be empty"),
    "broken PEM body": (
        lambda: "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        "is not a valid PEM-encoded X.509 certificate",
    ),
    "two certificates": (_two_certificates, "exactly one certificate, found 2"),
    "certificate and PKCS#8 key": (lambda: _with_key("PRIVATE KEY"), "private-key material (a PRIVATE KEY block)"),
    "certificate and EC key": (lambda: _with_key("EC PRIVATE KEY"), "(a EC PRIVATE KEY block)"),
    "encrypted key alone": (
        lambda: certs.key_pem(certs.make(), "ENCRYPTED PRIVATE KEY"),
        "(a ENCRYPTED PRIVATE KEY block)",
    ),
    "RSA key alone": (lambda: certs.key_pem(certs.make(), "RSA PRIVATE KEY"), "(a RSA PRIVATE KEY block)"),
    "a public key": (
        lambda: certs.make().pem + "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "contains a PUBLIC KEY block",
    ),
    "expired CA": (lambda: certs.expired().pem, "the certificate expired at"),
    "CA:FALSE": (lambda: certs.make(ca=False).pem, "is not a CA certificate"),
    "no basicConstraints": (lambda: certs.make(ca=None).pem, "basicConstraints CA:TRUE is required"),
    "larger than 8 KB": (lambda: certs.make().pem + " " * 8192, "at most 8192 bytes"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_certificate_that_must_not_be_registered_is_a_400_naming_the_problem(
    http: httpx.Client, case: str, tunnel_for_refusals: str
) -> None:
    make, message = REFUSED[case]
    pem = make()
    response = add_certificate(http, tunnel_for_refusals, pem)
    body = assert_error(response, 400, "invalid_request_error", message)
    assert body["error"]["message"].startswith("ca_certificate_pem: ")
    assert "MII" not in body["error"]["message"]  # nothing of the PEM (or a key) is echoed


@pytest.fixture(scope="module")
def tunnel_for_refusals(http: httpx.Client) -> Iterator[str]:
    tunnel_id = str(spec_tunnel(http)["id"])
    yield tunnel_id
    assert ok(http.get(f"{SPEC}/{tunnel_id}/certificates", params={"include_archived": "true"}))["data"] == []


def test_a_tunnel_holds_at_most_two_certificates(http: httpx.Client) -> None:
    tid = spec_tunnel(http)["id"]
    first, second = (ok(add_certificate(http, tid, certs.make().pem)) for _ in range(2))
    third = certs.make()
    body = assert_error(add_certificate(http, tid, third.pem), 400, "invalid_request_error", "at most 2 non-archived")
    assert first["id"] in body["error"]["message"]
    assert "archive one" in body["error"]["message"]
    ok(http.post(f"{SPEC}/{tid}/certificates/{first['id']}/archive"))
    assert ok(add_certificate(http, tid, third.pem))["fingerprint"] == certs.fingerprint(third)
    # The same certificate twice would only take a slot.
    again = add_certificate(http, tid, third.pem)
    assert_error(again, 409, "conflict_error", "already registered")
    assert second["id"] in [c["id"] for c in ok(http.get(f"{SPEC}/{tid}/certificates"))["data"]]


def test_concurrent_certificate_creates_never_exceed_two(server: Server) -> None:
    with server.http() as setup:
        setup.headers.update(SPEC_BETA)
        tid = spec_tunnel(setup)["id"]
    pems = [certs.make().pem for _ in range(6)]

    def create(pem: str) -> int:
        with server.http() as own:  # a connection each, so the requests really overlap
            own.headers.update(SPEC_BETA)
            return add_certificate(own, tid, pem).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = sorted(pool.map(create, pems))
    assert statuses == [200, 200, 400, 400, 400, 400]
    with server.http() as check:
        check.headers.update(SPEC_BETA)
        assert len(ok(check.get(f"{SPEC}/{tid}/certificates"))["data"]) == 2


def test_no_tunnel_stays_live_in_a_workspace_archived_while_tunnels_are_being_created(
    server: Server, client: anthropic.Anthropic
) -> None:
    """Creates race the workspace's archive: each create either comes before it (and is archived
    with the workspace) or after it (a 400), never in between (a live tunnel left in an archived
    workspace): creating takes the organization's lock, which archiving holds."""
    workspace_id = new_workspace(client)
    archived = threading.Event()
    created = threading.Event()

    def create_until_archived(_: int) -> list[int]:
        statuses = []
        with server.http() as own:  # a connection each, so the requests really overlap
            own.headers.update(SPEC_BETA)
            while not archived.is_set() or len(statuses) < 3:
                status = own.post(SPEC, json={"display_name": unique("race"), "workspace_id": workspace_id}).status_code
                statuses.append(status)
                if status == 200:
                    created.set()
        return statuses

    with ThreadPoolExecutor(max_workers=6) as pool:
        runs = pool.map(create_until_archived, range(6))
        try:
            assert created.wait(60), "no tunnel was created before the archive"  # however loaded the machine is
            time.sleep(0.1)  # creates in full flight
            client.organization.workspaces.archive(workspace_id)
        finally:
            archived.set()
        statuses = [status for run in runs for status in run]
    assert set(statuses) == {200, 400}
    with server.http() as check:
        check.headers.update(SPEC_BETA)
        tunnels = ok(check.get(SPEC, params={"workspace_id": workspace_id, "include_archived": "true", "limit": 1000}))
    assert len(tunnels["data"]) == statuses.count(200)
    assert [t["id"] for t in tunnels["data"] if t["archived_at"] is None] == []


# --------------------------------------------------------------------------------------------------
# the audit trail


def test_every_change_writes_its_audit_event_and_none_holds_a_token(server: Server, http: httpx.Client) -> None:
    tunnel = spec_tunnel(http, display_name="Audited")
    tid = tunnel["id"]
    revealed = ok(http.post(f"{SPEC}/{tid}/reveal_token"))
    rotated = ok(http.post(f"{SPEC}/{tid}/rotate_token", json={"reason": "laptop lost"}))
    certificate = ok(add_certificate(http, tid, certs.make().pem))
    ok(http.post(f"{SPEC}/{tid}/certificates/{certificate['id']}/archive"))
    ok(http.post(f"{SPEC}/{tid}/certificates/{certificate['id']}/archive"))  # a repeat: no event
    other = ok(add_certificate(http, tid, certs.make().pem))
    ok(http.post(f"{SPEC}/{tid}/archive"))
    ok(http.post(f"{SPEC}/{tid}/archive"))  # a repeat: no event

    events = audit_events(server, {tid, certificate["id"], other["id"]})
    assert [e["action"] for e in events] == [
        "tunnel.create",
        "tunnel.token.reveal",
        "tunnel.token.rotate",
        "tunnel_certificate.create",
        "tunnel_certificate.archive",
        "tunnel_certificate.create",
        "tunnel.archive",
    ]
    assert all(e["actor_type"] == "admin_api_key" and e["outcome"] == "success" for e in events)
    create, reveal, rotate, cert_create, _, _, archive = events
    assert create["details"]["domain"] == tunnel["domain"]
    assert create["details"]["display_name"] == "Audited"
    assert reveal["details"] == {"token_id": revealed["id"]}
    assert rotate["details"] == {
        "reason": "laptop lost",
        "previous_token_id": revealed["id"],
        "token_id": rotated["id"],
    }
    assert cert_create["details"]["fingerprint"] == certificate["fingerprint"]
    assert cert_create["details"]["tunnel_id"] == tid
    assert archive["details"]["archived_certificates"] == [other["id"]]
    assert archive["details"]["invalidated_token_id"] == rotated["id"]
    dumped = json.dumps(events)
    assert revealed["tunnel_token"] not in dumped
    assert rotated["tunnel_token"] not in dumped
