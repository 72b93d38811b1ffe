#!/usr/bin/env python3
"""Report benchmark: the usage and cost reports over millions of usage records, on PostgreSQL.

Issue: "Usage records are rolled up (per minute x every grouping dimension) as they are written, so
reports never scan raw records. A benchmark loads 10 million synthetic usage records into PostgreSQL
and times a 31-day daily usage report grouped by workspace and model, a 24-hour hourly report grouped
by API key, and a 31-day cost report grouped by workspace and description. Target: each under 200 ms."

What one run does:

1. creates a fresh PostgreSQL database (``--admin-dsn`` names the server and its administration
   database) and runs ``orgwarden init`` on it (every migration, an organization, an admin key);
2. creates ``--workspaces`` workspaces (the default one among them; three with ``us`` as their
   default inference geo) and about ``--keys`` API keys in each, through the real services;
3. generates ``--records`` usage records of ``/v1/messages`` over the 31 days of October 2026:
   a daily pattern (European and American working hours, quieter weekends, slow growth, noise per
   minute), workspaces and keys of Zipf-like popularity, each key with a main model and a few others
   among six priced models of the shipped ``models.json``, mostly the standard tier (some keys run
   batch or priority work), both context windows (a few prompts over 200k tokens on the 1M models),
   ``global`` and ``us`` inference geos (reported as ``not_available`` for models that take none),
   a little fast mode, log-normal prompt and output sizes, prompt caching on about half the requests,
   some web searches, streamed and aborted requests;
4. loads them with COPY, one UTC day at a time in ``--jobs`` processes, and builds the rollups **with
   the gateway's own code**: each record is priced with ``domain.pricing.cost_of`` and wrapped in a
   ``domain.rollups.Entry`` exactly as ``gateway/pipeline.py`` does, and a day's entries are folded
   with ``domain.rollups.fold``, as the recorder folds a batch. A day's 1m, 1h and 1d rows are
   complete in that day's fold (no bucket spans two days), so they are COPYed straight into
   ``usage_rollups``: what the recorder's adding upsert would leave there, row for row (the table's
   primary key refuses a duplicate), and in the order of each row's last write, which is where the
   live upsert leaves each row's final version. ``usage_records``' secondary indexes are dropped for the load and
   rebuilt after it with their own definitions, then both tables are ``VACUUM ANALYZE``d (what
   autovacuum does to tables that grew this much);
5. checks that, for each bucket width, the rollups add up to the records: requests, every token
   kind, web searches and cost (the per-kind costs against the records' metered total);
6. starts ``orgwarden serve`` on the database and times the three reports through the Admin API
   (httpx, one keep-alive connection, the admin key): ``--warmup`` runs, then ``--runs`` timed runs
   each, median and p95 (nearest rank) of the time from sending the request to having read the whole
   body, and the CPU time per request of the server and of PostgreSQL (less sensitive than wall
   time to whatever else the machine runs). The first answer of each report is checked against the
   records (token totals, cost total in cents, exactly), so every timed answer is a right one;
7. with ``--explain``: runs each report's service in process, prints the SQL it sent to
   ``usage_rollups`` with ``EXPLAIN (ANALYZE, BUFFERS)``, and times the service call alone (no HTTP,
   no JSON), to show where the time goes.

The database is dropped at the end unless ``--keep``; ``--reuse NAME`` times a kept one again
(no load). The load average is printed before the load, before the timing and after it.

    .venv/bin/python bench/reports.py                                  # smoke run: 200,000 records
    .venv/bin/python bench/reports.py --records 10000000 --explain     # the issue's benchmark
    .venv/bin/python bench/reports.py --records 10000000 --keep        # keep the database
    .venv/bin/python bench/reports.py --reuse orgwarden_bench_1a2b3c4d --explain
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import math
import multiprocessing
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from orgwarden.domain.catalog import Catalog
from orgwarden.domain.pricing import LONG_CONTEXT_TOKENS, TokenUsage, cost_of
from orgwarden.domain.rollups import DIMENSIONS, MEASURES, TOKENS, WIDTHS, Entry, floor, fold, report_geo
from orgwarden.storage.tables import UsageRecord

HOST = "127.0.0.1"
DEFAULT_ADMIN_DSN = "postgresql://127.0.0.1:5432/test"
TARGET_MS = 200.0
STARTUP_TIMEOUT = 60.0
PERIOD_START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 31  # the reports are 31-day reports: October 2026
RECORD_COLUMNS = tuple(column.key for column in UsageRecord.__table__.columns)  # the table's order
ROLLUP_KEY = ("organization_id", "bucket_width", "bucket_start", *DIMENSIONS)
ROLLUP_COLUMNS = (*ROLLUP_KEY, *MEASURES)
COPY_CHUNK = 50_000
TOKEN_SUMS = TOKENS

# Six priced models of the shipped models.json and their share of the traffic (a key's main model is
# drawn with these weights; its other models too).
MODELS = (
    ("claude-sonnet-4-6", 0.35),
    ("claude-haiku-4-5-20251001", 0.25),
    ("claude-opus-4-8", 0.12),
    ("claude-sonnet-4-5-20250929", 0.12),
    ("claude-opus-4-6", 0.10),
    ("claude-opus-4-5-20251101", 0.06),
)
US_WORKSPACES = (3, 7, 12)  # workspaces (by index) whose default inference geo is "us"


class BenchError(RuntimeError):
    """A failure that stops the run with a one-line message (the server and database are still cleaned up)."""


class Terminated(SystemExit):
    """Raised from the SIGTERM/SIGHUP handler so that ``finally`` blocks run."""


def _terminate(signum: int, _frame: object) -> None:
    raise Terminated(128 + signum)


# -- the synthetic organization ----------------------------------------------------------------------


@dataclass(frozen=True)
class KeySpec:
    """One API key and how it is used: its workspace's geo, its models, its batch and priority share."""

    key_id: str
    workspace_id: str
    weight: float
    us_default: bool
    models: tuple[str, ...]
    model_cum: tuple[float, ...]
    batch_share: float
    priority_share: float


