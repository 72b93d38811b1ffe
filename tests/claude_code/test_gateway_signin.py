"""The real Claude Code CLI (2.1.332) signs in to orgwarden as a gateway and works through it.

A real ``orgwarden serve`` (PostgreSQL) signs people in with the real test IdP (npm ``oidc-provider``).
Claude Code is pointed at orgwarden by ``forceLoginMethod: "gateway"`` + ``forceLoginGatewayUrl``.
On Linux the CLI reads those from ``/etc/claude-code/managed-settings.json`` and, on a machine with no
managed settings at all, from the user's own ``~/.claude/settings.json`` (its settings schema says so;
``/etc/claude-code`` has no environment override in this build): the test writes the user file in a
temporary ``HOME`` and touches nothing of the machine. The sign-in is ``claude auth login
--gateway-json`` (a hidden flag: the sign-in's questions as JSON lines on stdout, the answers on
stdin) driven by the test, and the person's part (``/device`` -> the IdP's sign-in form -> Approve)
is scripted with httpx as in ``tests/identity``. Then ``claude -p`` runs through orgwarden (the
simulator answers), usage is the signed-in user's, and removing the user ends access at once.

Over ``http://`` (loopback) the CLI never fetches ``/managed/settings`` (it does so only over
``https``), so the managed-settings endpoint is checked here with httpx, the way the CLI calls it
(bearer, ``If-None-Match: "sha256:..."``), and the group-policy effects on the CLI are xfail below.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orgwarden.storage.tables import UsageRecord
from orgwarden.storage.uow import UnitOfWork
from tests.conftest import Server, query_db, unique
from tests.identity.conftest import IdP, browser, sign_in, signin_world
from tests.identity.test_browser_signin import add_user

EMAIL = "dev@acme.test"
MODEL = "claude-sonnet-4-6"
SMALL_MODEL = "claude-haiku-4-5"
_HIDDEN = re.compile(r'name="([^"]+)" value="([^"]*)"')


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[IdP, Server]]:
    with signin_world("postgres", "orgwarden-ccgate-") as running:
        yield running


def _env(home: Path) -> dict[str, str]:
    """A clean environment: no Anthropic key, no base URL; only the gateway sign-in reaches orgwarden."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": SMALL_MODEL,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }


def _approve(server: Server, user_code: str) -> None:
    """The person: open /device, sign in at the IdP, press Approve."""
    with browser() as b:
        page = sign_in(b, server.base_url, EMAIL, next_path=f"/device?user_code={user_code}")
        assert page.status_code == 200, page.text
        assert user_code in page.text, page.text
        fields = dict(_HIDDEN.findall(page.text))
        done = b.post(f"{server.base_url}/device", data={**fields, "action": "approve"})
        assert done.status_code == 200, done.text


