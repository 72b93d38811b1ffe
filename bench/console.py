#!/usr/bin/env python3
"""Console benchmark: each console page's server time on the embedded default (SQLite) with a
month of usage for 50 API keys.

Issue 19: "fast (a page's server time under 100 ms on the embedded default with a month of data for
50 keys)". What one run does:

1. starts the test OpenID Connect provider (``tests/idp``, npm ``oidc-provider``, installed into the
   shared cache by the tests' own helper) and ``orgwarden serve`` on a fresh SQLite data directory
   (``orgwarden init``; the simulator upstream);
2. creates ``--workspaces`` workspaces and ``--keys`` API keys spread over them, an organization and
   a workspace monthly spend limit and a spend limit on every fifth key, through the Admin API;
3. writes ``--per-key-day`` usage records per key per day over the last 31 days through the
   gateway's own recorder (``gateway.recorder.Recorder``, as ``tests/reports`` does: the rollups
   are built by the same code as for live traffic), a few models, some cache reads, Claude Code
   session ids on some of them;
4. signs in as the organization admin through the IdP's login form (the tests' httpx "browser")
   and times every console GET page over one keep-alive connection: ``--warmup`` requests, then
   ``--runs`` timed ones each; it prints p50 and p95 of the wall time from sending the request to
   having read the whole body (127.0.0.1: what the server takes, plus well under a millisecond of
   client and loopback), and the server's CPU time per request (user + system of its process group).

    .venv/bin/python bench/console.py                  # 50 keys, 31 days, 20 records/key/day
    .venv/bin/python bench/console.py --runs 50 --per-key-day 40
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import Server, free_port, make_database, query_db, stop_server  # noqa: E402
from tests.identity.conftest import browser, oidc_settings, running_idp, serve_on, sign_in  # noqa: E402

from orgwarden.config import load_settings  # noqa: E402
from orgwarden.data import load_catalog  # noqa: E402
from orgwarden.domain.pricing import TokenUsage, cost_of  # noqa: E402
from orgwarden.domain.rollups import Entry  # noqa: E402
from orgwarden.gateway.recorder import Recorder  # noqa: E402
from orgwarden.storage.engine import create_engine, session_factory  # noqa: E402
from orgwarden.storage.uow import UnitOfWorkFactory  # noqa: E402

MODELS = ("claude-sonnet-4-5-20250929", "claude-opus-4-6", "claude-haiku-4-5-20251001")


def admin(server: Server, method: str, path: str, **kwargs: Any) -> Any:
    with server.http() as http:
        response = http.request(method, path, **kwargs)
    if response.status_code != 200:
        raise SystemExit(f"{method} {path}: {response.status_code} {response.text}")
    return response.json()


def population(server: Server, workspaces: int, keys: int) -> tuple[str, list[tuple[str, str]]]:
    """Workspaces and keys through the Admin API; returns the default workspace and (key, workspace)."""
    default = query_db(server.db, lambda uow: uow.workspaces.default(server.organization["id"])).id
    spaces = [default] + [
        admin(server, "POST", "/v1/organizations/workspaces", json={"name": f"Team {i}"})["id"]
        for i in range(1, workspaces)
    ]
    made: list[tuple[str, str]] = []
    for i in range(keys):
        workspace = spaces[i % len(spaces)]
        body: dict[str, Any] = {"name": f"key-{i:02d}"}
        if workspace != default:
            body["workspace_id"] = workspace
        made.append((admin(server, "POST", "/v1/organizations/api_keys", json=body)["id"], workspace))
    limits = "/v1/organizations/spend_limits"
    admin(server, "POST", limits, json={"amount": "5000000", "period": "monthly", "scope": {"type": "organization"}})
    admin(server, "POST", limits, json={"amount": "200000", "scope": {"type": "workspace", "workspace_id": spaces[-1]}})
    for key_id, _ in made[::5]:
        admin(server, "POST", limits, json={"amount": "50000", "scope": {"type": "api_key", "api_key_id": key_id}})
    return default, made


def seed(server: Server, keys: Sequence[tuple[str, str]], per_key_day: int, seed_value: int) -> int:
    """Usage records over the last 31 days through the gateway's recorder; returns how many."""
    rng = random.Random(seed_value)
    catalog = load_catalog()
    now = datetime.now(UTC)
    count = 0

    async def write() -> None:
        nonlocal count
        engine = create_engine(load_settings(**server.db.settings_kwargs))
        recorder = Recorder(UnitOfWorkFactory(session_factory(engine)))
        await recorder.start()
        for day in range(31):
            for key_id, workspace in keys:
                for _ in range(per_key_day):
                    at = now - timedelta(days=day, seconds=rng.randrange(1, 86_400))
                    model_name = rng.choice(MODELS)
                    model = catalog.find(model_name)
                    assert model is not None
                    usage = TokenUsage(
                        input_tokens=rng.randrange(50, 4000), output_tokens=rng.randrange(10, 1500),
                        cache_read=rng.choice((0, 0, 2000)),
                    )  # fmt: skip
                    cost = cost_of(catalog, model, usage)
                    record = dict(
                        id=f"req_bench{uuid.uuid4().hex}", organization_id=server.organization["id"],
                        workspace_id=workspace, api_key_id=key_id, model=model_name, service_tier="standard",
                        inference_geo="global", context_window="0-200k", speed="standard", endpoint="messages",
                        stream=False, completed=True, usage_estimated=False, user_id=None,
                        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                        cache_creation_5m_tokens=0, cache_creation_1h_tokens=0,
                        cache_read_tokens=usage.cache_read, web_search_requests=0,
                        cost_picodollars=cost.total, status=200, latency_ms=rng.randrange(200, 3000), created_at=at,
                    )  # fmt: skip
                    if rng.random() < 0.2:
                        record["claude_code_session_id"] = f"bench-{key_id[-6:]}-{day}-{rng.randrange(3)}"
                    await recorder.put("usage", record, Entry(record, cost, "not_available"))
                    count += 1
            await asyncio.sleep(0.3)  # let the recorder flush a day's batch
        await recorder.stop()
        await engine.dispose()

    asyncio.run(write())
    return count


