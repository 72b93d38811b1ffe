"""Which component state ``/metrics`` shows, and the ``/metrics`` route: wired by the app factory.

Each watched value is one ``Metrics.watch`` line, read at scrape time (never on the request path).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.responses import Response

from orgwarden.api.health import Health
from orgwarden.config import Settings
from orgwarden.gateway.limits import Enforcer
from orgwarden.gateway.recorder import Recorder
from orgwarden.observability import logs, multiproc
from orgwarden.observability.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger("orgwarden.metrics")


def build_metrics(settings: Settings, *, recorder: Recorder, limits: Enforcer, health: Health) -> Metrics | None:
    """The process's metrics with the components' state watched, or ``None`` (``metrics_enabled`` off)."""
    if not settings.metrics_enabled:
        return None
    shared = multiproc.active() if settings.workers > 1 else None
    if settings.workers > 1 and shared is None:  # workers not started by `orgwarden serve`
        log.warning("metrics: %s is not set, so /metrics shows only the worker that answers it", multiproc.ENV)
    metrics = Metrics(shared)
    metrics.watch(
        "orgwarden_recorder_queue_depth",
        "Usage records and audit events queued in memory, not yet taken for writing",
        lambda: recorder.queued,
    )
    metrics.watch(
        "orgwarden_recorder_journal_depth",
        "Records in the local journal not yet committed to the database",
        lambda: recorder.journal_pending,
    )
    metrics.watch(
        "orgwarden_recorder_dropped_rows",
        "Rows the database refused for good (not for being unreachable): dropped, logged",
        lambda: recorder.dropped,
        kind="counter",
    )
    metrics.watch(
        "orgwarden_database_up",
        "1 when the database answered its last check (SELECT 1), else 0",
        lambda: int(health.database_up),
        mode="livemin",
    )
    if settings.redis_url is not None:
        metrics.watch(
            "orgwarden_redis_up",
            "1 when Redis answered its last check (PING), else 0",
            lambda: int(bool(health.redis_up)),
            mode="livemin",
        )
    metrics.watch(
        "orgwarden_limits_unchecked",
        "Requests passed without a limit check because the limits store was unreachable (fail_open)",
        lambda: limits.unchecked,
        kind="counter",
    )
    metrics.watch(
        "orgwarden_log_records_dropped",
        "Log lines dropped because standard error could not keep up (the writing queue was full)",
        logs.dropped,
        kind="counter",
    )
    for kind in ("rate", "spend"):
        metrics.watch(
            "orgwarden_limit_refusals",
            "Requests refused by a limit, by kind (rate: 429, spend: 400)",
            lambda kind=kind: limits.refused[kind],  # type: ignore[misc]
            kind="counter",
            labels={"kind": kind},
        )
    return metrics


def install_endpoint(app: FastAPI, metrics: Metrics, health: Health) -> None:
    """``GET /metrics``: the Prometheus text format, no key (nothing in it is secret). A scrape
    refreshes the dependency checks (reused for a second, as for ``/health``)."""

    @app.get("/metrics", include_in_schema=False)
    async def scrape() -> Response:
        await health.check()
        return Response(metrics.render(), media_type=CONTENT_TYPE)
