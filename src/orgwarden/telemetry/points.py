"""From a decoded OTLP metrics export to the ``Sample``s orgwarden keeps (``domain.claude_code``).

Only the kept ``claude_code.*`` metrics are read; every other metric is skipped without a word, as
a collector that does not export it would. A kept metric that cannot be counted (not a sum, no
temporality, a value that is not a finite number) is *rejected*: it is reported back to the
exporter in the response's ``partial_success``, which OTLP exporters log and do not retry.
Points flagged "no recorded value" are skipped.

A series is named by the SHA-256 of what identifies it in OTLP: the key that sent it, the resource's
attributes, the instrumentation scope, the metric name and the point's attributes.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK

from orgwarden.domain.claude_code import CUMULATIVE, DELTA, KEPT_METRICS, Sample, stored_value

MAX_PROBLEMS = 5  # problems named in partial_success.error_message
LATEST_NANO = 2**62  # timestamps from here on (year 2116) are refused: they would not fit the database


@dataclass(slots=True)
class Extracted:
    samples: list[Sample] = field(default_factory=list)
    rejected: int = 0
    problems: list[str] = field(default_factory=list)

    def reject(self, count: int, problem: str) -> None:
        self.rejected += count
        if count and problem not in self.problems and len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)


def extract(request: ExportMetricsServiceRequest, sender: str, received_unix_nano: int) -> Extracted:
    """The kept points of ``request``; ``sender`` (the API key id) is part of each series' identity.
    A point without an end time is taken as ending when it was received."""
    out = Extracted()
    for resource_metrics in request.resource_metrics:
        resource = resource_metrics.resource.attributes
        resource_text = _texts(resource)
        resource_identity = _identity(resource)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope.name.encode()
            for metric in scope_metrics.metrics:
                if metric.name not in KEPT_METRICS:
                    continue
                kind = metric.WhichOneof("data")
                if kind != "sum":
                    points = len(getattr(metric, kind).data_points) if kind else 0
                    out.reject(points, f"{metric.name}: a {kind or 'metric without data'}, not a sum (counter)")
                    continue
                temporality = int(metric.sum.aggregation_temporality)
                if temporality not in (DELTA, CUMULATIVE):
                    out.reject(len(metric.sum.data_points), f"{metric.name}: aggregation temporality is unspecified")
                    continue
                for point in metric.sum.data_points:
                    if point.flags & DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK:
                        continue
                    which = point.WhichOneof("value")
                    value: float | int = point.as_int if which == "as_int" else point.as_double
                    if which is None or (isinstance(value, float) and not math.isfinite(value)):
                        out.reject(1, f"{metric.name}: a point without a finite value")
                        continue
                    try:
                        stored = stored_value(metric.name, value)
                    except ValueError:
                        stored = None
                    if stored is None or max(point.time_unix_nano, point.start_time_unix_nano) >= LATEST_NANO:
                        out.reject(1, f"{metric.name}: a value or timestamp out of range")
                        continue
                    series = hashlib.sha256()
                    for part in (sender.encode(), resource_identity, scope, metric.name.encode()):
                        series.update(len(part).to_bytes(4, "big") + part)
                    series.update(_identity(point.attributes))
                    out.samples.append(
                        Sample(
                            metric=metric.name,
                            series=series.hexdigest(),
                            temporality=temporality,
                            start_unix_nano=point.start_time_unix_nano,
                            time_unix_nano=point.time_unix_nano or received_unix_nano,
                            value=stored,
                            attributes={**resource_text, **_texts(point.attributes)},
                        )
                    )
    return out


def log_records(request: ExportLogsServiceRequest) -> int:
    """How many log records (Claude Code's events) an export holds."""
    return sum(len(scope.log_records) for resource in request.resource_logs for scope in resource.scope_logs)


def _text(value: AnyValue) -> str | None:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return "true" if value.bool_value else "false"
    if which == "int_value":
        return str(value.int_value)
    if which == "double_value":
        return repr(value.double_value)
    return None  # arrays, maps and bytes: no attribute orgwarden reads has one


def _texts(attributes: Iterable[KeyValue]) -> dict[str, str]:
    out: dict[str, str] = {}
    for attribute in attributes:
        text = _text(attribute.value)
        if text is not None:
            out[attribute.key] = text
    return out


def _identity(attributes: Sequence[KeyValue]) -> bytes:
    """The attributes as bytes that do not depend on their order on the wire."""
    parts = sorted((a.key.encode(), a.value.SerializeToString(deterministic=True)) for a in attributes)
    return b"".join(len(k).to_bytes(4, "big") + k + len(v).to_bytes(4, "big") + v for k, v in parts)