@dataclass(frozen=True)
class Population:
    organization_id: str
    keys: tuple[KeySpec, ...]
    key_cum: tuple[float, ...]


def zipf_weights(count: int, exponent: float) -> list[float]:
    return [1.0 / (rank + 1) ** exponent for rank in range(count)]


def cumulative(weights: Sequence[float]) -> tuple[float, ...]:
    total, out = 0.0, []
    for weight in weights:
        total += weight
        out.append(total)
    return tuple(out)


def key_profiles(rng: random.Random, workspaces: Sequence[str], keys: dict[str, list[str]]) -> list[KeySpec]:
    """Usage profiles for the keys: workspace popularity ~ 1/rank, key popularity ~ 1/rank^0.8 within
    it, a main model (70% of the key's requests) and up to three others, 10% of keys batch-heavy and
    10% priority-heavy."""
    names = [name for name, _ in MODELS]
    model_weights = [share for _, share in MODELS]
    specs: list[KeySpec] = []
    for w_index, (workspace_id, w_weight) in enumerate(
        zip(workspaces, zipf_weights(len(workspaces), 1.0), strict=True)
    ):
        ids = keys[workspace_id]
        k_weights = zipf_weights(len(ids), 0.8)
        total = sum(k_weights)
        for key_id, k_weight in zip(ids, k_weights, strict=True):
            main = rng.choices(names, model_weights)[0]
            others = [n for n in names if n != main]
            rng.shuffle(others)
            extra = others[: rng.randint(1, 3)]
            shares = [0.7] + [0.3 / len(extra)] * len(extra)
            kind = rng.random()
            specs.append(
                KeySpec(
                    key_id=key_id,
                    workspace_id=workspace_id,
                    weight=w_weight * k_weight / total,
                    us_default=w_index in US_WORKSPACES,
                    models=(main, *extra),
                    model_cum=cumulative(shares),
                    batch_share=0.4 if kind < 0.1 else 0.01,
                    priority_share=0.3 if 0.1 <= kind < 0.2 else 0.0,
                )
            )
    return specs


def minute_plan(records: int, seed: int) -> list[int]:
    """Records per minute of the 31 days, summing to exactly ``records``: European (07-17 UTC) and
    American (13-23 UTC) working hours over a night floor, weekends at 40%, 1% growth a day, and
    +-15% noise per minute (largest-remainder rounding)."""
    rng = random.Random(seed)
    weights: list[float] = []
    for day in range(DAYS):
        weekday = (PERIOD_START + timedelta(days=day)).weekday()
        day_factor = (0.4 if weekday >= 5 else 1.0) * (1.0 + 0.01 * day)
        for minute in range(1440):
            hour = minute / 60
            europe = math.exp(-(((hour - 12.0) / 3.5) ** 2))
            america = math.exp(-(((hour - 18.5) / 3.5) ** 2))
            weights.append(day_factor * (0.15 + 0.6 * europe + 1.0 * america) * rng.lognormvariate(0, 0.15))
    total = sum(weights)
    exact = [records * w / total for w in weights]
    counts = [int(x) for x in exact]
    short = records - sum(counts)
    for index in sorted(range(len(exact)), key=lambda i: exact[i] - counts[i], reverse=True)[:short]:
        counts[index] += 1
    return counts


# -- one day of records, priced and rolled up as the gateway does it ---------------------------------

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # ids.py's, so ids sort by time


