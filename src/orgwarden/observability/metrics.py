"""Prometheus metrics, served at ``GET /metrics`` (prometheus-client's text format).

Two kinds of metric, so that requests pay as little as possible:

* **Counted on the request path** (``request``, ``upstream``): counters and histograms whose label
  children are looked up once per label set and kept in a small bounded dict, so a request pays a
  dict lookup, one ``inc()`` and one ``observe()``. Label values are bounded by construction: a
  data-plane endpoint name, an Admin API route *template* (never the raw path), a known method, a
  status code.
* **Read from component state** (``watch``): a callable per value (a queue's length, a counter an
  object keeps, a health flag), read when ``/metrics`` is scraped, so the request path pays nothing.

Several workers (``workers > 1``) use prometheus-client's multiprocess mode (``multiproc.py``): a
scrape of the one port adds up every worker's counters and histograms. There, watched values are
also copied into the shared files every ``SYNC_INTERVAL`` seconds by each worker (the scraping
worker cannot call another worker's callables); gauges are summed over live workers (``livesum``),
or the lowest live value (``livemin``, for health flags: 0 when any worker finds a dependency down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

log = logging.getLogger("orgwarden.metrics")

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
SYNC_INTERVAL: Final = 1.0
# Seconds: from a fast refusal (a few ms) to a long generation (up to the 600 s upstream time-out).
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CHILDREN_SIZE: Final = 4096

Plane = Literal["data", "admin", "telemetry"]
Kind = Literal["gauge", "counter"]
GaugeMode = Literal["livesum", "livemin", "livemax", "mostrecent"]


@dataclass(slots=True)
class _Watch:
    kind: Kind
    child: Counter | Gauge
    read: Callable[[], float]
    last: float = 0.0  # counters: the value already added


class Metrics:
    """The process's metrics. ``multiprocess_dir`` (from ``multiproc.active()``) selects
    multiprocess mode; without it the metrics live in a registry of this object's own."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        if multiprocess_dir is not None and values.ValueClass is values.MutexValue:
            log.error(
                "metrics: PROMETHEUS_MULTIPROC_DIR was set after prometheus-client was imported;"
                " /metrics shows only the worker that answers it"
            )
            multiprocess_dir = None
        self.multiprocess_dir = multiprocess_dir
        self._registry: CollectorRegistry | None = None if multiprocess_dir else CollectorRegistry()
        labels = ("plane", "route", "method", "status")
        self._requests = Counter(
            "orgwarden_http_requests",
            "Requests answered, by plane (data, admin, telemetry), route, method and status",
            labels,
            registry=self._registry,
        )
        self._latency = Histogram(
            "orgwarden_http_request_duration_seconds",
            "Time from a request's arrival to its answer's end, by plane, route, method and status",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self._registry,
        )
        self._upstream = Histogram(
            "orgwarden_upstream_response_seconds",
            "Time from sending a data-plane request upstream to the upstream's response head, by route",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=self._registry,
        )
        self._children: dict[tuple[str, str, str, int], tuple[Counter, Histogram]] = {}
        self._upstream_children: dict[str, Histogram] = {}
        self._watched: dict[str, Counter | Gauge] = {}
        self._watches: list[_Watch] = []
        self._task: asyncio.Task[None] | None = None

    # -- on the request path -------------------------------------------------------------------

    def request(self, plane: Plane, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request."""
        key = (plane, route, method, status)
        pair = self._children.get(key)
        if pair is None:
            pair = self._child(key)
        pair[0].inc()
        pair[1].observe(seconds)

    def upstream(self, route: str, seconds: float) -> None:
        """The upstream's response head arrived ``seconds`` after the request was sent."""
        child = self._upstream_children.get(route)
        if child is None:
            child = self._upstream.labels(route)
            if len(self._upstream_children) < _CHILDREN_SIZE:
                self._upstream_children[route] = child
        child.observe(seconds)

    def _child(self, key: tuple[str, str, str, int]) -> tuple[Counter, Histogram]:
        plane, route, method, status = key
        method = method if method in METHODS else "OTHER"
        pair = (
            self._requests.labels(plane, route, method, str(status)),
            self._latency.labels(plane, route, method, str(status)),
        )
        if len(self._children) < _CHILDREN_SIZE:
            self._children[key] = pair
        return pair

    # -- read from component state ---------------------------------------------------------------

    def watch(
        self,
        name: str,
        documentation: str,
        read: Callable[[], float],
        *,
        kind: Kind = "gauge",
        labels: dict[str, str] | None = None,
        mode: GaugeMode = "livesum",
    ) -> None:
        """Expose ``read()`` as ``name`` (a gauge, or a counter of a value that only grows), read at
        scrape time. Several watches may share a name with different ``labels`` (the same label names)."""
        labels = labels or {}
        metric = self._watched.get(name)
        if metric is None:
            names = sorted(labels)
            if kind == "counter":
                metric = Counter(name, documentation, names, registry=self._registry)
            else:
                metric = Gauge(name, documentation, names, registry=self._registry, multiprocess_mode=mode)
            self._watched[name] = metric
        child = metric.labels(**labels) if labels else metric
        self._watches.append(_Watch(kind, child, read))

    def sync(self) -> None:
        """Copy every watched value into its metric."""
        for watch in self._watches:
            try:
                value = float(watch.read())
            except Exception as exc:  # a component's state that cannot be read leaves its last value
                log.warning("metrics: cannot read a watched value: %s", exc)
                continue
            if isinstance(watch.child, Gauge):
                watch.child.set(value)
            elif value > watch.last:
                watch.child.inc(value - watch.last)
                watch.last = value

    # -- scraping and lifetime --------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition of every metric (every worker's, in multiprocess mode)."""
        self.sync()
        if self._registry is not None:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    async def start(self) -> None:
        if self.multiprocess_dir is not None:
            self._task = asyncio.create_task(self._sync_forever(), name="orgwarden-metrics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.multiprocess_dir is not None:
            self.sync()  # the last growth of the counters read from state
            # Its live gauges leave the sums (the library's function has no annotations).
            mark_process_dead(os.getpid(), str(self.multiprocess_dir))  # type: ignore[no-untyped-call]

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            self.sync()
