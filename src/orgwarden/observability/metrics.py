"""Prometheus metrics, served at ``GET /metrics`` (prometheus-client's text format).

Two kinds of metric, so that requests pay as little as possible:

* **Counted on the request path** (``request``, ``upstream``): tallies of plain integers and floats
  per label set (a count, a sum and a count per bucket), which a request updates with a dict lookup
  and three list increments, without a lock (the event loop's thread is the only writer); they are
  turned into a counter and histograms when ``/metrics`` is scraped (``_Tallies``). prometheus-client's
  own ``inc()`` and ``observe()`` take a lock per value and cost about 4 us a request. Label values
  are bounded by construction: a data-plane endpoint name, an Admin API route *template* (never the
  raw path), a known method, a status code.
* **Read from component state** (``watch``): a callable per value (a queue's length, a counter an
  object keeps, a health flag), read when ``/metrics`` is scraped, so the request path pays nothing.

Several workers (``workers > 1``) use prometheus-client's multiprocess mode (``multiproc.py``): a
scrape of the one port adds up every worker's metrics. There, watched values are copied into the
shared files every ``SYNC_INTERVAL`` seconds by each worker (the scraping worker cannot call another
worker's callables); gauges are summed over live workers (``livesum``), or the lowest live value
(``livemin``, for health flags: 0 when any worker finds a dependency down). Each worker also writes
its request tallies to ``requests-<pid>.json`` in the same directory at that interval and when it
stops, and the scraping worker adds them to its own: another worker's requests show up to
``SYNC_INTERVAL`` late.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest, values
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

log = logging.getLogger("orgwarden.metrics")

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
SYNC_INTERVAL: Final = 1.0
# Seconds: from a fast refusal (a few ms) to a long generation (up to the 600 s upstream time-out).
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CHILDREN_SIZE: Final = 4096
_LABELS: Final = ("plane", "route", "method", "status")
_TALLY_PREFIX: Final = "requests-"

Plane = Literal["data", "admin", "telemetry"]
Kind = Literal["gauge", "counter"]
GaugeMode = Literal["livesum", "livemin", "livemax", "mostrecent"]


@dataclass(slots=True)
class _Watch:
    kind: Kind
    child: Counter | Gauge
    read: Callable[[], float]
    last: float = 0.0  # counters: the value already added


# A tally: [count, sum, count in bucket 0, ..., count above the last bound].
Tally = list[float]


def _tally() -> Tally:
    return [0, 0.0] + [0] * (len(LATENCY_BUCKETS) + 1)


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
        self._requests: dict[tuple[str, str, str, int], Tally] = {}
        self._upstreams: dict[str, Tally] = {}
        self._tallies = _Tallies(self)
        if self._registry is not None:
            self._registry.register(self._tallies)
        self._watched: dict[str, Counter | Gauge] = {}
        self._watches: list[_Watch] = []
        self._task: asyncio.Task[None] | None = None

    # -- on the request path -------------------------------------------------------------------

    def request(self, plane: Plane, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request."""
        tally = self._requests.get((plane, route, method, status))
        if tally is None:
            tally = self._request_tally(plane, route, method, status)
        tally[0] += 1
        tally[1] += seconds
        tally[2 + bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def upstream(self, route: str, seconds: float) -> None:
        """The upstream's response head arrived ``seconds`` after the request was sent."""
        tally = self._upstreams.get(route)
        if tally is None:
            tally = _tally()
            if len(self._upstreams) < _CHILDREN_SIZE:
                self._upstreams[route] = tally
        tally[0] += 1
        tally[1] += seconds
        tally[2 + bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def _request_tally(self, plane: str, route: str, method: str, status: int) -> Tally:
        """The tally of a new label set; an unknown method shares ``OTHER``'s (labels stay bounded)."""
        if method not in METHODS:
            tally = self._requests.get((plane, route, "OTHER", status))
            if tally is None:
                tally = self._requests[(plane, route, "OTHER", status)] = _tally()
            return tally
        tally = _tally()
        if len(self._requests) < _CHILDREN_SIZE:
            self._requests[(plane, route, method, status)] = tally
        return tally

    def tallies(self) -> dict[str, Any]:
        """This process's request tallies, as written to its file in multiprocess mode."""
        return {
            "requests": [[*key, tally] for key, tally in self._requests.items()],
            "upstream": [[route, tally] for route, tally in self._upstreams.items()],
        }

    def _write_tallies(self) -> None:
        if self.multiprocess_dir is None:
            return
        path = self.multiprocess_dir / f"{_TALLY_PREFIX}{os.getpid()}.json"
        temporary = path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(self.tallies()))
            temporary.replace(path)
        except OSError as exc:  # a scrape then shows this worker's last written tallies
            log.warning("metrics: cannot write %s: %s", path, exc)

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
        """Copy every watched value into its metric (and, with several workers, write this worker's
        request tallies for the others to read)."""
        self._write_tallies()
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
        registry.register(self._tallies)
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


class _Tallies(Collector):
    """The request tallies as a Prometheus counter and two histograms: this process's, plus (in
    multiprocess mode) every other worker's last written file, live or stopped, since counters
    only grow."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        requests: dict[tuple[str, ...], Tally] = {}
        upstream: dict[tuple[str, ...], Tally] = {}
        for snapshot in self._snapshots():
            for *labels, tally in snapshot["requests"]:
                _add(requests, tuple(str(label) for label in labels), tally)
            for route, tally in snapshot["upstream"]:
                _add(upstream, (str(route),), tally)
        count = CounterMetricFamily(
            "orgwarden_http_requests",
            "Requests answered, by plane (data, admin, telemetry), route, method and status",
            labels=_LABELS,
        )
        latency = HistogramMetricFamily(
            "orgwarden_http_request_duration_seconds",
            "Time from a request's arrival to its answer's end, by plane, route, method and status",
            labels=_LABELS,
        )
        for labels, tally in requests.items():
            count.add_metric(labels, tally[0])
            latency.add_metric(labels, _buckets(tally), tally[1])
        upstream_latency = HistogramMetricFamily(
            "orgwarden_upstream_response_seconds",
            "Time from sending a data-plane request upstream to the upstream's response head, by route",
            labels=("route",),
        )
        for labels, tally in upstream.items():
            upstream_latency.add_metric(labels, _buckets(tally), tally[1])
        yield count
        yield latency
        yield upstream_latency

    def _snapshots(self) -> Iterator[dict[str, Any]]:
        metrics = self._metrics
        yield metrics.tallies()
        if metrics.multiprocess_dir is None:
            return
        own = f"{_TALLY_PREFIX}{os.getpid()}.json"
        for path in metrics.multiprocess_dir.glob(f"{_TALLY_PREFIX}*.json"):
            if path.name == own:
                continue
            try:
                yield json.loads(path.read_text())
            except (OSError, ValueError) as exc:  # being replaced, or unreadable: left out of this scrape
                log.warning("metrics: cannot read %s: %s", path, exc)


def _add(into: dict[tuple[str, ...], Tally], labels: tuple[str, ...], tally: Tally) -> None:
    mine = into.get(labels)
    if mine is None:
        into[labels] = list(tally)
    else:
        for i, value in enumerate(tally):
            mine[i] += value


def _buckets(tally: Tally) -> list[tuple[str, float]]:
    """Cumulative bucket counts, ``+Inf`` last, as the exposition format wants them."""
    out: list[tuple[str, float]] = []
    running = 0.0
    for bound, count in zip(LATENCY_BUCKETS, tally[2:], strict=False):
        running += count
        out.append((str(float(bound)), running))
    out.append(("+Inf", tally[0]))
    return out
