"""The audit log through ``GET /v1/organizations/audit_logs`` and ``orgwarden audit list|export``,
against a real ``orgwarden serve`` (SQLite and PostgreSQL).

A module fixture makes every kind of Admin API mutation once (organization, invites, users,
workspaces, members, API keys, upstream keys, MCP tunnels and their certificates, rate limits of the
organization, a workspace and a key, spend limits set, changed and deleted) and every kind of
tenant-restriction refusal, noting the request ids; the tests read them back through the API only,
so they check the API as much as the trail: each appears once with its actor, action, target,
workspace, outcome and request id; the order is newest first and every hash recomputes by the
recipe the README gives (with hashlib, not orgwarden's code); filters, paging (stable while events
arrive), refusals and 405s.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TLS, Server, assert_error, cli, unique
from tests.tunnels import certs

PATH = "/v1/organizations/audit_logs"
TENANT = "anthropic-allowed-org-ids"
OTHER_ORG = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
TUNNELS_BETA = "mcp-tunnels-2026-05-19"
MESSAGE = {"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
GENESIS = "0" * 64
HASHED = (
    "id", "organization_id", "seq", "occurred_at", "actor_type", "actor_id", "actor_user_id", "action",
    "target_type", "target_id", "workspace_id", "request_id", "source_ip", "outcome", "details", "prev_hash",
)  # fmt: skip


@dataclass
class Expected:
    """An event the fixture caused: what the log must say about it."""

    action: str
    target_type: str
    target_id: str
    workspace_id: str | None
    request_id: str
    actor_type: str = "admin_api_key"
    details: dict[str, Any] = field(default_factory=dict)  # a subset of the event's details


@dataclass
class Trail:
    admin_key_id: str
    user_id: str
    mutations: list[Expected]
    refusals: list[Expected]
    workspace_id: str = ""


# --------------------------------------------------------------------------------------------------
# helpers


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def read(server: Server, **params: Any) -> dict[str, Any]:
    with server.http() as h:
        return ok(h.get(PATH, params=params))


def every_event(server: Server, **params: Any) -> list[dict[str, Any]]:
    """Every page, following ``next_page``."""
    events: list[dict[str, Any]] = []
    page: str | None = None
    while True:
        body = read(server, **params, **({"page": page} if page else {}))
        events += body["data"]
        page = body["next_page"]
        if page is None:
            return events


def documented_hash(event: dict[str, Any]) -> str:
    """The README's recipe: SHA-256 of the canonical JSON of every field but ``type`` and ``hash``."""
    fields = {name: event[name] for name in HASHED}
    assert set(event) == {*HASHED, "type", "hash"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def tenant_refusal(server: Server, headers: list[tuple[str, str]], key: str | None) -> httpx.Response:
    sent = [("anthropic-version", "2023-06-01"), *headers] + ([("x-api-key", key)] if key else [])
    response = httpx.post(f"{server.base_url}/v1/messages", headers=sent, json=MESSAGE, timeout=30, verify=TLS)
    assert response.status_code in (400, 403), response.text
    return response


# --------------------------------------------------------------------------------------------------
# one of every mutation and refusal


@pytest.fixture(scope="module")
def trail(server: Server) -> Trail:
    init_key = every_event(server, action="admin_api_key.create", actor_type="system")
    done: list[Expected] = []
    with server.http() as h:

        def call(
            method: str, path: str, body: Any = None, *, key: bool = True, beta: str | None = None
        ) -> tuple[dict[str, Any], str]:
            client = h if key else httpx.Client(base_url=server.base_url, timeout=30, verify=TLS)
            headers = {"anthropic-beta": beta} if beta else {}
            response = client.request(method, path, json=body, headers=headers)
            return ok(response), response.headers["request-id"]

        def expect(action: str, target_type: str, target_id: str, workspace_id: str | None, request_id: str,
                   **details: Any) -> None:  # fmt: skip
            done.append(Expected(action, target_type, target_id, workspace_id, request_id, details=details))

        # invites and users
        invite, rid = call("POST", "/v1/organizations/invites", {"email": f"{unique('a')}@x.test", "role": "user"})
        expect("invite.create", "invite", invite["id"], None, rid, role="user")
        token = invite["accept_url"].split("#token=", 1)[1]
        user, rid = call("POST", "/v1/invites/accept", {"token": token, "name": "Audited"}, key=False)
        done.append(Expected("invite.accept", "user", user["id"], None, rid, actor_type="invite_token"))
        _, rid = call("POST", f"/v1/organizations/users/{user['id']}", {"role": "developer"})
        expect("user.update", "user", user["id"], None, rid, role=["user", "developer"])
        gone, rid = call("POST", "/v1/organizations/invites", {"email": f"{unique('b')}@x.test", "role": "user"})
        _, rid = call("DELETE", f"/v1/organizations/invites/{gone['id']}")
        expect("invite.delete", "invite", gone["id"], None, rid, was="pending")

        # workspaces and members
        workspace, rid = call("POST", "/v1/organizations/workspaces", {"name": unique("aw")})
        ws = workspace["id"]
        expect("workspace.create", "workspace", ws, ws, rid)
        name = unique("aw2")
        _, rid = call("POST", f"/v1/organizations/workspaces/{ws}", {"name": name})
        expect("workspace.update", "workspace", ws, ws, rid, after={"name": name})
        members = f"/v1/organizations/workspaces/{ws}/members"
        _, rid = call("POST", members, {"user_id": user["id"], "workspace_role": "workspace_developer"})
        expect("workspace_member.add", "user", user["id"], ws, rid, workspace_role="workspace_developer")
        _, rid = call("POST", f"{members}/{user['id']}", {"workspace_role": "workspace_admin"})
        expect("workspace_member.update", "user", user["id"], ws, rid)
        _, rid = call("DELETE", f"{members}/{user['id']}")
        expect("workspace_member.remove", "user", user["id"], ws, rid)
        upstream = {"api_key": "sk-ant-api03-" + "u" * 40}
        _, rid = call("POST", f"/v1/organizations/workspaces/{ws}/upstream_key", upstream)
        expect("workspace.upstream_key.set", "workspace", ws, ws, rid)
        _, rid = call("DELETE", f"/v1/organizations/workspaces/{ws}/upstream_key")
        expect("workspace.upstream_key.clear", "workspace", ws, ws, rid, hint=None)

        # API keys
        key, rid = call("POST", "/v1/organizations/api_keys", {"name": "audited", "workspace_id": ws})
        expect("api_key.create", "api_key", key["id"], ws, rid, name="audited")
        _, rid = call("POST", f"/v1/organizations/api_keys/{key['id']}", {"name": "renamed"})
        expect("api_key.update", "api_key", key["id"], ws, rid, name=["audited", "renamed"])

        # MCP tunnels and their certificates (the spec's path family)
        tunnels = "/v1/organizations/tunnels"
        tunnel, rid = call("POST", tunnels, {"display_name": "audited", "workspace_id": ws}, beta=TUNNELS_BETA)
        expect("tunnel.create", "tunnel", tunnel["id"], ws, rid, domain=tunnel["domain"])
        for action, verb in (("tunnel.token.reveal", "reveal_token"), ("tunnel.token.rotate", "rotate_token")):
            _, rid = call("POST", f"{tunnels}/{tunnel['id']}/{verb}", {}, beta=TUNNELS_BETA)
            expect(action, "tunnel", tunnel["id"], ws, rid)
        pem = {"ca_certificate_pem": certs.make().pem}
        cert, rid = call("POST", f"{tunnels}/{tunnel['id']}/certificates", pem, beta=TUNNELS_BETA)
        expect("tunnel_certificate.create", "tunnel_certificate", cert["id"], ws, rid, tunnel_id=tunnel["id"])
        _, rid = call("POST", f"{tunnels}/{tunnel['id']}/certificates/{cert['id']}/archive", beta=TUNNELS_BETA)
        expect("tunnel_certificate.archive", "tunnel_certificate", cert["id"], ws, rid, tunnel_id=tunnel["id"])
        _, rid = call("POST", f"{tunnels}/{tunnel['id']}/archive", beta=TUNNELS_BETA)
        expect("tunnel.archive", "tunnel", tunnel["id"], ws, rid, domain=tunnel["domain"])

        # rate limits: the organization's, a workspace's, a key's
        entry = ok(h.get("/v1/organizations/rate_limits", params={"group_type": "files"}))["data"][0]["id"]
        limits = {"limits": [{"type": "requests_per_minute", "value": 77}]}
        _, rid = call("POST", f"/v1/organizations/rate_limits/{entry}", limits)
        expect("rate_limit.update", "rate_limit", entry, None, rid, level="organization")
        _, rid = call("POST", f"/v1/organizations/workspaces/{ws}/rate_limits/{entry}", limits)
        expect("rate_limit.update", "rate_limit", entry, ws, rid, level="workspace")
        _, rid = call("POST", f"/v1/organizations/api_keys/{key['id']}/rate_limits/{entry}", limits)
        expect("rate_limit.update", "rate_limit", entry, ws, rid, level="api_key", scope_id=key["id"])

        # spend limits: set, set again (an update), delete
        spend = {"amount": "5000", "scope": {"type": "workspace", "workspace_id": ws}, "period": "daily"}
        created, rid = call("POST", "/v1/organizations/spend_limits", spend)
        expect("spend_limit.create", "spend_limit", created["id"], ws, rid, period="daily")
        _, rid = call("POST", "/v1/organizations/spend_limits", {**spend, "amount": "6000"})
        expect("spend_limit.update", "spend_limit", created["id"], ws, rid)
        _, rid = call("DELETE", f"/v1/organizations/spend_limits/{created['id']}")
        expect("spend_limit.delete", "spend_limit", created["id"], ws, rid)

        # the workspace archived, the user removed
        _, rid = call("POST", f"/v1/organizations/workspaces/{ws}/archive")
        expect("workspace.archive", "workspace", ws, ws, rid, archived_api_keys=[key["id"]], archived_tunnels=[])
        _, rid = call("DELETE", f"/v1/organizations/users/{user['id']}")
        expect("user.remove", "user", user["id"], None, rid)

        # every kind of tenant-restriction refusal, with a live key of the default workspace
        live, _ = call("POST", "/v1/organizations/api_keys", {"name": "tenant", "workspace_id": None})
    org = server.organization["id"]
    default = live["scope"]["workspace_id"]
    duplicate = [(TENANT, org), (TENANT, org)]
    refusals = []
    denied = tenant_refusal(server, [(TENANT, OTHER_ORG)], live["key"])
    refusals.append(
        Expected(
            "tenant_restriction.check",
            "organization",
            org,
            default,
            denied.headers["request-id"],
            "api_key",
            {"outcome": "denied", "auth_kind": "api_key", "allowed_org_ids": [OTHER_ORG]},
        )
    )
    for key_secret, actor, auth, workspace in [
        (live["key"], "api_key", "api_key", default),  # a malformed header with a good key
        (None, "anonymous", "none", None),  # with no key at all
        ("sk-ant-api03-" + "x" * 93 + "AA", "anonymous", "api_key", None),  # with a key that is no key
    ]:
        response = tenant_refusal(server, duplicate, key_secret)
        details = {"outcome": "invalid_request", "auth_kind": auth, "allowed_org_ids": None}
        refusals.append(Expected("tenant_restriction.check", "organization", org, workspace,
                                 response.headers["request-id"], actor, details))  # fmt: skip
    return Trail(init_key[0]["target_id"], server.user["id"], done, refusals, ws)


def by_request(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        found.setdefault(event["request_id"], []).append(event)
    return found


def tenant_events(server: Server, count: int) -> list[dict[str, Any]]:
    """The tenant-restriction events, polled for: the gateway writes them in batches."""
    deadline = time.monotonic() + 5
    while True:
        events = every_event(server, action="tenant_restriction.check", limit=1000)
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------------
# what the trail holds


def test_every_admin_api_mutation_appears_once_with_its_fields(server: Server, trail: Trail) -> None:
    found = by_request(every_event(server, limit=1000))
    for want in trail.mutations:
        assert len(found.get(want.request_id, [])) == 1, (want, found.get(want.request_id))
        [event] = found[want.request_id]
        where = f"{want.action} ({want.request_id})"
        assert (event["action"], event["target_type"], event["target_id"]) == (
            want.action, want.target_type, want.target_id,
        ), where  # fmt: skip
        assert event["workspace_id"] == want.workspace_id, where
        assert event["outcome"] == "success", where
        assert event["source_ip"] == "127.0.0.1", where
        assert event["organization_id"] == server.organization["id"], where
        assert event["actor_type"] == want.actor_type, where
        if want.actor_type == "admin_api_key":
            assert (event["actor_id"], event["actor_user_id"]) == (trail.admin_key_id, trail.user_id), where
        else:  # accepting an invite: the invite acts, for the user it creates
            assert (event["actor_id"].startswith("invite_"), event["actor_user_id"]) == (True, want.target_id)
        for name, value in want.details.items():
            assert event["details"][name] == value, (where, name, event["details"])
    assert {want.action for want in trail.mutations} == {
        "invite.create", "invite.accept", "invite.delete", "user.update", "user.remove", "workspace.create",
        "workspace.update", "workspace.archive", "workspace_member.add", "workspace_member.update",
        "workspace_member.remove", "workspace.upstream_key.set", "workspace.upstream_key.clear", "api_key.create",
        "api_key.update", "rate_limit.update", "spend_limit.create", "spend_limit.update", "spend_limit.delete",
        "tunnel.create", "tunnel.token.reveal", "tunnel.token.rotate", "tunnel.archive", "tunnel_certificate.create",
        "tunnel_certificate.archive",
    }  # fmt: skip


def test_the_bootstrap_of_the_organization_opens_the_chain(server: Server, trail: Trail) -> None:
    oldest = list(reversed(every_event(server, actor_type="system", actor_id="init")))
    assert [(e["seq"], e["action"]) for e in oldest] == [
        (1, "organization.create"), (2, "workspace.create"), (3, "user.create"), (4, "admin_api_key.create"),
    ]  # fmt: skip
    assert (oldest[0]["target_type"], oldest[0]["target_id"]) == ("organization", server.organization["id"])
    assert oldest[0]["prev_hash"] == GENESIS
    assert oldest[0]["details"] == {"name": "Acme"}
    assert (oldest[3]["target_id"], oldest[3]["details"]) == (trail.admin_key_id, {"user_id": trail.user_id})


def test_every_kind_of_tenant_restriction_refusal_appears_with_its_fields(server: Server, trail: Trail) -> None:
    found = by_request(tenant_events(server, len(trail.refusals)))
    for want in trail.refusals:
        assert len(found.get(want.request_id, [])) == 1, (want, sorted(found))
        [event] = found[want.request_id]
        details = dict(want.details)
        assert event["outcome"] == details.pop("outcome")
        assert (event["action"], event["target_type"], event["target_id"]) == (
            "tenant_restriction.check", "organization", server.organization["id"],
        )  # fmt: skip
        assert event["actor_type"] == want.actor_type
        assert event["actor_id"].startswith("apikey_") if want.actor_type == "api_key" else (
            event["actor_id"] == "unauthenticated"
        )  # fmt: skip
        assert event["actor_user_id"] is None
        assert event["workspace_id"] == want.workspace_id
        assert event["source_ip"] == "127.0.0.1"
        assert event["details"]["method"] == "POST"
        assert event["details"]["path"] == "/v1/messages"
        for name, value in details.items():
            assert event["details"][name] == value, (name, event["details"])


def test_events_come_newest_first_in_one_unbroken_chain_that_hashes_as_documented(server: Server, trail: Trail) -> None:
    tenant_events(server, len(trail.refusals))
    events = every_event(server, limit=1000)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(len(events), 0, -1)), "newest first, seq 1..N with no gap"
    oldest_first = list(reversed(events))
    link = GENESIS
    for event in oldest_first:
        assert event["type"] == "audit_event"
        assert event["prev_hash"] == link, event
        assert event["hash"] == documented_hash(event), event
        assert event["occurred_at"].endswith("Z")
        assert len(event["occurred_at"]) == len("2024-10-30T23:58:27.427722Z")
        link = event["hash"]


# --------------------------------------------------------------------------------------------------
# paging


def test_pages_follow_next_page_without_repeats_or_gaps_even_while_events_arrive(server: Server, trail: Trail) -> None:
    everything = [e["id"] for e in every_event(server, limit=1000)]
    first = read(server, limit=3)
    assert [e["id"] for e in first["data"]] == everything[:3]
    assert first["next_page"] is not None
    with server.http() as h:  # a new event arrives between two pages
        newest = ok(h.post("/v1/organizations/workspaces", json={"name": unique("page")}))
    second = read(server, limit=3, page=first["next_page"])
    assert [e["id"] for e in second["data"]] == everything[3:6]
    paged = [e["id"] for e in every_event(server, limit=7)]
    assert paged[1:] == everything
    assert read(server, limit=1)["data"][0]["target_id"] == newest["id"]
    assert read(server, limit=20)["data"] == read(server)["data"]  # limit defaults to 20


def test_the_cursor_keeps_its_place_whatever_the_filters(server: Server, trail: Trail) -> None:
    first = read(server, limit=2)
    last_seq = first["data"][-1]["seq"]
    narrowed = read(server, page=first["next_page"], action="workspace.create", limit=1000)
    assert narrowed["data"]
    assert all(e["seq"] < last_seq and e["action"] == "workspace.create" for e in narrowed["data"])
    assert narrowed["next_page"] is None


# --------------------------------------------------------------------------------------------------
# filters


def test_filters_by_actor_target_workspace_and_outcome(server: Server, trail: Trail) -> None:
    tenant_events(server, len(trail.refusals))
    everything = every_event(server, limit=1000)

    def check(params: dict[str, Any], keep: Any) -> list[dict[str, Any]]:
        got = every_event(server, **params, limit=1000)
        assert [e["id"] for e in got] == [e["id"] for e in everything if keep(e)], params
        assert got, params
        return got

    check({"actor_id": trail.admin_key_id}, lambda e: e["actor_id"] == trail.admin_key_id)
    check({"actor_type": "anonymous"}, lambda e: e["actor_type"] == "anonymous")
    check({"target_type": "spend_limit"}, lambda e: e["target_type"] == "spend_limit")
    key_id = next(m.target_id for m in trail.mutations if m.action == "api_key.create")
    assert {e["action"] for e in check({"target_id": key_id}, lambda e: e["target_id"] == key_id)} == {
        "api_key.create", "api_key.update",
    }  # fmt: skip
    check({"workspace_id": trail.workspace_id}, lambda e: e["workspace_id"] == trail.workspace_id)
    check({"outcome": "denied"}, lambda e: e["outcome"] == "denied")
    check({"target_type": "user", "workspace_id": trail.workspace_id},
          lambda e: e["target_type"] == "user" and e["workspace_id"] == trail.workspace_id)  # fmt: skip
    assert read(server, actor_id="nobody")["data"] == []


def test_action_is_repeatable_in_both_spellings(server: Server, trail: Trail) -> None:
    wanted = ("invite.create", "spend_limit.delete")
    everything = every_event(server, limit=1000)
    for spelling in ("action", "action[]"):
        with server.http() as h:
            body = ok(h.get(PATH, params=[(spelling, wanted[0]), (spelling, wanted[1]), ("limit", "1000")]))
        assert [e["id"] for e in body["data"]] == [e["id"] for e in everything if e["action"] in wanted]
        assert {e["action"] for e in body["data"]} == set(wanted)


def test_a_time_range_keeps_starting_at_and_drops_ending_at(server: Server, trail: Trail) -> None:
    events = every_event(server, limit=1000)
    oldest_first = sorted(events, key=lambda e: e["occurred_at"])
    start, end = oldest_first[5]["occurred_at"], oldest_first[12]["occurred_at"]
    got = every_event(server, starting_at=start, ending_at=end, limit=1000)
    assert [e["id"] for e in got] == [e["id"] for e in events if start <= e["occurred_at"] < end]
    assert oldest_first[5]["id"] in {e["id"] for e in got}
    assert oldest_first[12]["id"] not in {e["id"] for e in got}
    # the same instant written with an offset
    shifted = datetime.fromisoformat(start.replace("Z", "+00:00")).astimezone(timezone(timedelta(hours=2)))
    assert [e["id"] for e in every_event(server, starting_at=shifted.isoformat(), ending_at=end, limit=1000)] == [
        e["id"] for e in got
    ]


# --------------------------------------------------------------------------------------------------
# refusals


# One test per backend, not one per case: the cases are a request each, and fewer items keep this
# module on fewer xdist workers (each of which would start its own servers).
BAD_PARAMETERS: list[tuple[Any, str]] = [
    ({"starting_at": "yesterday"}, "starting_at"),
    ({"ending_at": "2025-13-01T00:00:00Z"}, "ending_at"),
    ({"starting_at": "2025-08-01T00:00:00"}, "starting_at"),  # no zone
    ({"starting_at": "2025-08-02T00:00:00Z", "ending_at": "2025-08-01T00:00:00Z"}, "ending_at"),
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"limit": "many"}, "limit"),
    ({"page": "not-a-cursor"}, "page"),
    ({"page": "b3cxOndya3NwY18wMQ"}, "page"),  # a cursor of another list ("ow1:wrkspc_01")
    ([("outcome", "denied"), ("outcome", "success")], "outcome"),
]


