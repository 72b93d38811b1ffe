"""``/scim/v2`` is built on its first request (``api/scim_mount.py``): the server starts without
``scim2_models``, concurrent first requests share one build, and a failed build is tried again."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from orgwarden.api.scim_mount import ScimMount


class Recorder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append((scope["path"], scope.get("root_path", "")))


def scope(path: str) -> dict[str, Any]:
    return {"type": "http", "path": path, "root_path": ""}


async def nothing() -> dict[str, Any]:
    return {"type": "http.request"}


async def ignore(_message: Any) -> None:
    return None


def test_loading_the_app_does_not_load_scim2_models() -> None:
    heavy = ("scim2_models", "orgwarden.api.scim", "orgwarden.services.scim", "orgwarden.identity.scim_models")
    probe = (
        f"import json, sys, orgwarden.api.app\nprint(json.dumps(sorted(m for m in sys.modules if m in {heavy!r}"
        " or m.startswith('scim2_models.'))))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(result.stdout) == []


def test_other_paths_never_build_it_and_concurrent_first_requests_share_one_build() -> None:
    scim, rest = Recorder("scim"), Recorder("rest")
    builds: list[str] = []
    gate = threading.Event()

    def build() -> ASGIApp:
        builds.append(threading.current_thread().name)
        gate.wait(5)  # both first requests arrive while it is being built
        return scim

    mount = ScimMount(build, rest)

    async def run() -> None:
        await mount(scope("/v1/organizations/me"), nothing, ignore)
        await mount(scope("/scim/v2x"), nothing, ignore)  # not under /scim/v2
        assert builds == []
        first = asyncio.gather(*(mount(scope("/scim/v2/Users"), nothing, ignore) for _ in range(2)))
        await asyncio.sleep(0.05)
        gate.set()
        await first
        await mount(scope("/scim/v2"), nothing, ignore)

    asyncio.run(run())
    assert len(builds) == 1
    assert builds[0] != threading.main_thread().name
    assert rest.calls == [("/v1/organizations/me", ""), ("/scim/v2x", "")]
    assert scim.calls == [("/scim/v2/Users", "/scim/v2")] * 2 + [("/scim/v2", "/scim/v2")]


def test_a_failed_build_fails_its_waiters_and_is_tried_again_on_the_next_request() -> None:
    scim = Recorder("scim")
    attempts: list[int] = []

    def build() -> ASGIApp:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("not this time")
        return scim

    mount = ScimMount(build, Recorder("rest"))

    async def run() -> None:
        failed = await asyncio.gather(
            *(mount(scope("/scim/v2/Users"), nothing, ignore) for _ in range(2)), return_exceptions=True
        )
        assert [type(error) for error in failed] == [RuntimeError, RuntimeError]  # both waited on one build
        await mount(scope("/scim/v2/Users"), nothing, ignore)

    asyncio.run(run())
    assert len(attempts) == 2
    assert scim.calls == [("/scim/v2/Users", "/scim/v2")]