def _base62(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        chars.append(ALPHABET[rem])
    return "".join(reversed(chars))


def request_id(moment: datetime, serial: int) -> str:
    """A request id of ``ids.new_id``'s shape, time-ordered by the record's own time, unique by serial."""
    return f"req_01{_base62(int(moment.timestamp() * 1000), 9)}{_base62(serial, 13)}"


def usage_for(rng: random.Random, max_input: int, long_context_ok: bool, batch: bool) -> TokenUsage:
    """Token counts with skewed (log-normal) sizes: prompts of a few thousand tokens with a long
    tail, 1% of prompts on the 1M models over 200k tokens, caching on 55% of requests."""
    if long_context_ok and rng.random() < 0.01:
        prompt = rng.randint(LONG_CONTEXT_TOKENS + 1, 900_000)
    else:
        prompt = min(max(1, int(rng.lognormvariate(8.0, 1.3))), min(max_input, LONG_CONTEXT_TOKENS))
    cache_read = cache_5m = cache_1h = 0
    if rng.random() < 0.55 and prompt > 1024:
        if rng.random() < 0.8:  # a hit: most of the prompt read from the cache
            cache_read = int(prompt * rng.uniform(0.5, 0.95))
        written = int((prompt - cache_read) * rng.uniform(0.3, 0.9))
        if rng.random() < 0.1:
            cache_1h = written
        else:
            cache_5m = written
    uncached = prompt - cache_read - cache_5m - cache_1h
    output = min(max(1, int(rng.lognormvariate(5.9 if not batch else 6.6, 1.0))), 32_000)
    searches = rng.randint(1, 5) if rng.random() < 0.015 else 0
    return TokenUsage(uncached, output, cache_5m, cache_1h, cache_read, searches)


def make_day(
    population: Population, catalog: Catalog, day: int, counts: Sequence[int], first_serial: int, seed: int
) -> tuple[list[tuple[Any, ...]], list[Entry]]:
    """The day's usage records (as COPY rows) and their rollup entries, built like
    ``Pipeline._meter`` builds them (same record dict, same ``cost_of`` call, same report geo)."""
    rng = random.Random(seed * 1_000_003 + day)
    start = PERIOD_START + timedelta(days=day)
    total = sum(counts)
    chosen = rng.choices(range(len(population.keys)), cum_weights=population.key_cum, k=total)
    models = {name: catalog.find(name) for name, _ in MODELS}
    rows: list[tuple[Any, ...]] = []
    entries: list[Entry] = []
    serial = first_serial
    at = 0
    for minute, count in enumerate(counts):
        base = start + timedelta(minutes=minute)
        for offset in sorted(rng.randrange(60_000_000) for _ in range(count)):
            key = population.keys[chosen[at]]
            at += 1
            created_at = base + timedelta(microseconds=offset)
            name = key.models[bisect.bisect_left(key.model_cum, rng.random() * key.model_cum[-1])]
            model = models[name]
            assert model is not None
            draw = rng.random()
            tier = (
                "batch"
                if draw < key.batch_share
                else "priority"
                if draw < key.batch_share + key.priority_share
                else "standard"
            )
            geo = "us" if key.us_default or rng.random() < 0.05 else "global"
            speed = "fast" if name == "claude-opus-4-6" and rng.random() < 0.05 else "standard"
            max_input = model.max_input_tokens or LONG_CONTEXT_TOKENS
            usage = usage_for(rng, max_input, max_input > LONG_CONTEXT_TOKENS, tier == "batch")
            stream = rng.random() < 0.65
            completed = rng.random() >= 0.005
            parts = cost_of(catalog, model, usage, inference_geo=geo)  # as the pipeline: the geo, no batch flag
            record = dict(
                id=request_id(created_at, serial),
                organization_id=population.organization_id,
                workspace_id=key.workspace_id,
                api_key_id=key.key_id,
                model=model.id,
                service_tier=tier,
                inference_geo=geo,
                context_window=usage.context_window,
                speed=speed,
                endpoint="messages",
                stream=stream,
                completed=completed,
                usage_estimated=False,
                user_id=None,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_creation_5m_tokens=usage.cache_creation_5m,
                cache_creation_1h_tokens=usage.cache_creation_1h,
                cache_read_tokens=usage.cache_read,
                web_search_requests=usage.web_search_requests,
                cost_picodollars=parts.total,
                status=200 if completed else 499,
                latency_ms=int(300 + usage.output_tokens * rng.uniform(8, 25)),
                created_at=created_at,
            )
            serial += 1
            entries.append(Entry(record, parts, report_geo(model, geo)))
            rows.append((*(record[c] for c in RECORD_COLUMNS[:-1]), created_at.replace(tzinfo=None)))
    return rows, entries


@dataclass
class DayLoaded:
    day: int
    records: int
    rollups: dict[str, int]
    seconds: float


_worker: dict[str, Any] = {}


def _worker_init(population: Population, dsn: str, seed: int, models_file: str | None) -> None:
    from orgwarden.data import load_catalog

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates the pool
    _worker.update(population=population, dsn=dsn, seed=seed, catalog=load_catalog(models_file))


def load_day(task: tuple[int, list[int], int]) -> DayLoaded:
    """Generate, price, fold and COPY one day (in a worker process)."""
    day, counts, first_serial = task
    began = time.perf_counter()
    rows, entries = make_day(_worker["population"], _worker["catalog"], day, counts, first_serial, _worker["seed"])
    rolled = fold(entries)
    # The order the live path leaves rows in: each adding upsert writes a new version of its row, at
    # the end of the table, so a row ends up where its last write put it. COPYing a day's rows in the
    # order of their last write gives the table that layout (1d rows spread over the day's pages, not
    # packed together), which is what a report's range scan has to read.
    last: dict[tuple[Any, ...], datetime] = {}
    for entry in entries:
        record = entry.record
        dims = tuple(entry.inference_geo if d == "inference_geo" else record[d] for d in DIMENSIONS)
        moment = record["created_at"]
        for width in WIDTHS:
            last[(width, floor(moment, width), *dims)] = moment
    del entries
    rolled.sort(key=lambda r: last[(r["bucket_width"], r["bucket_start"], *(r[d] for d in DIMENSIONS))])
    last.clear()
    rollup_rows = [
        tuple(r[c].replace(tzinfo=None) if c == "bucket_start" else r[c] for c in ROLLUP_COLUMNS) for r in rolled
    ]
    per_width = {w: sum(1 for r in rolled if r["bucket_width"] == w) for w in WIDTHS}
    del rolled

    async def copy() -> None:
        conn = await asyncpg.connect(_worker["dsn"])
        try:
            for at in range(0, len(rows), COPY_CHUNK):
                await conn.copy_records_to_table(
                    "usage_records", records=rows[at : at + COPY_CHUNK], columns=list(RECORD_COLUMNS)
                )
            for at in range(0, len(rollup_rows), COPY_CHUNK):
                await conn.copy_records_to_table(
                    "usage_rollups", records=rollup_rows[at : at + COPY_CHUNK], columns=list(ROLLUP_COLUMNS)
                )
        finally:
            await conn.close()

    asyncio.run(copy())
    return DayLoaded(day, len(rows), per_width, time.perf_counter() - began)


# -- the database ------------------------------------------------------------------------------------


def dsn_for(admin_dsn: str, database: str) -> str:
    head, _, _ = admin_dsn.rpartition("/")
    return f"{head}/{database}"


async def pg(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def orgwarden_env(database_url: str, data_dir: Path, secret: str) -> dict[str, str]:
    """The environment for orgwarden commands: none of the caller's ORGWARDEN_* settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORGWARDEN_")}
    env.update(
        ORGWARDEN_DATABASE_URL=database_url,
        ORGWARDEN_SECRET_KEY=secret,
        ORGWARDEN_DATA_DIR=str(data_dir),
        ORGWARDEN_UPSTREAM="simulator",
        ORGWARDEN_LOG_LEVEL="warning",
        NO_COLOR="1",
    )
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(proxy, None)  # loopback only
    return env


def orgwarden_binary() -> str:
    beside = Path(sys.executable).with_name("orgwarden")
    if not beside.exists():
        raise BenchError(f"no orgwarden next to {sys.executable}: run with the project's .venv/bin/python")
    return str(beside)


def run_command(argv: Sequence[str], env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


@dataclass
class Meta:
    """What a run needs to time a database again (``--reuse``): kept as the database's comment."""

    database: str
    secret: str
    admin_key: str
    organization_id: str
    records: int
    busiest_day: str
    load_seconds: float = 0.0
    rollup_rows: dict[str, int] = field(default_factory=dict)


async def create_population(env: dict[str, str], workspaces: int, keys: int, seed: int) -> Population:
    """Workspaces and keys made by the real services (as an admin would, from the CLI)."""
    from orgwarden.cli.runtime import cli_context
    from orgwarden.config import load_settings
    from orgwarden.crypto import SecretBox, resolve_secret
    from orgwarden.services.container import Services
    from orgwarden.services.workspaces import Residency
    from orgwarden.storage.engine import create_engine, session_factory
    from orgwarden.storage.uow import UnitOfWorkFactory

    settings = load_settings(
        **{k.removeprefix("ORGWARDEN_").lower(): v for k, v in env.items() if k.startswith("ORGWARDEN_")}
    )
    engine = create_engine(settings)
    rng = random.Random(seed)
    try:
        services = Services.build(
            UnitOfWorkFactory(session_factory(engine)), settings, SecretBox(resolve_secret(settings))
        )
        ctx = await cli_context(services)
        workspace_ids = [await services.api_keys.default_workspace_id(ctx.organization_id)]
        for index in range(1, workspaces):
            residency = Residency(default_inference_geo="us") if index in US_WORKSPACES else None
            created = await services.workspaces.create(ctx, name=f"bench-{index:02d}", residency=residency)
            workspace_ids.append(created.id)
        by_workspace: dict[str, list[str]] = {}
        for index, workspace_id in enumerate(workspace_ids):
            count = max(1, keys + rng.randint(-keys // 2, keys // 2))
            by_workspace[workspace_id] = [
                (
                    await services.api_keys.create(ctx, name=f"bench-{index:02d}-{k:02d}", workspace_id=workspace_id)
                ).key.id
                for k in range(count)
            ]
        specs = key_profiles(rng, workspace_ids, by_workspace)
        return Population(ctx.organization_id, tuple(specs), cumulative([s.weight for s in specs]))
    finally:
        await engine.dispose()


async def drop_secondary_indexes(dsn: str) -> list[str]:
    """Drop ``usage_records``' indexes other than its primary key; return their definitions."""
    rows = await pg(
        dsn,
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'usage_records' "
        "AND indexname <> 'usage_records_pkey' ORDER BY indexname",
    )
    for row in rows:
        await pg(dsn, f'DROP INDEX "{row["indexname"]}"')
    return [str(row["indexdef"]) for row in rows]


async def totals(dsn: str, start: datetime, end: datetime) -> dict[str, Any]:
    """The records' totals in [start, end): what every report over that range must add up to."""
    sums = ", ".join(f"coalesce(sum({c}), 0) AS {c}" for c in TOKEN_SUMS)
    rows = await pg(
        dsn,
        f"SELECT count(*) AS requests, {sums}, coalesce(sum(cost_picodollars), 0) AS cost "  # noqa: S608 - our names
        "FROM usage_records WHERE endpoint = 'messages' AND created_at >= $1 AND created_at < $2",
        start.replace(tzinfo=None),
        end.replace(tzinfo=None),
    )
    return {k: int(v) for k, v in dict(rows[0]).items()}


async def check_rollups(dsn: str) -> list[str]:
    """Per bucket width, the rollups' sums against the records' (whole table); the lines to print."""
    records = await totals(dsn, PERIOD_START - timedelta(days=3650), PERIOD_START + timedelta(days=3650))
    measures = ", ".join(f"sum({c}) AS {c}" for c in ("requests", *TOKEN_SUMS))
    cost = " + ".join(f"sum({c})" for c in MEASURES if c.startswith("cost_"))
    rows = await pg(
        dsn,
        f"SELECT bucket_width, count(*) AS rows, {measures}, {cost} AS cost "  # noqa: S608 - our column names
        "FROM usage_rollups GROUP BY bucket_width ORDER BY bucket_width",
    )
    lines = [f"records: {records['requests']:,} requests, cost {records['cost']:,} picodollars"]
    found = {str(r["bucket_width"]): r for r in rows}
    for width in WIDTHS:
        row = found.get(width)
        if row is None:
            raise BenchError(f"no {width} rollups")
        for name, expected in records.items():
            if int(row[name]) != expected:
                raise BenchError(f"{width} rollups: {name} {int(row[name]):,} != records' {expected:,}")
        lines.append(
            f"{width} rollups: {int(row['rows']):,} rows; requests, tokens, searches and cost equal the records'"
        )
    return lines


# -- timing ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    name: str
    path: str
    params: tuple[tuple[str, str], ...]
    start: datetime
    end: datetime


def reports(busiest_day: date) -> list[Report]:
    month = ("starting_at", "2026-10-01T00:00:00Z"), ("ending_at", "2026-11-01T00:00:00Z")
    day_start = datetime(busiest_day.year, busiest_day.month, busiest_day.day, tzinfo=UTC)
    day = (
        ("starting_at", f"{busiest_day.isoformat()}T00:00:00Z"),
        ("ending_at", f"{(busiest_day + timedelta(days=1)).isoformat()}T00:00:00Z"),
    )
    end = PERIOD_START + timedelta(days=DAYS)
    return [
        Report(
            "usage, 31 days, 1d, by workspace and model",
            "/v1/organizations/usage_report/messages",
            (*month, ("bucket_width", "1d"), ("group_by[]", "workspace_id"), ("group_by[]", "model"), ("limit", "31")),
            PERIOD_START,
            end,
        ),
        Report(
            f"usage, 24 hours ({busiest_day}), 1h, by API key",
            "/v1/organizations/usage_report/messages",
            (*day, ("bucket_width", "1h"), ("group_by[]", "api_key_id"), ("limit", "24")),
            day_start,
            day_start + timedelta(days=1),
        ),
        Report(
            "cost, 31 days, 1d, by workspace and description",
            "/v1/organizations/cost_report",
            (*month, ("group_by[]", "workspace_id"), ("group_by[]", "description"), ("limit", "31")),
            PERIOD_START,
            end,
        ),
    ]


def check_answer(report: Report, body: dict[str, Any], expected: dict[str, Any]) -> int:
    """The answer covers the whole range in one page and adds up to the records; its result count."""
    if body.get("has_more"):
        raise BenchError(f"{report.name}: more than one page")
    results = [r for bucket in body["data"] for r in bucket["results"]]
    if report.path.endswith("cost_report"):
        amount = sum((Decimal(r["amount"]) for r in results), Decimal(0))
        if amount != Decimal(expected["cost"]).scaleb(-10):
            raise BenchError(f"{report.name}: {amount} cents, the records say {Decimal(expected['cost']).scaleb(-10)}")
        return len(results)
    got = {
        "input_tokens": sum(r["uncached_input_tokens"] for r in results),
        "output_tokens": sum(r["output_tokens"] for r in results),
        "cache_creation_5m_tokens": sum(r["cache_creation"]["ephemeral_5m_input_tokens"] for r in results),
        "cache_creation_1h_tokens": sum(r["cache_creation"]["ephemeral_1h_input_tokens"] for r in results),
        "cache_read_tokens": sum(r["cache_read_input_tokens"] for r in results),
        "web_search_requests": sum(r["server_tool_use"]["web_search_requests"] for r in results),
    }
    for name, value in got.items():
        if value != expected[name]:
            raise BenchError(f"{report.name}: {name} {value:,}, the records say {expected[name]:,}")
    return len(results)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class Timing:
    report: str
    runs: int
    median_ms: float
    p95_ms: float
    min_ms: float
    max_ms: float
    results: int
    body_bytes: int
    samples_ms: list[float]
    server_cpu_ms: float = 0.0  # CPU time of orgwarden serve per request (user + system)
    postgres_cpu_ms: float = 0.0  # CPU time of every postgres process per request (others' too, if any)

    @property
    def verdict(self) -> str:
        if self.p95_ms < TARGET_MS and self.median_ms < TARGET_MS:
            return "met"
        if self.median_ms < TARGET_MS:
            return f"median met, p95 missed by {self.p95_ms - TARGET_MS:.0f} ms"
        return f"missed by {self.median_ms - TARGET_MS:.0f} ms (median)"


def cpu_seconds(server_group: int) -> tuple[float, float]:
    """User + system CPU time so far of the server's process group, and of every postgres process:
    less sensitive than wall time to what else the machine is doing."""
    ticks = {"server": 0, "postgres": 0}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            name = text[text.index("(") + 1 : text.rindex(")")]
            fields = text.rsplit(")", 1)[1].split()  # state ppid pgrp ... utime(11) stime(12)
            used = int(fields[11]) + int(fields[12])
            if int(fields[2]) == server_group:
                ticks["server"] += used
            elif name == "postgres":
                ticks["postgres"] += used
    per_second = os.sysconf("SC_CLK_TCK")
    return ticks["server"] / per_second, ticks["postgres"] / per_second


def time_reports(
    base_url: str, admin_key: str, meta: Meta, dsn: str, warmup: int, runs: int, server_group: int
) -> list[Timing]:
    headers = {"x-api-key": admin_key, "anthropic-version": "2023-06-01"}
    timings: list[Timing] = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=120, trust_env=False) as client:
        for report in reports(date.fromisoformat(meta.busiest_day)):
            expected = asyncio.run(totals(dsn, report.start, report.end))
            first = client.get(report.path, params=report.params)
            if first.status_code != 200:
                raise BenchError(f"{report.name}: {first.status_code} {first.text[:500]}")
            results = check_answer(report, first.json(), expected)
            for _ in range(max(0, warmup - 1)):
                client.get(report.path, params=report.params).raise_for_status()
            samples: list[float] = []
            size = 0
            cpu_before = cpu_seconds(server_group)
            for _ in range(runs):
                began = time.perf_counter()
                response = client.get(report.path, params=report.params)
                body = response.read()
                samples.append((time.perf_counter() - began) * 1000)
                response.raise_for_status()
                size = len(body)
            cpu_after = cpu_seconds(server_group)
            timings.append(
                Timing(
                    report.name,
                    runs,
                    statistics.median(samples),
                    percentile(samples, 95),
                    min(samples),
                    max(samples),
                    results,
                    size,
                    [round(s, 1) for s in samples],
                    (cpu_after[0] - cpu_before[0]) * 1000 / runs,
                    (cpu_after[1] - cpu_before[1]) * 1000 / runs,
                )
            )
            print(
                f"  {report.name}: median {timings[-1].median_ms:.1f} ms, p95 {timings[-1].p95_ms:.1f} ms", flush=True
            )
    return timings


async def explain(env: dict[str, str], meta: Meta, runs: int) -> list[str]:
    """Each report's service in process: the SQL it sends to ``usage_rollups`` with EXPLAIN (ANALYZE,
    BUFFERS), and the service call's own time (median of ``runs``: no HTTP, no JSON encoding)."""
    from sqlalchemy import event

    from orgwarden.api.routing import FastJSONResponse
    from orgwarden.cli.runtime import cli_context
    from orgwarden.config import load_settings
    from orgwarden.crypto import SecretBox, resolve_secret
    from orgwarden.services.container import Services
    from orgwarden.storage.engine import create_engine, session_factory
    from orgwarden.storage.uow import UnitOfWorkFactory

    settings = load_settings(
        **{k.removeprefix("ORGWARDEN_").lower(): v for k, v in env.items() if k.startswith("ORGWARDEN_")}
    )
    engine = create_engine(settings)
    captured: list[tuple[str, Any]] = []

    settings_sent: list[str] = []  # the SET LOCAL statements of the report's transaction, replayed for EXPLAIN

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if "usage_rollups" in statement:
            captured.append((statement, parameters))
        elif statement.startswith("SET LOCAL") and statement not in settings_sent:
            settings_sent.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    lines: list[str] = []
    try:
        services = Services.build(
            UnitOfWorkFactory(session_factory(engine)), settings, SecretBox(resolve_secret(settings))
        )
        ctx = await cli_context(services)
        for report in reports(date.fromisoformat(meta.busiest_day)):
            params: dict[str, Any] = {}
            groups: list[str] = []
            for name, value in report.params:
                if name == "group_by[]":
                    groups.append(value)
                else:
                    params[name] = value
            call = services.reports.cost if report.path.endswith("cost_report") else services.reports.usage
            samples, encoding = [], []
            for _ in range(runs):
                captured.clear()
                settings_sent.clear()
                began = time.perf_counter()
                answer = await call(ctx, group_by=groups, **params)
                samples.append((time.perf_counter() - began) * 1000)
                began = time.perf_counter()
                FastJSONResponse(answer)
                encoding.append((time.perf_counter() - began) * 1000)  # what the report routes answer with
            statement, parameters = captured[-1]
            conn = await asyncpg.connect(env["ORGWARDEN_DATABASE_URL"])
            try:
                async with conn.transaction():
                    for setting in settings_sent:
                        await conn.execute(setting)
                    plan = [str(r[0]) for r in await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + statement, *parameters)]
                    rows = await conn.fetch(statement, *parameters)
            finally:
                await conn.close()
            executed = next((line for line in plan if line.startswith("Execution Time")), "?")
            lines += [
                f"-- {report.name}",
                f"-- in process, medians of {runs}: service call {statistics.median(samples):.1f} ms (SQL, rows, "
                f"building the answer), JSON encoding (orjson) {statistics.median(encoding):.1f} ms; "
                f"SQL alone: {executed}; "
                f"rows from the rollups: {len(rows):,}",
                *(setting + ";" for setting in settings_sent),
                statement.strip() + ";",
                f"-- parameters: {list(parameters)}",
                *plan,
                "",
            ]
    finally:
        await engine.dispose()
    return lines


# -- the run -----------------------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return f"{os.cpu_count()} cores ({cpu}), {memory}, Linux {platform.release()}"


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[tuple[str, int]]:
    """``orgwarden serve`` on a free port, stopped (by its own process group id) on exit."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603
            [orgwarden_binary(), "serve", "--host", HOST, "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/health", timeout=1, trust_env=False).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"orgwarden serve did not start:\n{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        yield base_url, process.pid  # its own session: the pid is the process group's id
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def load(args: argparse.Namespace, env: dict[str, str], meta: Meta, dsn: str) -> list[str]:
    """Steps 2-5 of the module docstring; the lines to print."""
    from orgwarden.data import load_catalog

    began = time.perf_counter()
    population = asyncio.run(create_population(env, args.workspaces, args.keys, args.seed))
    print(f"  {len(population.keys)} API keys in {args.workspaces} workspaces", flush=True)
    plan = minute_plan(args.records, args.seed)
    per_day = [plan[d * 1440 : (d + 1) * 1440] for d in range(DAYS)]
    busiest = max(range(DAYS), key=lambda d: sum(per_day[d]))
    meta.busiest_day = (PERIOD_START + timedelta(days=busiest)).date().isoformat()
    load_catalog(env.get("ORGWARDEN_MODELS_FILE"))  # fails here, not in a worker, if the file is wrong
    indexes = asyncio.run(drop_secondary_indexes(dsn))
    tasks = []
    for day in sorted(range(DAYS), key=lambda d: -sum(per_day[d])):  # the largest days first: even finish
        tasks.append((day, per_day[day], sum(sum(c) for c in per_day[:day])))
    rollups = dict.fromkeys(WIDTHS, 0)
    copied = 0
    context = multiprocessing.get_context("spawn")
    init = (population, dsn, args.seed, env.get("ORGWARDEN_MODELS_FILE"))
    with context.Pool(args.jobs, initializer=_worker_init, initargs=init) as pool:
        for done in pool.imap_unordered(load_day, tasks):
            copied += done.records
            for width, count in done.rollups.items():
                rollups[width] += count
            print(
                f"  day {done.day + 1:2d}: {done.records:,} records, {sum(done.rollups.values()):,} rollup rows "
                f"({done.seconds:.1f} s); {copied:,} of {args.records:,}",
                flush=True,
            )
    generated = time.perf_counter()
    for definition in indexes:
        asyncio.run(pg(dsn, definition))
    indexed = time.perf_counter()
    asyncio.run(pg(dsn, "VACUUM ANALYZE usage_records"))
    asyncio.run(pg(dsn, "VACUUM ANALYZE usage_rollups"))
    vacuumed = time.perf_counter()
    meta.load_seconds = vacuumed - began
    meta.rollup_rows = rollups
    lines = [
        f"load: {vacuumed - began:.0f} s in all: keys and records generated, priced, folded and COPYed in "
        f"{generated - began:.0f} s ({args.jobs} processes), usage_records' {len(indexes)} secondary indexes rebuilt "
        f"in {indexed - generated:.0f} s, VACUUM ANALYZE {vacuumed - indexed:.0f} s",
        f"rows: usage_records {copied:,}; usage_rollups "
        + ", ".join(f"{w} {n:,}" for w, n in rollups.items())
        + f" ({sum(rollups.values()):,} in all)",
    ]
    return lines + asyncio.run(check_rollups(dsn))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000, help="usage records to load (default: a smoke run)")
    parser.add_argument("--workspaces", type=int, default=20, help="workspaces, the default one included")
    parser.add_argument("--keys", type=int, default=10, help="API keys per workspace, on average")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="loading processes")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per report")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per report first")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of each report's SQL")
    parser.add_argument("--keep", action="store_true", help="keep the database (its name is printed)")
    parser.add_argument("--reuse", metavar="DATABASE", help="time a database kept by --keep again (no load)")
    parser.add_argument("--admin-dsn", default=DEFAULT_ADMIN_DSN, help="PostgreSQL server and administration db")
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.records < 1 or args.runs < 1 or args.jobs < 1 or args.workspaces < 1 or args.keys < 1:
        parser.error("--records, --runs, --jobs, --workspaces and --keys must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    print(f"machine: {machine()}; load average at start {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="orgwarden-bench-reports-") as tmp:
        try:
            return run(args, Path(tmp))
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130


def run(args: argparse.Namespace, tmp: Path) -> int:
    started = datetime.now(UTC)
    created = args.reuse is None
    name = args.reuse or f"orgwarden_bench_{uuid.uuid4().hex[:8]}"
    dsn = dsn_for(args.admin_dsn, name)
    lines: list[str] = []
    try:
        if created:
            asyncio.run(pg(args.admin_dsn, f'CREATE DATABASE "{name}"'))
            meta = Meta(name, uuid.uuid4().hex * 2, "", "", args.records, "")
            env = orgwarden_env(dsn, tmp / "data", meta.secret)
            print(f"database {name}: orgwarden init", flush=True)
            init = json.loads(run_command([orgwarden_binary(), "init", "--json"], env))
            meta.admin_key, meta.organization_id = init["admin_api_key"], init["organization"]["id"]
            print(f"loading {args.records:,} records (load average {load_average()})", flush=True)
            lines += load(args, env, meta, dsn)
            comment = json.dumps(asdict(meta)).replace("'", "''")
            asyncio.run(pg(dsn, f"COMMENT ON DATABASE \"{name}\" IS '{comment}'"))
        else:
            found = asyncio.run(
                pg(dsn, "SELECT shobj_description(oid, 'pg_database') AS c FROM pg_database WHERE datname = $1", name)
            )
            if not found or not found[0]["c"]:
                raise BenchError(f"--reuse {name}: not a database kept by this benchmark")
            meta = Meta(**json.loads(found[0]["c"]))
            env = orgwarden_env(dsn, tmp / "data", meta.secret)
            run_command([orgwarden_binary(), "db", "upgrade"], env)
            lines.append(
                f"reused {name}: {meta.records:,} records loaded earlier in {meta.load_seconds:.0f} s; rollups "
                + ", ".join(f"{w} {n:,}" for w, n in meta.rollup_rows.items())
            )
            lines += asyncio.run(check_rollups(dsn))
        for line in lines:
            print(line)
        before = load_average()
        print(f"timing through the Admin API (load average {before})", flush=True)
        with serving(env, tmp / "serve.log") as (base_url, server_group):
            timings = time_reports(base_url, meta.admin_key, meta, dsn, args.warmup, args.runs, server_group)
        after = load_average()
        plans = asyncio.run(explain(env, meta, args.runs)) if args.explain else []
        print()
        print(f"command: {' '.join(['bench/reports.py', *(sys.argv[1:])])}")
        print(f"date: {started:%Y-%m-%d %H:%M} UTC; machine: {machine()}")
        print(f"load average: before timing {before}, after {after}")
        for line in lines:
            print(line)
        print()
        print("| report | runs | median ms | p95 ms | min ms | max ms | server CPU ms | postgres CPU ms | results | "
              "body bytes | target 200 ms |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for t in timings:
            print(
                f"| {t.report} | {t.runs} | {t.median_ms:.1f} | {t.p95_ms:.1f} | {t.min_ms:.1f} | {t.max_ms:.1f} | "
                f"{t.server_cpu_ms:.0f} | {t.postgres_cpu_ms:.0f} | {t.results:,} | {t.body_bytes:,} | {t.verdict} |"
            )
        if plans:
            print()
            print("\n".join(plans))
        if args.json_out:
            payload = {
                "command": sys.argv,
                "date": started.isoformat(),
                "machine": machine(),
                "database": name,
                "load_average": {"before_timing": before, "after": after},
                "load": lines,
                "meta": {**asdict(meta), "admin_key": None, "secret": None},
                "timings": [asdict(t) for t in timings],
                "plans": plans,
            }
            args.json_out.write_text(json.dumps(payload, indent=2) + "\n")
        return 0 if all(t.verdict == "met" for t in timings) else 3
    finally:
        if created and not args.keep:
            asyncio.run(pg(args.admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        elif created:
            print(f"database kept: {name} (time it again with --reuse {name})")


if __name__ == "__main__":
    sys.exit(main())