def test_a_bad_parameter_is_a_400_naming_it(server: Server) -> None:
    with server.http() as h:
        for params, named in BAD_PARAMETERS:
            assert_error(h.get(PATH, params=params), 400, "invalid_request_error", f"{named}:")


def test_the_audit_log_cannot_be_changed_through_the_api(server: Server) -> None:
    before = read(server, limit=1)["data"]
    with server.http() as h:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            response = h.request(method, PATH, json={"id": before[0]["id"]})
            assert_error(response, 405, "invalid_request_error", method)
    assert read(server, limit=1)["data"] == before


def test_only_an_admin_key_reads_the_audit_log(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30, verify=TLS) as anonymous:
        assert_error(anonymous.get(PATH), 401, "authentication_error", "credentials")
    with server.http() as h:
        key = ok(h.post("/v1/organizations/api_keys", json={"name": unique("reader"), "workspace_id": None}))
    with server.http(key["key"]) as h:
        assert_error(h.get(PATH), 403, "permission_error", "admin API key")


# --------------------------------------------------------------------------------------------------
# the CLI (SQLite only: the commands call the service the API calls, checked above on both)


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_audit_list_and_export_from_the_cli(server: Server, trail: Trail, tmp_path: Path) -> None:
    api = every_event(server, action="workspace.create", limit=1000)

    listed = cli(server.db, "audit", "list", "--action", "workspace.create", "--limit", "1")
    assert "Audit log (newest first)" in listed.stdout
    assert api[0]["target_id"] in listed.stdout
    assert api[1]["target_id"] not in listed.stdout
    assert "more events: --page " in listed.stderr

    exported = cli(server.db, "audit", "export", "--format", "jsonl", "--action", "workspace.create")
    assert [json.loads(line) for line in exported.stdout.splitlines()] == list(reversed(api))  # oldest first

    target = tmp_path / "audit.csv"
    cli(server.db, "audit", "export", "--format", "csv", "--output", str(target), "--newest-first")
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    everything = every_event(server, limit=1000)
    assert [int(r["seq"]) for r in rows] == [e["seq"] for e in everything]
    assert rows[0]["hash"] == everything[0]["hash"]
    assert json.loads(rows[-1]["details"]) == {"name": "Acme"}