def cpu_seconds(group: int) -> float:
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == group:
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--workspaces", type=int, default=5)
    parser.add_argument("--per-key-day", type=int, default=20, help="usage records per key per day")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--keep", type=Path, help="build the data directory here and leave it (for profiling)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="orgwarden-bench-console-") as tmp_name:
        tmp = args.keep or Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        port = free_port()
        with running_idp([f"http://127.0.0.1:{port}/auth/callback"], tmp) as idp:
            db = make_database("sqlite", tmp / "db")
            db.env.update(oidc_settings(idp))
            server = serve_on(db, port, tmp)
            try:
                return run(args, server)
            finally:
                stop_server(server)


def run(args: argparse.Namespace, server: Server) -> int:
    started = time.monotonic()
    _, keys = population(server, args.workspaces, args.keys)
    records = seed(server, keys, args.per_key_day, args.seed)
    print(f"seeded {records:,} usage records for {len(keys)} keys in {args.workspaces} workspaces over 31 days "
          f"({time.monotonic() - started:.0f} s)")  # fmt: skip
    since = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()
    pages = [
        "/console",
        f"/console/usage?starting_at={since}",
        f"/console/usage?starting_at={since}&group_by=api_key_id&group_by=model",
        f"/console/usage.csv?starting_at={since}&group_by=api_key_id&group_by=model",
        f"/console/usage?starting_at={since}&bucket_width=1h&group_by=workspace_id",
        f"/console/cost?starting_at={since}&group_by=workspace_id",
        f"/console/cost?starting_at={since}&group_by=workspace_id&group_by=description",
        f"/console/cost.csv?starting_at={since}&group_by=workspace_id&group_by=description",
        "/console/claude-code",
        "/console/claude-code?starting_at=" + (datetime.now(UTC) - timedelta(days=30)).date().isoformat(),
    ]
    group = os.getpgid(server.process.pid)
    with browser() as client:
        page = sign_in(client, server.base_url, "root@acme.test", next_path="/console")
        if page.status_code != 200:
            raise SystemExit(f"sign-in failed: {page.status_code} {page.text[:300]}")
        print(f"\n{'page':<86} {'bytes':>9} {'p50 ms':>8} {'p95 ms':>8} {'cpu ms':>8}")
        for path in pages:
            for _ in range(args.warmup):
                response = client.get(server.base_url + path)
                if response.status_code != 200:
                    raise SystemExit(f"{path}: {response.status_code} {response.text[:300]}")
            times = []
            cpu_before = cpu_seconds(group)
            for _ in range(args.runs):
                t0 = time.perf_counter()
                response = client.get(server.base_url + path)
                _ = response.content
                times.append((time.perf_counter() - t0) * 1000)
            cpu = (cpu_seconds(group) - cpu_before) * 1000 / args.runs
            print(f"{path:<86} {len(response.content):>9,} {statistics.median(times):>8.1f} "
                  f"{percentile(times, 95):>8.1f} {cpu:>8.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