def gateway_login(claude: Path, home: Path, server: Server) -> list[dict[str, Any]]:
    """``claude auth login --gateway-json``: answer each question it asks, approve the code in the
    "browser" when it polls; the states it went through."""
    process = subprocess.Popen(
        [str(claude), "auth", "login", "--gateway-json"],
        env=_env(home),
        cwd=home,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    states: list[dict[str, Any]] = []
    try:
        for line in process.stdout:
            question = json.loads(line)
            states.append(question)
            state = question["state"]
            if state in ("url_input", "trust_prompt", "confirm_account"):
                answer = {"state": state, "shown": question.get("shown"), "accept": True}
                process.stdin.write(json.dumps(answer) + "\n")
                process.stdin.flush()
            elif state == "polling":
                _approve(server, question["userCode"])
            if state in ("done", "error", "cancelled"):
                break
        process.stdin.close()
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read() if process.stderr else ""
    assert code == 0, f"claude auth login exited {code}: {states}\n{stderr}\n{server.log()[-3000:]}"
    return states


def claude_p(claude: Path, home: Path, prompt: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(claude), "-p", prompt, "--model", MODEL, "--output-format", "json", *extra],
        cwd=home,
        env=_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def usage_of_user(server: Server, user_id: str) -> list[UsageRecord]:
    async def read(uow: UnitOfWork) -> list[UsageRecord]:
        return [r for r in await uow.usage.for_organization(server.organization["id"]) if r.user_id == user_id]

    return query_db(server.db, read)


def enrol(server: Server, idp: IdP, email: str, groups: list[str] | None = None) -> str:
    """A person at the IdP and in orgwarden (a developer, workspace_user in a workspace of their own)."""
    idp.account(email, email=email, groups=groups or [])
    add_user(server, email)
    user_id = user_id_of(server, email)
    with server.http() as http:
        workspace = http.post("/v1/organizations/workspaces", json={"name": unique("cc")})
        assert workspace.status_code == 200, workspace.text
        member = http.post(
            f"/v1/organizations/workspaces/{workspace.json()['id']}/members",
            json={"user_id": user_id, "workspace_role": "workspace_user"},
        )
        assert member.status_code == 200, member.text
    return user_id


def user_id_of(server: Server, email: str) -> str:
    with server.http() as http:
        response = http.get("/v1/organizations/users", params={"email": email, "limit": 100})
    assert response.status_code == 200, response.text
    found = [u for u in response.json()["data"] if u["email"] == email]
    assert found, response.text
    return str(found[0]["id"])


def test_claude_code_signs_in_through_orgwarden_and_is_cut_off_by_offboarding(
    world: tuple[IdP, Server], claude_code: Path
) -> None:
    idp, server = world
    user_id = enrol(server, idp, EMAIL, ["engineering"])
    with tempfile.TemporaryDirectory(prefix="orgwarden-ccgate-home-") as tmp:
        home = Path(tmp)
        (home / ".claude").mkdir()
        (home / ".claude" / "settings.json").write_text(
            json.dumps({"forceLoginMethod": "gateway", "forceLoginGatewayUrl": server.base_url})
        )
        states = gateway_login(claude_code, home, server)
        seen = [s["state"] for s in states]
        assert seen[0] == "url_input", states
        assert states[0]["shown"] == server.base_url, states
        assert "polling" in seen, states
        assert seen[-1] == "done", states
        confirm = next(s for s in states if s["state"] == "confirm_account")
        assert confirm["shown"] == EMAIL, states  # the token response's "email"

        run = claude_p(claude_code, home, "Reply with the single word PONG.")
        what = f"claude exited {run.returncode}\nstdout: {run.stdout[-3000:]}\nstderr: {run.stderr[-3000:]}"
        assert run.returncode == 0, what + server.log()[-4000:]
        result = json.loads(run.stdout)
        assert result["is_error"] is False, what
        assert result["result"].strip(), what
        # what the CLI called, as orgwarden's access log saw it (written once each answer is sent)
        log = server.log()
        for call in ("GET /.well-known/oauth-authorization-server", "POST /oauth/device_authorization"):
            assert f'"{call} HTTP/1.1" 200' in log, call
        assert '"POST /oauth/token HTTP/1.1" 200' in log
        assert re.search(r'"POST /v1/messages[^"]*" 200', log), log[-3000:]

        records = usage_of_user(server, user_id)
        assert records, what
        assert all(r.user_id == user_id and r.api_key_id == "" for r in records)

        # offboarding through orgwarden: the very next request is refused, as an authentication error
        with server.http() as http:
            removed = http.delete(f"/v1/organizations/users/{user_id}")
        assert removed.status_code == 200, removed.text
        after = claude_p(claude_code, home, "Reply with the single word PONG.")
        said = after.stdout + after.stderr
        assert after.returncode != 0, said
        assert "401" in said or "authentication" in said.lower() or "sign in" in said.lower(), said
        assert len(usage_of_user(server, user_id)) == len(records)


def _access_token(server: Server, idp: IdP, email: str) -> str:
    """A user access token by the device flow, as Claude Code asks for it (no client_id, surface only)."""
    started = httpx.post(f"{server.base_url}/oauth/device_authorization", data={"surface": "claude_code"})
    assert started.status_code == 200, started.text
    body = started.json()
    enrol(server, idp, email)
    with browser() as b:
        page = sign_in(b, server.base_url, email, next_path=f"/device?user_code={body['user_code']}")
        assert "claude_code" in page.text, page.text  # the page names the client from its surface
        fields = dict(_HIDDEN.findall(page.text))
        assert b.post(f"{server.base_url}/device", data={**fields, "action": "approve"}).status_code == 200
    grant = "urn:ietf:params:oauth:grant-type:device_code"
    issued = httpx.post(
        f"{server.base_url}/oauth/token", data={"grant_type": grant, "device_code": body["device_code"]}
    )
    assert issued.status_code == 200, issued.text
    tokens = issued.json()
    assert tokens["email"] == email, tokens
    assert tokens["token_type"] == "Bearer", tokens
    refreshed = httpx.post(
        f"{server.base_url}/oauth/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    return str(refreshed.json()["access_token"])


def test_managed_settings_as_claude_code_fetches_them(world: tuple[IdP, Server]) -> None:
    idp, server = world
    url = f"{server.base_url}/managed/settings"
    missing = httpx.get(url)
    assert missing.status_code == 401, missing.text
    assert missing.headers["x-should-retry"] == "false"
    assert missing.json()["error"]["type"] == "authentication_error"
    with server.http() as http:  # an API key is not a signed-in user
        assert http.get("/managed/settings").status_code == 401
    token = _access_token(server, idp, "settings@acme.test")
    first = httpx.get(url, headers={"authorization": f"Bearer {token}"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) == {"uuid", "checksum", "settings"}, body
    canonical = json.dumps(body["settings"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    checksum = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert body["checksum"] == checksum, body
    assert first.headers["etag"] == f'"{checksum}"'
    again = httpx.get(url, headers={"authorization": f"Bearer {token}", "if-none-match": f'"{checksum}"'})
    assert again.status_code == 304
    assert again.headers["etag"] == f'"{checksum}"'
    star = httpx.get(url, headers={"authorization": f"Bearer {token}", "if-none-match": "*"})
    assert star.status_code == 200  # Claude Desktop's probe: answered as without the header
    stale = httpx.get(url, headers={"authorization": f"Bearer {token}", "if-none-match": '"sha256:00"'})
    assert stale.status_code == 200
    revoked = httpx.post(f"{server.base_url}/oauth/revoke", data={"token": token})
    assert revoked.status_code == 200
    gone = httpx.get(url, headers={"authorization": f"Bearer {token}"})
    assert gone.status_code == 401, gone.text
    assert gone.headers["x-should-retry"] == "false"


@pytest.mark.xfail(
    strict=True,
    reason="needs ccpolicy's policies per group (Admin API + effective_for_user beyond the foundation stub) and a "
    "gateway served over https: Claude Code 2.1.332 fetches /managed/settings only from an https gateway",
)
def test_group_policy_denies_a_tool_and_a_model_in_the_cli() -> None:
    raise AssertionError("not wired yet: group policy applied to the real CLI through /managed/settings")
