"""The real Claude Code CLI (2.1.332) signs in to orgwarden as a gateway and works through it.

A real ``orgwarden serve`` (PostgreSQL, over https with a certificate from a test CA) signs people in
with the real test IdP (npm ``oidc-provider``). Claude Code is pointed at orgwarden by
``forceLoginMethod: "gateway"`` + ``forceLoginGatewayUrl`` in the managed-settings file at its real
path, ``/etc/claude-code/managed-settings.json`` (this build has no environment override for it). So
that parallel tests and the machine are not affected, every ``claude`` runs in a private mount
namespace (``unshare -m --propagation private``) in which a temporary directory of the test's is
bind-mounted over ``/etc/claude-code`` (an empty directory the test creates on the host); that needs
root and ``unshare``: without them the tests are skipped loudly, and fail with
``ORGWARDEN_TEST_REQUIRE_CLAUDE_CODE=1``. The native binary trusts the test CA through
``NODE_EXTRA_CA_CERTS`` (``SSL_CERT_FILE`` works too). The sign-in is ``claude auth login
--gateway-json`` (a hidden flag: the sign-in's questions as JSON lines on stdout, the answers on stdin)
driven by the test; its ``trust_prompt`` (the leaf certificate's SHA-256, pinned once accepted) is
accepted, and the person's part (``/device`` -> the IdP's sign-in form -> Approve) is scripted with
httpx as in ``tests/identity``. The developer is in an RBAC group whose Claude Code policy denies a
Bash command and allows two models. Then ``claude -p`` runs through orgwarden (the simulator answers,
and calls the tool a prompt names): usage is the signed-in user's and their session's, the CLI applies
the group's managed settings (fetched from ``/managed/settings``, only ever over https) and refuses
the denied command, a model outside the allow-list is refused by orgwarden, deactivating the user
through SCIM or removing them through the Admin API ends access at once, and deactivating them at
the IdP only ends it when their access token expires (a second server with 10 s access tokens: the
CLI's refresh is refused because the IdP refuses orgwarden's). One server and one sign-in for the
module's first tests; the tests run in file order (the offboarding one after the others that use the
sign-in).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from orgwarden.domain.clock import utcnow
from orgwarden.storage.tables import UsageRecord
from orgwarden.storage.uow import UnitOfWork
from tests.claude_code.conftest import _unavailable
from tests.conftest import Server, query_db, unique
from tests.e2e.mitm import make_certificates
from tests.identity.conftest import IdP, browser, sign_in, signin_world
from tests.identity.test_browser_signin import add_user, last_refusal
from tests.scim.conftest import scim_token

EMAIL = "dev@acme.test"
MODEL = "claude-sonnet-4-6"
SMALL_MODEL = "claude-haiku-4-5"
OTHER_MODEL = "claude-opus-4-7"  # in the catalogue (the simulator answers it), not in the group's allow-list
SETTINGS = {"permissions": {"deny": ["Bash(touch denied.txt)"]}}
DENIED_PROMPT = 'use Bash {"command": "touch denied.txt", "description": "make a file"}'
ALLOWED_PROMPT = 'use Bash {"command": "touch allowed.txt", "description": "make a file"}'
SCIM_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
SCIM_PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
_HIDDEN = re.compile(r'name="([^"]+)" value="([^"]*)"')
_ANSWERED = re.compile(r'"POST /v1/messages[^"]*" 200')


@dataclass
class World:
    idp: IdP
    server: Server
    ca: Path  # the test CA that signed orgwarden's certificate (for 127.0.0.1 and localhost)
    fingerprint: str  # hex SHA-256 of that certificate (DER), as the CLI's trust prompt shows it


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """The IdP and one orgwarden over https (PostgreSQL): Claude Code fetches managed settings only over https."""
    with tempfile.TemporaryDirectory(prefix="orgwarden-ccgate-tls-") as tmp:
        certificates = make_certificates(Path(tmp))
        with signin_world("postgres", "orgwarden-ccgate-", certificates) as (idp, server):
            leaf = ssl.PEM_cert_to_DER_cert(certificates.server_cert.read_text())
            yield World(idp, server, certificates.ca, hashlib.sha256(leaf).hexdigest())


MANAGED_DIR = Path("/etc/claude-code")  # where Claude Code on Linux reads managed-settings.json
_BIND = 'mount --bind "$0" /etc/claude-code && exec "$@"'


@pytest.fixture(scope="session")
def private_mounts() -> None:
    """Every ``claude`` of this file runs in a mount namespace of its own with a test directory over
    ``/etc/claude-code``: root and ``unshare`` are needed (a loud skip without them, a failure with
    ``ORGWARDEN_TEST_REQUIRE_CLAUDE_CODE=1``)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        _unavailable("writing /etc/claude-code/managed-settings.json privately needs root and unshare(1)")
    MANAGED_DIR.mkdir(parents=True, exist_ok=True)  # the mount point; it stays empty on the host
    with tempfile.TemporaryDirectory(prefix="orgwarden-ccgate-probe-") as probe:
        (Path(probe) / "probe").write_text("")
        tried = subprocess.run(
            [*managed_at(Path(probe)), "test", "-e", "/etc/claude-code/probe"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    if tried.returncode != 0:
        _unavailable(f"unshare -m cannot bind-mount over /etc/claude-code here: {tried.stderr.strip()[-500:]}")


def managed_at(directory: Path) -> list[str]:
    """The prefix that runs a command with ``directory`` as ``/etc/claude-code`` (in its own namespace)."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", _BIND, str(directory)]


def managed(home: Path) -> list[str]:
    return managed_at(home / "managed")


def write_managed_settings(home: Path, gateway_url: str) -> None:
    """What IT distributes by MDM: the managed-settings file that sends Claude Code to orgwarden."""
    (home / "managed").mkdir()
    (home / "managed" / "managed-settings.json").write_text(
        json.dumps({"forceLoginMethod": "gateway", "forceLoginGatewayUrl": gateway_url})
    )


def _env(home: Path, ca: Path) -> dict[str, str]:
    """A clean environment: no Anthropic key, no base URL; only the gateway sign-in reaches orgwarden.
    The native binary (Bun) trusts ``NODE_EXTRA_CA_CERTS`` in addition to its own CA list."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "NODE_EXTRA_CA_CERTS": str(ca),
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": SMALL_MODEL,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }


def _approve(server: Server, user_code: str, email: str) -> None:
    """The person: open /device, sign in at the IdP, press Approve."""
    with browser(verify=server.verify) as b:
        page = sign_in(b, server.base_url, email, next_path=f"/device?user_code={user_code}")
        assert page.status_code == 200, page.text
        assert user_code in page.text, page.text
        fields = dict(_HIDDEN.findall(page.text))
        done = b.post(f"{server.base_url}/device", data={**fields, "action": "approve"})
        assert done.status_code == 200, done.text


def gateway_login(claude: Path, home: Path, world: World, email: str = EMAIL) -> list[dict[str, Any]]:
    """``claude auth login --gateway-json``: answer each question it asks (accept), approve the code in
    the "browser" when it polls; the states it went through."""
    server = world.server
    process = subprocess.Popen(
        [*managed(home), str(claude), "auth", "login", "--gateway-json"],
        env=_env(home, world.ca),
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
                _approve(server, question["userCode"], email)
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


def claude_p(
    claude: Path, home: Path, world: World, prompt: str, *extra: str, model: str = MODEL
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*managed(home), str(claude), "-p", prompt, "--model", model, "--output-format", "json", *extra],
        cwd=home,
        env=_env(home, world.ca),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def usage_of_user(server: Server, user_id: str) -> list[UsageRecord]:
    """The user's usage records, once there is one for each answered ``/v1/messages`` of the access log
    (every inference of this module is the developer's). Records are written in batches just after
    their answers: a bounded wait."""

    async def read(uow: UnitOfWork) -> list[UsageRecord]:
        return [r for r in await uow.usage.for_organization(server.organization["id"]) if r.user_id == user_id]

    answered = len(_ANSWERED.findall(server.log()))
    deadline = time.monotonic() + 30
    records = query_db(server.db, read)
    while sum(r.status == 200 for r in records) < answered and time.monotonic() < deadline:
        time.sleep(0.2)
        records = query_db(server.db, read)
    return records


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


def group_policy(server: Server, user_id: str) -> str:
    """An RBAC group with the user in it, and its Claude Code policy: a settings document that denies a
    Bash command, and an allow-list of models (orgwarden's extension)."""
    with server.http() as http:
        group = http.post("/v1/organizations/rbac_groups", json={"name": unique("claude-code-devs")})
        assert group.status_code == 200, group.text
        group_id = str(group.json()["id"])
        member = http.post(f"/v1/organizations/rbac_groups/{group_id}/members", json={"user_id": user_id})
        assert member.status_code == 200, member.text
        policy = http.post(
            f"/v1/organizations/claude_code/managed_settings/rbac_groups/{group_id}",
            json={"settings": SETTINGS, "allowed_models": [MODEL, SMALL_MODEL]},
        )
        assert policy.status_code == 200, policy.text
    return group_id


def logged_since(server: Server, offset: int, pattern: str) -> str:
    """The access log after ``offset`` once it has a line matching ``pattern`` (lines are written
    just after their answers: a bounded wait)."""
    deadline = time.monotonic() + 30
    log = server.log()[offset:]
    while not re.search(pattern, log) and time.monotonic() < deadline:
        time.sleep(0.2)
        log = server.log()[offset:]
    assert re.search(pattern, log), log[-3000:]
    return log


@dataclass
class Developer:
    user_id: str
    home: Path
    states: list[dict[str, Any]]  # what ``claude auth login --gateway-json`` asked


@pytest.fixture(scope="module")
def developer(world: World, claude_code: Path, private_mounts: None) -> Iterator[Developer]:
    """A developer in a group with a Claude Code policy, signed in once with the real CLI (the tests
    of this module share the sign-in; the offboarding test comes after the others that use it)."""
    user_id = enrol(world.server, world.idp, EMAIL, ["engineering"])
    group_policy(world.server, user_id)
    with signed_in(claude_code, world, user_id, EMAIL) as signed:
        yield signed


@contextmanager
def signed_in(claude: Path, world: World, user_id: str, email: str) -> Iterator[Developer]:
    """A home of the developer's own (no ``~/.claude/settings.json``: the managed file alone points the
    CLI at orgwarden), signed in with ``claude auth login``."""
    with tempfile.TemporaryDirectory(prefix="orgwarden-ccgate-home-") as tmp:
        home = Path(tmp)
        write_managed_settings(home, world.server.base_url)
        states = gateway_login(claude, home, world, email)
        assert not (home / ".claude" / "settings.json").exists()
        yield Developer(user_id, home, states)


def test_claude_code_signs_in_through_orgwarden_over_https(
    world: World, developer: Developer, claude_code: Path
) -> None:
    server, states = world.server, developer.states
    seen = [s["state"] for s in states]
    assert seen[0] == "url_input", states
    assert states[0]["shown"] == server.base_url, states
    trust = next(s for s in states if s["state"] == "trust_prompt")
    assert trust["shown"] == world.fingerprint, states  # the CLI pins the leaf certificate's SHA-256
    assert "polling" in seen, states
    assert seen[-1] == "done", states
    confirm = next(s for s in states if s["state"] == "confirm_account")
    assert confirm["shown"] == EMAIL, states  # the token response's "email"

    run = claude_p(claude_code, developer.home, world, "Reply with the single word PONG.")
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
    assert re.search(r'"GET /managed/settings HTTP/1.1" (200|304)', log), log[-3000:]

    records = usage_of_user(server, developer.user_id)
    assert records, what
    assert len(records) == len(_ANSWERED.findall(log)), log[-3000:]
    assert all(r.user_id == developer.user_id and r.api_key_id == "" for r in records)
    assert {r.claude_code_session_id for r in records} == {result["session_id"]}, records


def test_group_policy_denies_a_tool_and_a_model_in_the_cli(
    world: World, developer: Developer, claude_code: Path
) -> None:
    home = developer.home
    # the CLI fetched its group's settings from /managed/settings and keeps them next to its own
    stored = json.loads((home / ".claude" / "remote-settings.json").read_text())
    assert stored == SETTINGS, stored

    # Bash is allowed on the command line; the managed deny rule still wins for the command it names
    denied = claude_p(claude_code, home, world, DENIED_PROMPT, "--allowedTools", "Bash")
    what = f"claude exited {denied.returncode}\nstdout: {denied.stdout[-3000:]}\nstderr: {denied.stderr[-3000:]}"
    assert denied.returncode == 0, what
    result = json.loads(denied.stdout)
    assert [(d["tool_name"], d["tool_input"]["command"]) for d in result["permission_denials"]] == [
        ("Bash", "touch denied.txt")
    ], what
    assert "Permission to use Bash with command touch denied.txt has been denied" in result["result"], what
    assert not (home / "denied.txt").exists()
    # the same tool with another command runs: the refusal above is the policy's, not -p's default
    allowed = claude_p(claude_code, home, world, ALLOWED_PROMPT, "--allowedTools", "Bash")
    what = f"claude exited {allowed.returncode}\nstdout: {allowed.stdout[-3000:]}\nstderr: {allowed.stderr[-3000:]}"
    assert allowed.returncode == 0, what
    assert json.loads(allowed.stdout)["permission_denials"] == [], what
    assert (home / "allowed.txt").exists(), what

    # a model outside the group's allow-list: orgwarden answers 400 naming it, the CLI reports it
    other = claude_p(claude_code, home, world, "Reply with the single word PONG.", model=OTHER_MODEL)
    what = f"claude exited {other.returncode}\nstdout: {other.stdout[-3000:]}\nstderr: {other.stderr[-3000:]}"
    assert other.returncode != 0, what
    refused = json.loads(other.stdout)
    assert refused["is_error"] is True, what
    assert refused["api_error_status"] == 400, what
    assert OTHER_MODEL in refused["result"], what
    assert "policy" in refused["result"], what


def test_deactivating_the_user_through_scim_ends_their_access_at_once(
    world: World, developer: Developer, claude_code: Path
) -> None:
    """After the other tests of the shared sign-in: it ends it."""
    server, home = world.server, developer.home
    before = len(usage_of_user(server, developer.user_id))
    seen = len(server.log())
    token = scim_token(server)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/scim+json"}
    with httpx.Client(base_url=f"{server.base_url}/scim/v2", headers=headers, timeout=30, verify=server.verify) as scim:
        adopted = scim.post("/Users", json={"schemas": [SCIM_USER], "userName": EMAIL, "active": True})
        assert adopted.status_code == 201, adopted.text
        assert adopted.json()["id"] == developer.user_id  # the IdP takes over the existing user
        body = {"schemas": [SCIM_PATCH], "Operations": [{"op": "replace", "path": "active", "value": False}]}
        deactivated = scim.patch(f"/Users/{developer.user_id}", json=body)
        assert deactivated.status_code == 200, deactivated.text
        assert deactivated.json()["active"] is False, deactivated.text

    after = claude_p(claude_code, home, world, "Reply with the single word PONG.")
    said = after.stdout + after.stderr
    assert after.returncode != 0, said
    # 2.1.332 fetches /managed/settings when it starts; the 401 (x-should-retry: false) stops it there,
    # before any inference and without trying a refresh
    assert "no longer accepts this session" in said, said
    assert "/login" in said, said
    log = logged_since(server, seen, r'"GET /managed/settings HTTP/1.1" 401')
    assert not re.search(r'"POST /v1/messages[^"]*" 200', log), log[-3000:]
    assert "POST /oauth/token" not in log, log[-3000:]
    assert len(usage_of_user(server, developer.user_id)) == before


def test_removing_the_user_through_the_admin_api_ends_their_cli_access_at_once(
    world: World, claude_code: Path, private_mounts: None
) -> None:
    """orgwarden's own offboarding (``DELETE /v1/organizations/users/{id}``) for a signed-in CLI."""
    server, email = world.server, "leaver@acme.test"
    user_id = enrol(server, world.idp, email)
    with signed_in(claude_code, world, user_id, email) as leaver:
        seen = len(server.log())
        before = claude_p(claude_code, leaver.home, world, "Reply with the single word PONG.")
        assert before.returncode == 0, before.stdout + before.stderr
        seen += len(logged_since(server, seen, r'"POST /v1/messages[^"]*" 200'))  # its line is written
        with server.http() as http:
            removed = http.delete(f"/v1/organizations/users/{user_id}")
            assert removed.status_code == 200, removed.text
        after = claude_p(claude_code, leaver.home, world, "Reply with the single word PONG.")
    said = after.stdout + after.stderr
    assert after.returncode != 0, said
    assert "no longer accepts this session" in said, said
    log = logged_since(server, seen, r'"GET /managed/settings HTTP/1.1" 401')
    assert not re.search(r'"POST /v1/messages[^"]*" 200', log), log[-3000:]


SHORT_TTL = 10  # seconds: the access token lifetime of the second server (the least allowed)


@pytest.fixture(scope="module")
def short_world() -> Iterator[World]:
    """A second IdP and orgwarden (SQLite, https) whose access tokens live 10 s."""
    with tempfile.TemporaryDirectory(prefix="orgwarden-ccgate-short-tls-") as tmp:
        certificates = make_certificates(Path(tmp))
        with signin_world(
            "sqlite", "orgwarden-ccgate-short-", certificates, ORGWARDEN_ACCESS_TOKEN_TTL_SECONDS=str(SHORT_TTL)
        ) as (idp, server):
            leaf = ssl.PEM_cert_to_DER_cert(certificates.server_cert.read_text())
            yield World(idp, server, certificates.ca, hashlib.sha256(leaf).hexdigest())


def wait_until_access_tokens_expire(server: Server, user_id: str) -> None:
    """Sleep past the expiry of the user's newest access token (as the database has it)."""

    async def newest(uow: UnitOfWork) -> float:
        tokens = [t for t in await uow.user_tokens.for_user(user_id) if t.kind == "access"]
        assert tokens
        return max(t.expires_at for t in tokens).timestamp()

    time.sleep(max(0.0, query_db(server.db, newest) - utcnow().timestamp()) + 1.5)


def test_deactivated_only_at_the_idp_the_cli_is_refused_once_its_access_token_expires(
    short_world: World, claude_code: Path, private_mounts: None
) -> None:
    """What 2.1.332 does with an expired access token, watched in orgwarden's access log: before it
    calls anything it refreshes the token (``POST /oauth/token``) when it is expired or about to be
    (with 10 s tokens: before ``/managed/settings`` and again before the Messages call). When the
    refresh is refused it goes on with the old token, and the ``401`` of ``/managed/settings`` stops
    it ("no longer accepts this session"). A 503 from the refresh stops that run the same way, but
    the CLI keeps its sign-in: the next run, with the IdP back, refreshes and works."""
    world, email = short_world, "idp-only@acme.test"
    server = world.server
    user_id = enrol(server, world.idp, email)
    pong = "Reply with the single word PONG."
    with signed_in(claude_code, world, user_id, email) as dev:
        # an active person: past the access token's expiry the CLI refreshes it and carries on
        wait_until_access_tokens_expire(server, user_id)
        seen = len(server.log())
        fine = claude_p(claude_code, dev.home, world, pong)
        assert fine.returncode == 0, fine.stdout + fine.stderr + server.log()[seen:][-3000:]
        log = logged_since(server, seen, r'"POST /v1/messages[^"]*" 200')
        refreshed = log.find('"POST /oauth/token HTTP/1.1" 200')
        settings = re.search(r'"GET /managed/settings HTTP/1.1" (200|304)', log)
        assert settings is not None, log[-3000:]
        assert 0 <= refreshed < settings.start(), log[-3000:]  # refreshed first

        # the IdP unreachable when the CLI refreshes: 503 temporarily_unavailable, nothing spent
        world.idp.outage("down")
        try:
            wait_until_access_tokens_expire(server, user_id)
            seen = len(server.log())
            outage = claude_p(claude_code, dev.home, world, pong)
            assert outage.returncode != 0, outage.stdout + outage.stderr
            log = logged_since(server, seen, r'"POST /oauth/token HTTP/1.1" 503')
            assert not re.search(r'"POST /v1/messages[^"]*" 200', log), log[-3000:]
        finally:
            world.idp.outage(None)
        healed = claude_p(claude_code, dev.home, world, pong)  # no new sign-in needed
        assert healed.returncode == 0, healed.stdout + healed.stderr

        # deactivated at the IdP only (no SCIM): orgwarden learns it at the CLI's next refresh
        world.idp.deactivate(email)
        wait_until_access_tokens_expire(server, user_id)
        seen = len(server.log())
        after = claude_p(claude_code, dev.home, world, pong)
    said = after.stdout + after.stderr
    assert after.returncode != 0, said
    assert "no longer accepts this session" in said, said
    log = logged_since(server, seen, r'"GET /managed/settings HTTP/1.1" 401')
    assert '"POST /oauth/token HTTP/1.1" 400' in log, log[-3000:]
    assert not re.search(r'"POST /v1/messages[^"]*" 200', log), log[-3000:]
    assert last_refusal(server, "user_token.refresh")["reason"] == "idp_refused"


def _get(server: Server, url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, verify=server.verify, timeout=30, **kwargs)


def _post(server: Server, url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, verify=server.verify, timeout=30, **kwargs)


def _access_token(server: Server, idp: IdP, email: str) -> str:
    """A user access token by the device flow, as Claude Code asks for it (no client_id, surface only)."""
    started = _post(server, f"{server.base_url}/oauth/device_authorization", data={"surface": "claude_code"})
    assert started.status_code == 200, started.text
    body = started.json()
    enrol(server, idp, email)
    with browser(verify=server.verify) as b:
        page = sign_in(b, server.base_url, email, next_path=f"/device?user_code={body['user_code']}")
        assert "claude_code" in page.text, page.text  # the page names the client from its surface
        fields = dict(_HIDDEN.findall(page.text))
        assert b.post(f"{server.base_url}/device", data={**fields, "action": "approve"}).status_code == 200
    grant = "urn:ietf:params:oauth:grant-type:device_code"
    issued = _post(
        server, f"{server.base_url}/oauth/token", data={"grant_type": grant, "device_code": body["device_code"]}
    )
    assert issued.status_code == 200, issued.text
    tokens = issued.json()
    assert tokens["email"] == email, tokens
    assert tokens["token_type"] == "Bearer", tokens
    refreshed = _post(
        server,
        f"{server.base_url}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert refreshed.status_code == 200, refreshed.text
    return str(refreshed.json()["access_token"])


def test_managed_settings_as_claude_code_fetches_them(world: World) -> None:
    idp, server = world.idp, world.server
    url = f"{server.base_url}/managed/settings"
    missing = _get(server, url)
    assert missing.status_code == 401, missing.text
    assert missing.headers["x-should-retry"] == "false"
    assert missing.json()["error"]["type"] == "authentication_error"
    with server.http() as http:  # an API key is not a signed-in user
        assert http.get("/managed/settings").status_code == 401
    token = _access_token(server, idp, "settings@acme.test")
    first = _get(server, url, headers={"authorization": f"Bearer {token}"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) == {"uuid", "checksum", "settings"}, body
    canonical = json.dumps(body["settings"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    checksum = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert body["checksum"] == checksum, body
    assert first.headers["etag"] == f'"{checksum}"'
    again = _get(server, url, headers={"authorization": f"Bearer {token}", "if-none-match": f'"{checksum}"'})
    assert again.status_code == 304
    assert again.headers["etag"] == f'"{checksum}"'
    star = _get(server, url, headers={"authorization": f"Bearer {token}", "if-none-match": "*"})
    assert star.status_code == 200  # Claude Desktop's probe: answered as without the header
    stale = _get(server, url, headers={"authorization": f"Bearer {token}", "if-none-match": '"sha256:00"'})
    assert stale.status_code == 200
    revoked = _post(server, f"{server.base_url}/oauth/revoke", data={"token": token})
    assert revoked.status_code == 200
    gone = _get(server, url, headers={"authorization": f"Bearer {token}"})
    assert gone.status_code == 401, gone.text
    assert gone.headers["x-should-retry"] == "false"
